//! The Marian encoder-decoder (transformers' `MarianMTModel`) on candle.
//!
//! Written for batched inference rather than training: the encoder applies a padding mask, the
//! decoder runs one step at a time with a self-attention KV cache, and each batch's
//! cross-attention keys and values are computed once and then only re-indexed (beam reordering,
//! finished rows leaving the batch). Nothing is cached between calls, so a sentence's output does
//! not depend on what was translated before it or beside it.

use std::collections::HashMap;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::config::{Activation, MarianConfig};
use super::TranslateError;

type Result<T> = std::result::Result<T, TranslateError>;

/// Tensors by name, with the `model.` prefix handled and missing names reported clearly.
struct Weights {
    tensors: HashMap<String, Tensor>,
    prefix: &'static str,
    dtype: DType,
    device: Device,
}

impl Weights {
    fn new(tensors: HashMap<String, Tensor>, dtype: DType, device: &Device) -> Self {
        // MarianMTModel checkpoints name the seq2seq body `model.*`; a bare MarianModel does not.
        let prefix = if tensors.keys().any(|k| k.starts_with("model.")) {
            "model."
        } else {
            ""
        };
        Self {
            tensors,
            prefix,
            dtype,
            device: device.clone(),
        }
    }

    fn full_name(&self, name: &str) -> String {
        if name == "lm_head.weight" || name == "final_logits_bias" {
            name.to_string()
        } else {
            format!("{}{name}", self.prefix)
        }
    }

    fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        let full = self.full_name(name);
        let Some(t) = self.tensors.get(&full) else {
            return Ok(None);
        };
        if t.dims() != shape {
            return Err(TranslateError::Weights(format!(
                "tensor {full} has shape {:?}, config.json implies {shape:?}",
                t.dims()
            )));
        }
        Ok(Some(t.to_device(&self.device)?.to_dtype(self.dtype)?))
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_opt(name, shape)?.ok_or_else(|| {
            TranslateError::Weights(format!(
                "tensor {} is missing from the weights",
                self.full_name(name)
            ))
        })
    }

    fn linear(&self, name: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
        let w = self.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let b = self.get(&format!("{name}.bias"), &[out_dim])?;
        Ok(Linear::new(w, Some(b)))
    }

    fn layer_norm(&self, name: &str, dim: usize) -> Result<LayerNorm> {
        let w = self.get(&format!("{name}.weight"), &[dim])?;
        let b = self.get(&format!("{name}.bias"), &[dim])?;
        // torch.nn.LayerNorm's default eps; Marian configs have no field for it.
        Ok(LayerNorm::new(w, b, 1e-5))
    }
}

/// Marian's own sinusoidal table: the sine half first, then the cosine half (not interleaved).
pub fn sinusoidal_positions(n_pos: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let sentinel = dim.div_ceil(2);
    let mut table = vec![0f32; n_pos * dim];
    for pos in 0..n_pos {
        let row = &mut table[pos * dim..(pos + 1) * dim];
        for (k, slot) in row.iter_mut().take(sentinel).enumerate() {
            let angle = pos as f64 / 10000f64.powf((2 * k) as f64 / dim as f64);
            *slot = angle.sin() as f32;
        }
        for k in 0..dim - sentinel {
            let angle = pos as f64 / 10000f64.powf((2 * k) as f64 / dim as f64);
            row[sentinel + k] = angle.cos() as f32;
        }
    }
    Ok(Tensor::from_vec(table, (n_pos, dim), device)?)
}

fn activate(act: Activation, xs: &Tensor) -> Result<Tensor> {
    Ok(match act {
        Activation::Swish => candle_nn::ops::silu(xs)?,
        Activation::Relu => xs.relu()?,
        Activation::Gelu => xs.gelu_erf()?,
        Activation::GeluTanh => xs.gelu()?,
    })
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    fn load(w: &Weights, name: &str, d_model: usize, heads: usize) -> Result<Self> {
        let head_dim = d_model / heads;
        Ok(Self {
            q: w.linear(&format!("{name}.q_proj"), d_model, d_model)?,
            k: w.linear(&format!("{name}.k_proj"), d_model, d_model)?,
            v: w.linear(&format!("{name}.v_proj"), d_model, d_model)?,
            out: w.linear(&format!("{name}.out_proj"), d_model, d_model)?,
            heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    /// (n, t, d) -> (n, heads, t, head_dim), contiguous.
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (n, t, _) = xs.dims3()?;
        Ok(xs
            .reshape((n, t, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    fn project_kv(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        let k = self.split_heads(&self.k.forward(xs)?)?;
        let v = self.split_heads(&self.v.forward(xs)?)?;
        Ok((k, v))
    }

    /// Scaled dot-product attention of `xs`'s queries over `k`/`v`, with an additive bias
    /// broadcastable to (n, heads, t_q, t_k).
    fn attend(&self, xs: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (n, t, d) = xs.dims3()?;
        let q = self.split_heads(&self.q.forward(xs)?)?;
        let mut scores = (q.matmul(&k.t()?)? * self.scale)?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs.matmul(v)?.transpose(1, 2)?.reshape((n, t, d))?;
        Ok(self.out.forward(&ctx)?)
    }
}

struct EncoderLayer {
    self_attn: Attention,
    self_attn_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_norm: LayerNorm,
}

struct DecoderLayer {
    self_attn: Attention,
    self_attn_norm: LayerNorm,
    cross_attn: Attention,
    cross_attn_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_norm: LayerNorm,
}

/// The encoder's output for one batch, with the additive padding bias the decoder's
/// cross-attention needs.
pub struct Encoded {
    /// (n, s, d_model)
    pub hidden: Tensor,
    /// (n, 1, 1, s): 0 for real tokens, -inf for padding.
    pub pad_bias: Tensor,
}

/// Per-row decoder state for incremental decoding. Rows can be reordered or dropped with
/// [`DecoderState::select`] (beam reordering, finished sequences leaving the batch).
pub struct DecoderState {
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    cross_kv: Vec<(Tensor, Tensor)>,
    cross_bias: Tensor,
    /// Tokens decoded so far (the next token's position).
    step: usize,
}

impl DecoderState {
    pub fn rows(&self) -> Result<usize> {
        Ok(self.cross_bias.dim(0)?)
    }

    /// Keep rows `rows` (in that order, repeats allowed) of every cached tensor.
    pub fn select(&mut self, rows: &[u32]) -> Result<()> {
        let device = self.cross_bias.device().clone();
        let idx = Tensor::from_slice(rows, rows.len(), &device)?;
        let pick = |t: &Tensor| -> Result<Tensor> { Ok(t.index_select(&idx, 0)?) };
        for kv in self.self_kv.iter_mut().flatten() {
            *kv = (pick(&kv.0)?, pick(&kv.1)?);
        }
        for kv in self.cross_kv.iter_mut() {
            *kv = (pick(&kv.0)?, pick(&kv.1)?);
        }
        self.cross_bias = pick(&self.cross_bias)?;
        Ok(())
    }
}

pub struct MarianModel {
    cfg: MarianConfig,
    encoder_embed: Tensor,
    decoder_embed: Tensor,
    lm_head: Tensor,
    final_logits_bias: Tensor,
    encoder_positions: Tensor,
    decoder_positions: Tensor,
    encoder_layers: Vec<EncoderLayer>,
    decoder_layers: Vec<DecoderLayer>,
    embed_scale: f64,
    device: Device,
}

impl MarianModel {
    /// Build the model from a checkpoint's tensors (as `MarianMTModel.state_dict()` names them).
    pub fn new(
        cfg: &MarianConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let w = Weights::new(tensors, DType::F32, device);
        let d = cfg.d_model;
        let target_vocab = cfg.target_vocab_size();
        let (encoder_embed, decoder_embed) = if cfg.share_encoder_decoder_embeddings {
            // `shared` is the canonical copy; older exports only have the per-side names.
            let shared = match w.get_opt("shared.weight", &[cfg.vocab_size, d])? {
                Some(t) => t,
                None => w.get("encoder.embed_tokens.weight", &[cfg.vocab_size, d])?,
            };
            (shared.clone(), shared)
        } else {
            (
                w.get("encoder.embed_tokens.weight", &[cfg.vocab_size, d])?,
                w.get("decoder.embed_tokens.weight", &[cfg.decoder_vocab_size, d])?,
            )
        };
        // save_pretrained omits a tied lm_head; an untied one must be present.
        let lm_head = if cfg.tie_word_embeddings {
            decoder_embed.clone()
        } else {
            w.get("lm_head.weight", &[target_vocab, d])?
        };
        let final_logits_bias = match w.get_opt("final_logits_bias", &[1, target_vocab])? {
            Some(t) => t,
            None => Tensor::zeros((1, target_vocab), DType::F32, device)?,
        };
        let n_pos = cfg.max_position_embeddings;
        let table = sinusoidal_positions(n_pos, d, device)?;
        // Checkpoints from 2020 store the table; transformers uses the stored one when present.
        let encoder_positions = w
            .get_opt("encoder.embed_positions.weight", &[n_pos, d])?
            .unwrap_or_else(|| table.clone());
        let decoder_positions = w
            .get_opt("decoder.embed_positions.weight", &[n_pos, d])?
            .unwrap_or(table);

        let mut encoder_layers = Vec::with_capacity(cfg.encoder_layers);
        for i in 0..cfg.encoder_layers {
            let p = format!("encoder.layers.{i}");
            encoder_layers.push(EncoderLayer {
                self_attn: Attention::load(
                    &w,
                    &format!("{p}.self_attn"),
                    d,
                    cfg.encoder_attention_heads,
                )?,
                self_attn_norm: w.layer_norm(&format!("{p}.self_attn_layer_norm"), d)?,
                fc1: w.linear(&format!("{p}.fc1"), d, cfg.encoder_ffn_dim)?,
                fc2: w.linear(&format!("{p}.fc2"), cfg.encoder_ffn_dim, d)?,
                final_norm: w.layer_norm(&format!("{p}.final_layer_norm"), d)?,
            });
        }
        let mut decoder_layers = Vec::with_capacity(cfg.decoder_layers);
        for i in 0..cfg.decoder_layers {
            let p = format!("decoder.layers.{i}");
            let heads = cfg.decoder_attention_heads;
            decoder_layers.push(DecoderLayer {
                self_attn: Attention::load(&w, &format!("{p}.self_attn"), d, heads)?,
                self_attn_norm: w.layer_norm(&format!("{p}.self_attn_layer_norm"), d)?,
                cross_attn: Attention::load(&w, &format!("{p}.encoder_attn"), d, heads)?,
                cross_attn_norm: w.layer_norm(&format!("{p}.encoder_attn_layer_norm"), d)?,
                fc1: w.linear(&format!("{p}.fc1"), d, cfg.decoder_ffn_dim)?,
                fc2: w.linear(&format!("{p}.fc2"), cfg.decoder_ffn_dim, d)?,
                final_norm: w.layer_norm(&format!("{p}.final_layer_norm"), d)?,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            encoder_embed,
            decoder_embed,
            lm_head,
            final_logits_bias,
            encoder_positions,
            decoder_positions,
            encoder_layers,
            decoder_layers,
            embed_scale: if cfg.scale_embedding {
                (d as f64).sqrt()
            } else {
                1.0
            },
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &MarianConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Encode a batch of token id rows, right-padded with `pad_token_id` to the longest row.
    pub fn encode(&self, rows: &[Vec<u32>]) -> Result<Encoded> {
        let n = rows.len();
        let s = rows.iter().map(Vec::len).max().unwrap_or(0);
        if n == 0 || s == 0 {
            return Err(TranslateError::Input("cannot encode an empty batch".into()));
        }
        if s > self.cfg.max_position_embeddings {
            return Err(TranslateError::Input(format!(
                "a source sentence has {s} tokens, more than the model's {} positions",
                self.cfg.max_position_embeddings
            )));
        }
        let vocab = self.cfg.vocab_size as u32;
        let mut ids = Vec::with_capacity(n * s);
        let mut bias = Vec::with_capacity(n * s);
        for row in rows {
            if let Some(bad) = row.iter().find(|&&id| id >= vocab) {
                return Err(TranslateError::Input(format!(
                    "token id {bad} is outside the source vocabulary of {vocab}"
                )));
            }
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.cfg.pad_token_id, s - row.len()));
            bias.extend(std::iter::repeat_n(0f32, row.len()));
            bias.extend(std::iter::repeat_n(f32::NEG_INFINITY, s - row.len()));
        }
        let ids = Tensor::from_vec(ids, (n, s), &self.device)?;
        let pad_bias = Tensor::from_vec(bias, (n, 1, 1, s), &self.device)?;

        let embedded = self
            .encoder_embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((n, s, self.cfg.d_model))?;
        let positions = self.encoder_positions.i(..s)?;
        let mut xs = (embedded * self.embed_scale)?.broadcast_add(&positions)?;
        for layer in &self.encoder_layers {
            let (k, v) = layer.self_attn.project_kv(&xs)?;
            let attn = layer.self_attn.attend(&xs, &k, &v, Some(&pad_bias))?;
            xs = layer.self_attn_norm.forward(&(xs + attn)?)?;
            let ff = layer
                .fc2
                .forward(&activate(self.cfg.activation, &layer.fc1.forward(&xs)?)?)?;
            xs = layer.final_norm.forward(&(xs + ff)?)?;
        }
        Ok(Encoded {
            hidden: xs,
            pad_bias,
        })
    }

    /// Prepare decoding: cross-attention keys/values of every decoder layer, computed once.
    /// `rows` maps each decoder row to an encoder row (e.g. each sentence repeated per beam).
    pub fn start_decoding(&self, encoded: &Encoded, rows: Option<&[u32]>) -> Result<DecoderState> {
        let mut cross_kv = Vec::with_capacity(self.decoder_layers.len());
        for layer in &self.decoder_layers {
            cross_kv.push(layer.cross_attn.project_kv(&encoded.hidden)?);
        }
        let mut state = DecoderState {
            self_kv: vec![None; self.decoder_layers.len()],
            cross_kv,
            cross_bias: encoded.pad_bias.clone(),
            step: 0,
        };
        if let Some(rows) = rows {
            state.select(rows)?;
        }
        Ok(state)
    }

    /// One decoder step: feed one token per row, get next-token logits (rows, target_vocab)
    /// with `final_logits_bias` added.
    pub fn decode_step(&self, tokens: &[u32], state: &mut DecoderState) -> Result<Tensor> {
        let n = tokens.len();
        if n != state.rows()? {
            return Err(TranslateError::Input(format!(
                "decode step got {n} tokens for {} rows",
                state.rows()?
            )));
        }
        if state.step >= self.cfg.max_position_embeddings {
            return Err(TranslateError::Input(format!(
                "cannot decode past the model's {} positions",
                self.cfg.max_position_embeddings
            )));
        }
        let ids = Tensor::from_slice(tokens, n, &self.device)?;
        let embedded = self.decoder_embed.index_select(&ids, 0)?;
        let position = self.decoder_positions.i(state.step..state.step + 1)?;
        let mut xs = (embedded * self.embed_scale)?
            .broadcast_add(&position)?
            .reshape((n, 1, self.cfg.d_model))?;
        for (i, layer) in self.decoder_layers.iter().enumerate() {
            // Self-attention over everything decoded so far (no causal mask needed: one query).
            let (k_new, v_new) = layer.self_attn.project_kv(&xs)?;
            let (k, v) = match state.self_kv[i].take() {
                Some((k, v)) => (
                    Tensor::cat(&[&k, &k_new], 2)?,
                    Tensor::cat(&[&v, &v_new], 2)?,
                ),
                None => (k_new, v_new),
            };
            let attn = layer.self_attn.attend(&xs, &k, &v, None)?;
            state.self_kv[i] = Some((k, v));
            xs = layer.self_attn_norm.forward(&(xs + attn)?)?;

            let (ck, cv) = &state.cross_kv[i];
            let cross = layer
                .cross_attn
                .attend(&xs, ck, cv, Some(&state.cross_bias))?;
            xs = layer.cross_attn_norm.forward(&(xs + cross)?)?;

            let ff = layer
                .fc2
                .forward(&activate(self.cfg.activation, &layer.fc1.forward(&xs)?)?)?;
            xs = layer.final_norm.forward(&(xs + ff)?)?;
        }
        state.step += 1;
        let hidden = xs.reshape((n, self.cfg.d_model))?;
        let logits = hidden
            .matmul(&self.lm_head.t()?)?
            .broadcast_add(&self.final_logits_bias)?;
        Ok(logits.to_dtype(DType::F32)?)
    }

    /// Logits of the first decoder step for each row (the decoder start token as input).
    pub fn first_step_logits(&self, rows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let encoded = self.encode(rows)?;
        let mut state = self.start_decoding(&encoded, None)?;
        let start = vec![self.cfg.decoder_start_token_id; rows.len()];
        let logits = self.decode_step(&start, &mut state)?;
        Ok(logits.to_vec2::<f32>()?)
    }
}

//! The Marian encoder-decoder (transformers' `MarianMTModel`), with its backend chosen once.
//!
//! [`MarianModel`] holds one of the two [`MarianBackend`]s, picked at load by device and
//! compute type: the CPU kernels ([`CpuMarian`]) on the CPU, candle tensors ([`TensorMarian`])
//! on any other device. Each method matches once and hands the typed backend to generic code
//! ([`generate`]), so an encoder output or a decoder state can never reach the wrong backend.
//!
//! Nothing is cached between calls, so a sentence's output does not depend on what was
//! translated before it or beside it. Tests here check one backend against the other.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::backend::{BackendKind, MarianBackend};
use super::config::{GenerationConfig, MarianConfig};
use super::cpu::CpuMarian;
use super::generate;
use super::tensors::TensorMarian;
use super::TranslateError;
use crate::model::compute::ComputeType;

type Result<T> = std::result::Result<T, TranslateError>;

/// A Marian model on the backend chosen at load.
pub enum MarianModel {
    /// The CPU kernels.
    Cpu(CpuMarian),
    /// candle tensor operations (any device).
    Tensors(TensorMarian),
}

/// Run `$body` with `$b` bound to the typed backend of `$model`.
macro_rules! with_backend {
    ($model:expr, $b:ident => $body:expr) => {
        match $model {
            MarianModel::Cpu($b) => $body,
            MarianModel::Tensors($b) => $body,
        }
    };
}

impl MarianModel {
    /// Build the model from a checkpoint's tensors (as `MarianMTModel.state_dict()` names them),
    /// computing in f32.
    pub fn new(
        cfg: &MarianConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        Self::with_compute_type(cfg, tensors, device, ComputeType::F32)
    }

    /// Build the model computing in `compute`: on the CPU its linear layers are packed for the
    /// CPU kernels (and the tensors freed), f32 or int8; other devices run candle tensor
    /// operations in f32, f16 or bf16, so `Int8` is refused there and half precision on the CPU.
    pub fn with_compute_type(
        cfg: &MarianConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        compute: ComputeType,
    ) -> Result<Self> {
        Self::with_backend(cfg, tensors, device, compute, BackendKind::Auto)
    }

    /// [`Self::with_compute_type`] on the backend `kind` asks for (e.g. the tensor backend on
    /// the CPU, to check the kernels against it).
    pub fn with_backend(
        cfg: &MarianConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        compute: ComputeType,
        kind: BackendKind,
    ) -> Result<Self> {
        match (kind.resolve(device)?, compute) {
            (BackendKind::CpuKernels, ComputeType::F32 | ComputeType::Int8) => {
                let model = TensorMarian::unfolded(cfg, tensors, device)?;
                Ok(MarianModel::Cpu(CpuMarian::pack(model, compute)?))
            }
            (BackendKind::CpuKernels, half) => Err(TranslateError::Config(format!(
                "{half} runs on a GPU only; on the CPU use f32 (exact) or int8 (faster)"
            ))),
            (_, ComputeType::Int8) if device.is_cpu() => Err(TranslateError::Config(
                "int8 weights run on the CPU kernels only, not on candle tensors".into(),
            )),
            (_, ComputeType::Int8) => Err(TranslateError::Config(format!(
                "int8 weights run on the CPU only (this model is on {device:?}); use f32, f16, bf16 or --device cpu"
            ))),
            // f16 and bf16 reach the tensor backend on the CPU only when a test asks for it.
            (_, compute) => Ok(MarianModel::Tensors(TensorMarian::with_compute_type(
                cfg, tensors, device, compute,
            )?)),
        }
    }

    /// What the model computes in.
    pub fn compute_type(&self) -> ComputeType {
        with_backend!(self, b => b.compute_type())
    }

    pub fn config(&self) -> &MarianConfig {
        with_backend!(self, b => b.config())
    }

    pub fn device(&self) -> &Device {
        with_backend!(self, b => b.device())
    }

    /// The CPU-kernel backend, when that is the one loaded (to drive it step by step).
    pub fn as_cpu(&self) -> Option<&CpuMarian> {
        match self {
            MarianModel::Cpu(b) => Some(b),
            MarianModel::Tensors(_) => None,
        }
    }

    /// The tensor backend, when that is the one loaded.
    pub fn as_tensors(&self) -> Option<&TensorMarian> {
        match self {
            MarianModel::Tensors(b) => Some(b),
            MarianModel::Cpu(_) => None,
        }
    }

    /// Generate ids for one batch of token id rows: beam search when `gen.num_beams > 1`,
    /// greedy otherwise (see [`generate`]).
    pub fn generate(&self, rows: &[Vec<u32>], gen: &GenerationConfig) -> Result<Vec<Vec<u32>>> {
        self.generate_with(rows, gen, || Ok(()))
    }

    /// [`Self::generate`], calling `encoded` between the encoder and the decoder (e.g. to time
    /// the encoder).
    pub fn generate_with(
        &self,
        rows: &[Vec<u32>],
        gen: &GenerationConfig,
        encoded: impl FnOnce() -> Result<()>,
    ) -> Result<Vec<Vec<u32>>> {
        with_backend!(self, b => generate::encode_and_generate(b, rows, gen, encoded))
    }

    /// Logits of the first decoder step for each row (the decoder start token as input).
    pub fn first_step_logits(&self, rows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        with_backend!(self, b => b.first_step_logits(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::marian::backend::{DecoderState, EncodedBatch};
    use crate::model::marian::config::Activation;
    use crate::model::marian::random;
    use crate::model::marian::tensors::TensorEncoded;

    fn small(activation: Activation) -> MarianConfig {
        let mut cfg = MarianConfig::opus_mt_base();
        cfg.vocab_size = 60;
        cfg.decoder_vocab_size = 60;
        cfg.d_model = 24;
        cfg.encoder_attention_heads = 4;
        cfg.decoder_attention_heads = 4;
        cfg.encoder_ffn_dim = 40;
        cfg.decoder_ffn_dim = 40;
        cfg.encoder_layers = 2;
        cfg.decoder_layers = 2;
        cfg.activation = activation;
        cfg.pad_token_id = 59;
        cfg.decoder_start_token_id = 59;
        cfg
    }

    /// The CPU-kernel model and the candle-tensor model, on the same weights, as the loader
    /// chooses them.
    fn pair(cfg: &MarianConfig) -> (CpuMarian, TensorMarian) {
        let tensors = random::random_weights(cfg, 3, &Device::Cpu).unwrap();
        let load = |kind| {
            MarianModel::with_backend(cfg, tensors.clone(), &Device::Cpu, ComputeType::F32, kind)
                .unwrap()
        };
        let (MarianModel::Cpu(fast), MarianModel::Tensors(reference)) =
            (load(BackendKind::Auto), load(BackendKind::Tensors))
        else {
            panic!("Auto on the CPU must pick the kernels, Tensors the tensors");
        };
        (fast, reference)
    }

    fn worst_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// One decode step of `tokens` on both decoders: their logits must agree.
    fn step_agrees<A: MarianBackend, B: MarianBackend>(
        (a, state_a): (&A, &mut A::State),
        (b, state_b): (&B, &mut B::State),
        tokens: &[u32],
        what: &str,
    ) {
        let (mut out, mut want) = (Vec::new(), Vec::new());
        a.decode_step_into(tokens, state_a, &mut out).unwrap();
        b.decode_step_into(tokens, state_b, &mut want).unwrap();
        let diff = worst_diff(&out, &want);
        assert!(diff < 1e-4, "{what}: logits differ by {diff}");
    }

    #[test]
    fn cpu_decoder_matches_tensor_decoder() {
        for act in [Activation::Swish, Activation::Relu, Activation::Gelu] {
            let cfg = small(act);
            let (fast, reference) = pair(&cfg);
            let rows = vec![
                vec![5, 0],
                vec![7, 8, 9, 10, 11, 12, 13, 0],
                vec![0],
                vec![3, 4, 0],
            ];
            let enc_fast = fast.encode(&rows).unwrap();
            let enc_ref = reference.encode(&rows).unwrap();
            let diff = worst_diff(enc_fast.packed(), &enc_ref.to_packed().unwrap());
            assert!(diff < 1e-4, "{act:?}: encoder differs by {diff}");

            // Beams fan out, reorder, repeat a parent and drop rows, as beam search does.
            let expand = [0u32, 0, 1, 1, 2, 3];
            let mut s_fast = fast.start_decoding(&enc_fast, Some(&expand)).unwrap();
            // The tensor decoder reads the CPU encoder's output, so that only the decoders
            // differ.
            let lengths = enc_fast.lengths().to_vec();
            let shared =
                TensorEncoded::from_packed(enc_fast.packed(), lengths, cfg.d_model, &Device::Cpu)
                    .unwrap();
            let mut s_ref = reference.start_decoding(&shared, Some(&expand)).unwrap();
            let selections: [&[u32]; 5] = [
                &[1, 1, 0, 3, 2, 5],
                &[0, 1, 2, 3, 4, 5],
                &[5, 4, 4, 4, 0, 1],
                &[2, 3, 0],
                &[2, 2, 1, 1, 0],
            ];
            let mut tokens = vec![cfg.decoder_start_token_id; expand.len()];
            for (step, sel) in selections.iter().enumerate() {
                let what = format!("{act:?} step {step}");
                step_agrees(
                    (&fast, &mut s_fast),
                    (&reference, &mut s_ref),
                    &tokens,
                    &what,
                );
                s_fast.select(sel).unwrap();
                s_ref.select(sel).unwrap();
                tokens = sel
                    .iter()
                    .map(|&r| (r * 7 + step as u32 * 3) % 60)
                    .collect();
            }
            assert!(s_fast.select(&[9]).is_err());
            assert!(s_ref.select(&[9]).is_err());
        }
    }

    /// Beam-search-shaped selections: each sentence's beams in one block, reordered within it,
    /// then a sentence leaving. The tensor state keeps one set of cross-attention keys per
    /// sentence throughout, its self-attention caches grow by doubling, and the logits still
    /// equal the CPU kernels' (which keep keys per row).
    #[test]
    fn beams_share_their_sentences_cross_keys() {
        let mut cfg = small(Activation::Relu);
        // head_dim 4: the attention scale (1/2) is folded into the query projection.
        cfg.d_model = 16;
        let (fast, reference) = pair(&cfg);
        let rows = vec![vec![5, 6, 0], vec![7, 8, 9, 10, 11, 0], vec![3, 0]];
        let beams = 3u32;
        let expand: Vec<u32> = (0..3).flat_map(|s| [s; 3]).collect();
        let enc_fast = fast.encode(&rows).unwrap();
        let shared = TensorEncoded::from_packed(
            enc_fast.packed(),
            enc_fast.lengths().to_vec(),
            cfg.d_model,
            &Device::Cpu,
        )
        .unwrap();
        let mut s_fast = fast.start_decoding(&enc_fast, Some(&expand)).unwrap();
        let mut s_ref = reference.start_decoding(&shared, Some(&expand)).unwrap();
        assert_eq!((s_ref.sentences(), s_ref.rows_per_sentence()), (3, 3));
        let mut tokens = vec![cfg.decoder_start_token_id; expand.len()];
        for step in 0..40u32 {
            let what = format!("step {step}");
            step_agrees(
                (&fast, &mut s_fast),
                (&reference, &mut s_ref),
                &tokens,
                &what,
            );
            let blocks = (s_ref.rows() as u32) / beams;
            // Every beam takes a parent from its own sentence's block; at step 20 the middle
            // sentence finishes and leaves.
            let keep: Vec<u32> = (0..blocks)
                .filter(|&b| step != 20 || b != 1)
                .flat_map(|b| (0..beams).map(move |j| b * beams + (j + step) % beams))
                .collect();
            s_fast.select(&keep).unwrap();
            s_ref.select(&keep).unwrap();
            let sentences = if step >= 20 { 2 } else { 3 };
            assert_eq!(s_ref.sentences(), sentences, "step {step}");
            assert_eq!(s_ref.rows_per_sentence(), beams as usize, "step {step}");
            tokens = keep.iter().map(|&r| (r * 5 + step * 3) % 60).collect();
        }
        // 40 positions: 8, 16, 32, then 64; three reallocations per layer.
        assert_eq!(s_ref.cache_capacity(), (64, 3 * cfg.decoder_layers));
    }

    #[test]
    fn generation_agrees_between_decoders() {
        let cfg = small(Activation::Swish);
        let (fast, reference) = pair(&cfg);
        let rows = vec![vec![5, 6, 0], vec![7, 8, 9, 10, 11, 0], vec![0]];
        let mut gen = GenerationConfig::defaults_for(&cfg).with_max_new_tokens(8);
        for beams in [1, 3] {
            gen.num_beams = beams;
            let a = generate::beam_search(&fast, &fast.encode(&rows).unwrap(), &gen).unwrap();
            let b =
                generate::beam_search(&reference, &reference.encode(&rows).unwrap(), &gen).unwrap();
            assert_eq!(a, b, "beam {beams}");
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let cfg = small(Activation::Relu);
        let (fast, reference) = pair(&cfg);
        fn check<B: MarianBackend>(model: &B) {
            assert!(model.encode(&[vec![600]]).is_err());
            assert!(model.encode(&[]).is_err());
            let enc = model.encode(&[vec![1, 0]]).unwrap();
            assert!(model.start_decoding(&enc, Some(&[1])).is_err());
            let mut state = model.start_decoding(&enc, None).unwrap();
            let mut logits = Vec::new();
            assert!(model
                .decode_step_into(&[1, 2], &mut state, &mut logits)
                .is_err());
            assert!(model
                .decode_step_into(&[600], &mut state, &mut logits)
                .is_err());
            assert!(model
                .decode_step_into(&[1], &mut state, &mut logits)
                .is_ok());
        }
        check(&fast);
        check(&reference);
    }

    #[test]
    fn the_backend_follows_device_and_compute_type() {
        let cfg = small(Activation::Relu);
        let tensors = random::random_weights(&cfg, 3, &Device::Cpu).unwrap();
        let load = |compute, kind| {
            MarianModel::with_backend(&cfg, tensors.clone(), &Device::Cpu, compute, kind)
        };
        let int8 = load(ComputeType::Int8, BackendKind::Auto).unwrap();
        assert!(int8.as_cpu().is_some());
        assert_eq!(int8.compute_type(), ComputeType::Int8);
        let err = load(ComputeType::Int8, BackendKind::Tensors).err().unwrap();
        assert!(err.to_string().contains("int8"), "{err}");
        let tensors_f32 = load(ComputeType::F32, BackendKind::Tensors).unwrap();
        assert!(tensors_f32.as_tensors().is_some());
        assert_eq!(tensors_f32.compute_type(), ComputeType::F32);
    }
}

//! Random-weight Marian models of real shapes, for benchmarks and tests that need a model's
//! size and speed but not its knowledge (so they run with no download).

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::config::MarianConfig;
use super::TranslateError;

/// Named shapes of real OPUS-MT models.
pub fn shape(name: &str) -> Result<MarianConfig, TranslateError> {
    match name {
        "opus-mt-base" => Ok(MarianConfig::opus_mt_base()),
        "opus-mt-tc-big" => Ok(MarianConfig::opus_mt_tc_big()),
        other => Err(TranslateError::Config(format!(
            "unknown model shape \"{other}\": use opus-mt-base or opus-mt-tc-big"
        ))),
    }
}

/// A small deterministic generator (splitmix64), so a seed always gives the same model.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1): spread enough for realistic activations, cheap to draw.
    fn next_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

fn random(
    rng: &mut SplitMix,
    dims: &[usize],
    scale: f32,
    device: &Device,
) -> Result<Tensor, TranslateError> {
    let n: usize = dims.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.next_f32() * scale).collect();
    Ok(Tensor::from_vec(data, dims, device)?)
}

/// Tensors named as `MarianMTModel.state_dict()` names them, with weights drawn uniformly with
/// a fan-in scale (so activations neither vanish nor explode across layers).
pub fn random_weights(
    cfg: &MarianConfig,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>, TranslateError> {
    let mut rng = SplitMix(seed);
    let d = cfg.d_model;
    let mut t = HashMap::new();
    let mut put = |name: String, dims: &[usize], scale: f32, rng: &mut SplitMix| {
        random(rng, dims, scale, device).map(|x| t.insert(name, x))
    };
    let emb_scale = 1.0 / (d as f32).sqrt();
    put(
        "model.shared.weight".into(),
        &[cfg.vocab_size, d],
        emb_scale,
        &mut rng,
    )?;
    if !cfg.share_encoder_decoder_embeddings {
        put(
            "model.encoder.embed_tokens.weight".into(),
            &[cfg.vocab_size, d],
            emb_scale,
            &mut rng,
        )?;
        put(
            "model.decoder.embed_tokens.weight".into(),
            &[cfg.decoder_vocab_size, d],
            emb_scale,
            &mut rng,
        )?;
    }
    let mut linear = |name: &str, i: usize, o: usize, rng: &mut SplitMix| {
        let s = 1.0 / (i as f32).sqrt();
        put(format!("{name}.weight"), &[o, i], s, rng)?;
        put(format!("{name}.bias"), &[o], s * 0.1, rng)
    };
    let layer_sets = [
        ("encoder", cfg.encoder_layers, cfg.encoder_ffn_dim, false),
        ("decoder", cfg.decoder_layers, cfg.decoder_ffn_dim, true),
    ];
    let mut norms = Vec::new();
    for (side, layers, ffn, is_decoder) in layer_sets {
        for l in 0..layers {
            let p = format!("model.{side}.layers.{l}");
            let mut attns = vec!["self_attn"];
            if is_decoder {
                attns.push("encoder_attn");
            }
            for a in &attns {
                for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    linear(&format!("{p}.{a}.{proj}"), d, d, &mut rng)?;
                }
                norms.push(format!("{p}.{a}_layer_norm"));
            }
            linear(&format!("{p}.fc1"), d, ffn, &mut rng)?;
            linear(&format!("{p}.fc2"), ffn, d, &mut rng)?;
            norms.push(format!("{p}.final_layer_norm"));
        }
    }
    for name in norms {
        t.insert(
            format!("{name}.weight"),
            Tensor::ones(d, candle_core::DType::F32, device)?,
        );
        t.insert(
            format!("{name}.bias"),
            Tensor::zeros(d, candle_core::DType::F32, device)?,
        );
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_and_named_like_transformers() {
        let mut cfg = MarianConfig::opus_mt_base();
        cfg.vocab_size = 50;
        cfg.decoder_vocab_size = 50;
        cfg.d_model = 8;
        cfg.encoder_attention_heads = 2;
        cfg.decoder_attention_heads = 2;
        cfg.encoder_ffn_dim = 16;
        cfg.decoder_ffn_dim = 16;
        let a = random_weights(&cfg, 7, &Device::Cpu).unwrap();
        let b = random_weights(&cfg, 7, &Device::Cpu).unwrap();
        let c = random_weights(&cfg, 8, &Device::Cpu).unwrap();
        let key = "model.decoder.layers.5.encoder_attn.k_proj.weight";
        let v =
            |m: &HashMap<String, Tensor>| m[key].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&a), v(&b));
        assert_ne!(v(&a), v(&c));
        assert!(a.contains_key("model.encoder.layers.0.final_layer_norm.bias"));
        assert!(shape("opus-mt-nope").is_err());
    }
}

//! A random-weight model of the real opus-mt-base shape (d_model 512, 6+6 layers, 8 heads,
//! ffn 2048, vocab 58101) translates a batch of 32 sentences, batched exactly as alone.

use candle_core::Device;
use tidings::app::bench::synthetic_rows;
use tidings::model::marian::{
    generate, random, ComputeType, CpuMarian, GenerationConfig, MarianBackend,
};

#[test]
fn opus_mt_base_shape_translates_32_sentences() {
    let cfg = random::shape("opus-mt-base").unwrap();
    assert_eq!(
        (cfg.d_model, cfg.encoder_layers, cfg.vocab_size),
        (512, 6, 58101)
    );
    let tensors = random::random_weights(&cfg, 11, &Device::Cpu).unwrap();
    let model = CpuMarian::new(&cfg, tensors, ComputeType::F32).unwrap();
    let rows = synthetic_rows(32, cfg.vocab_size as u32, 0, &[cfg.pad_token_id], 5);
    let mut gen = GenerationConfig::defaults_for(&cfg).with_max_new_tokens(6);
    gen.bad_words_ids = vec![vec![cfg.pad_token_id]];
    for beams in [1, 4] {
        gen.num_beams = beams;
        let encoded = model.encode(&rows).unwrap();
        let out = if beams > 1 {
            generate::beam_search(&model, &encoded, &gen).unwrap()
        } else {
            generate::greedy(&model, &encoded, &gen).unwrap()
        };
        assert_eq!(out.len(), 32);
        for ids in &out {
            assert!(!ids.is_empty() && ids.len() <= 6, "{ids:?}");
            assert!(!ids.contains(&cfg.pad_token_id), "pad is never generated");
        }
        // The shortest and the longest sentence, alone, give what they gave in the batch.
        for i in [19usize, 13] {
            let alone = model.encode(std::slice::from_ref(&rows[i])).unwrap();
            let single = if beams > 1 {
                generate::beam_search(&model, &alone, &gen).unwrap()
            } else {
                generate::greedy(&model, &alone, &gen).unwrap()
            };
            assert_eq!(single[0], out[i], "beam {beams}, sentence {i}");
        }
    }
}

//! Builds a `tokenizers::Tokenizer` equivalent of a sentencepiece model, for callers that
//! want the Hugging Face pipeline object (inspection, export as tokenizer.json).
//!
//! It is not used to produce Marian ids: `tokenizers`' `Precompiled` normalizer differs from
//! sentencepiece on stacked combining marks, Hangul jamo and half-width kana voicing marks,
//! and its Unigram lattice sums scores in `f64` where sentencepiece uses `f32`.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::metaspace::{Metaspace, PrependScheme};
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Precompiled, Prepend, Replace, Sequence};
use tokenizers::{DecoderWrapper, NormalizerWrapper, Tokenizer};

use super::normalizer::SPACE_SYMBOL;
use super::sentencepiece_model::{NormalizerSpec, PieceType};
use super::spm::SentencePieceModel;

/// Builds the pipeline. Components that cannot be built are left out with a warning
/// (they cannot fail for a model that loaded: the charsmap is validated first and the
/// model always has an unknown piece).
pub(crate) fn build(model: &SentencePieceModel, spec: &NormalizerSpec) -> Tokenizer {
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if let Some(map) = model.normalizer().charsmap() {
        // `Precompiled` indexes its trie unchecked; only hand it maps proven in bounds.
        if map.safe_for_tokenizers() {
            match Precompiled::from(&spec.precompiled_charsmap) {
                Ok(p) => normalizers.push(p.into()),
                Err(e) => tracing::warn!("pipeline built without Precompiled: {e}"),
            }
        } else {
            tracing::warn!("precompiled_charsmap is malformed; pipeline built without it");
        }
    }
    let mut replace = |pattern: ReplacePattern, content: &str| match Replace::new(pattern, content)
    {
        Ok(r) => normalizers.push(r.into()),
        Err(e) => tracing::warn!("pipeline built without a Replace normalizer: {e}"),
    };
    if spec.remove_extra_whitespaces {
        replace(ReplacePattern::Regex("^ +| +$".to_owned()), "");
        replace(ReplacePattern::Regex(" {2,}".to_owned()), " ");
    }
    let space = if spec.escape_whitespaces {
        replace(ReplacePattern::String(" ".to_owned()), SPACE_SYMBOL);
        SPACE_SYMBOL
    } else {
        " "
    };
    if spec.add_dummy_prefix {
        normalizers.push(Prepend::new(space.to_owned()).into());
    }

    let vocab: Vec<(String, f64)> = model
        .entries()
        .map(|(piece, score, kind)| {
            let score = if kind == PieceType::UserDefined {
                // Sentencepiece always prefers user-defined symbols.
                -0.1
            } else {
                f64::from(score)
            };
            (piece.to_owned(), score)
        })
        .collect();
    let unigram = Unigram::from(vocab, Some(model.unk_id() as usize), model.byte_fallback())
        .unwrap_or_else(|e| {
            tracing::warn!("cannot build the Unigram model of the pipeline: {e}");
            Unigram::default()
        });

    let mut tokenizer = Tokenizer::new(unigram);
    if let Err(e) = tokenizer.with_normalizer(Some(Sequence::new(normalizers))) {
        tracing::warn!("pipeline built without normalizers: {e}");
    }
    let metaspace = Metaspace::new('\u{2581}', PrependScheme::Always, false);
    let decoder: DecoderWrapper = if model.byte_fallback() {
        DecoderSequence::new(vec![ByteFallback::new().into(), metaspace.into()]).into()
    } else {
        metaspace.into()
    };
    tokenizer.with_decoder(Some(decoder));
    tokenizer
}

//! The tensor backend's decoder state, kept where the model's tensors are.
//!
//! - Self-attention keys and values ([`SelfCache`]) live in one buffer per layer with room for
//!   more positions than are decoded so far: a step writes its one position in place, and the
//!   buffer doubles when it is full, so a step copies O(rows) numbers instead of the whole
//!   history (as growing by concatenation did).
//! - Cross-attention keys and values ([`CrossKeys`]) are kept once per sentence, not once per
//!   beam: a sentence's beams read them as several queries of one attention. Beam reordering
//!   therefore never copies them; they are re-indexed only when sentences leave the batch.

use candle_core::{Device, Tensor};

use super::backend::DecoderState;
use super::profile::{self, Phase};
use super::TranslateError;

type Result<T> = std::result::Result<T, TranslateError>;

/// Positions a self-attention cache starts with. Small, because a beam reorder copies the
/// whole buffer: doubling from here keeps that copy within twice the filled positions (past
/// the first eight).
const FIRST_CAPACITY: usize = 8;

/// One decoder layer's self-attention keys and values: (rows, heads, capacity, head_dim), the
/// first `len` positions filled.
pub struct SelfCache {
    k: Tensor,
    v: Tensor,
    len: usize,
    /// Positions the model has at most (the buffer never grows past them).
    limit: usize,
    /// Times the buffer was reallocated to grow.
    grown: usize,
}

impl SelfCache {
    fn empty(like: &Tensor, capacity: usize) -> Result<Tensor> {
        let (rows, heads, _, head_dim) = like.dims4()?;
        Ok(Tensor::zeros(
            (rows, heads, capacity, head_dim),
            like.dtype(),
            like.device(),
        )?)
    }

    /// A cache holding the first position's keys and values, (rows, heads, 1, head_dim) each.
    fn start(k: &Tensor, v: &Tensor, limit: usize) -> Result<Self> {
        let capacity = FIRST_CAPACITY.min(limit).max(1);
        let mut cache = Self {
            k: Self::empty(k, capacity)?,
            v: Self::empty(v, capacity)?,
            len: 0,
            limit,
            grown: 0,
        };
        cache.write(k, v)?;
        Ok(cache)
    }

    fn capacity(&self) -> usize {
        self.k.dims().get(2).copied().unwrap_or(0)
    }

    /// Write one position (rows, heads, 1, head_dim) after the filled ones, growing first when
    /// the buffer is full.
    fn write(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        if self.len == self.capacity() {
            if self.len >= self.limit {
                return Err(TranslateError::Input(format!(
                    "cannot decode past the model's {} positions",
                    self.limit
                )));
            }
            let capacity = (2 * self.capacity()).min(self.limit);
            let extend = |old: &Tensor| -> Result<Tensor> {
                let more = Self::empty(old, capacity - self.len)?;
                Ok(Tensor::cat(&[old, &more], 2)?)
            };
            self.k = extend(&self.k)?;
            self.v = extend(&self.v)?;
            self.grown += 1;
        }
        self.k.slice_set(&k.contiguous()?, 2, self.len)?;
        self.v.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len += 1;
        Ok(())
    }

    /// Append one position and return the keys and values so far, (rows, heads, len,
    /// head_dim) views into the buffer.
    pub fn append(
        slot: &mut Option<SelfCache>,
        k: &Tensor,
        v: &Tensor,
        limit: usize,
    ) -> Result<(Tensor, Tensor)> {
        let cache = match slot {
            Some(cache) => {
                cache.write(k, v)?;
                cache
            }
            None => slot.insert(Self::start(k, v, limit)?),
        };
        Ok((
            cache.k.narrow(2, 0, cache.len)?,
            cache.v.narrow(2, 0, cache.len)?,
        ))
    }

    /// Reorder rows. The whole buffer is copied (at most twice the filled positions): that
    /// keeps the room to write in place, where copying only the filled part would need a second
    /// copy into a larger buffer.
    fn select(&mut self, idx: &Tensor) -> Result<()> {
        self.k = self.k.index_select(idx, 0)?;
        self.v = self.v.index_select(idx, 0)?;
        Ok(())
    }
}

/// Every decoder layer's cross-attention keys and values, (sentences, heads, source, head_dim),
/// with the padding bias (sentences, 1, 1, source); decoder rows come in blocks of
/// `rows_per_sentence` consecutive rows, block i reading sentence i.
pub struct CrossKeys {
    pub kv: Vec<(Tensor, Tensor)>,
    pub bias: Tensor,
    pub rows_per_sentence: usize,
}

impl CrossKeys {
    fn sentences(&self) -> usize {
        self.bias.dims().first().copied().unwrap_or(0)
    }

    /// Follow a row selection: the new rows' sentences, in blocks as large as the selection
    /// allows, re-indexed only when the sentences themselves change.
    fn select(&mut self, rows: &[u32]) -> Result<()> {
        let per = self.rows_per_sentence.max(1);
        let sentence_of: Vec<u32> = rows.iter().map(|&r| r / per as u32).collect();
        let block = block_size(&sentence_of);
        let sentences: Vec<u32> = sentence_of.iter().step_by(block).copied().collect();
        let unchanged = sentences.len() == self.sentences()
            && sentences.iter().enumerate().all(|(i, &s)| s as usize == i);
        if !unchanged {
            let idx = Tensor::from_slice(&sentences, sentences.len(), self.bias.device())?;
            for (k, v) in &mut self.kv {
                *k = k.index_select(&idx, 0)?;
                *v = v.index_select(&idx, 0)?;
            }
            self.bias = self.bias.index_select(&idx, 0)?;
        }
        self.rows_per_sentence = block;
        Ok(())
    }
}

/// The largest block size that cuts `sentence_of` into equal blocks of one sentence each
/// (1 always does).
fn block_size(sentence_of: &[u32]) -> usize {
    let n = sentence_of.len();
    (1..=n)
        .rev()
        .filter(|b| n.is_multiple_of(*b))
        .find(|&b| sentence_of.chunks(b).all(|c| c.iter().all(|&s| s == c[0])))
        .unwrap_or(1)
}

/// The decoder state of the tensor backend.
pub struct TensorState {
    pub(super) self_kv: Vec<Option<SelfCache>>,
    pub(super) cross: CrossKeys,
    rows: usize,
    /// Tokens decoded so far (the next token's position).
    pub(super) step: usize,
    /// The model's positions: no cache grows past them.
    pub(super) positions: usize,
}

impl TensorState {
    /// A state before the first step: one row per sentence of `cross`.
    pub fn new(layers: usize, cross: CrossKeys, positions: usize) -> Self {
        let rows = cross.sentences() * cross.rows_per_sentence;
        Self {
            self_kv: (0..layers).map(|_| None).collect(),
            cross,
            rows,
            step: 0,
            positions,
        }
    }

    /// Sentences whose cross-attention keys are kept (each shared by its rows).
    pub fn sentences(&self) -> usize {
        self.cross.sentences()
    }

    /// Decoder rows per sentence (beams).
    pub fn rows_per_sentence(&self) -> usize {
        self.cross.rows_per_sentence
    }

    /// Positions the self-attention caches have room for, and how often any of them grew.
    pub fn cache_capacity(&self) -> (usize, usize) {
        let caches = self.self_kv.iter().flatten();
        let capacity = caches.clone().map(SelfCache::capacity).max().unwrap_or(0);
        (capacity, caches.map(|c| c.grown).sum())
    }

    pub(super) fn device(&self) -> &Device {
        self.cross.bias.device()
    }
}

impl DecoderState for TensorState {
    fn rows(&self) -> usize {
        self.rows
    }

    fn step(&self) -> usize {
        self.step
    }

    fn select(&mut self, rows: &[u32]) -> Result<()> {
        let _t = profile::time_on(Phase::Reorder, self.device());
        let old = self.rows;
        if rows.iter().any(|&r| r as usize >= old) {
            return Err(TranslateError::Input(format!(
                "row selection out of range for {old} rows"
            )));
        }
        if !rows.is_empty() && self.self_kv.iter().any(Option::is_some) {
            let idx = Tensor::from_slice(rows, rows.len(), self.device())?;
            for cache in self.self_kv.iter_mut().flatten() {
                cache.select(&idx)?;
            }
        }
        self.cross.select(rows)?;
        self.rows = rows.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn blocks_are_as_large_as_the_selection_allows() {
        assert_eq!(block_size(&[0, 0, 0, 0, 1, 1, 1, 1]), 4);
        assert_eq!(block_size(&[2, 2, 0, 0, 1, 1]), 2);
        assert_eq!(block_size(&[0, 1, 2]), 1);
        // Blocks of 3 would mix sentences; blocks of 2 repeat one sentence: fine.
        assert_eq!(block_size(&[1, 1, 1, 1, 0, 0]), 2);
        assert_eq!(block_size(&[4]), 1);
        assert_eq!(block_size(&[]), 1);
    }

    #[test]
    fn the_cache_writes_in_place_and_doubles_when_full() {
        let (rows, heads, hd) = (3, 2, 4);
        let mut slot = None;
        let mut want_k: Vec<Tensor> = Vec::new();
        for step in 0..70 {
            let k = Tensor::full(step as f32, (rows, heads, 1, hd), &Device::Cpu).unwrap();
            let v = (&k * -1.0).unwrap();
            want_k.push(k.clone());
            let (ks, vs) = SelfCache::append(&mut slot, &k, &v, 100).unwrap();
            assert_eq!(ks.dims4().unwrap(), (rows, heads, step + 1, hd));
            let all = Tensor::cat(&want_k, 2).unwrap();
            let diff = (ks - &all).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "step {step}");
            let diff = (vs + all).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "step {step}");
        }
        let cache = slot.as_ref().unwrap();
        // 8 → 16 → 32 → 64 → 100 (the limit): four reallocations in 70 steps.
        assert_eq!((cache.capacity(), cache.grown), (100, 4));
        // A full cache at the limit refuses another position rather than grow past it.
        let mut slot = None;
        let k = Tensor::zeros((1, 1, 1, 2), DType::F32, &Device::Cpu).unwrap();
        for _ in 0..3 {
            SelfCache::append(&mut slot, &k, &k, 3).unwrap();
        }
        let err = SelfCache::append(&mut slot, &k, &k, 3).unwrap_err();
        assert!(err.to_string().contains("3 positions"), "{err}");
    }
}

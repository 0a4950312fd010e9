//! CPU compute kernels on plain `f32` buffers, shared by the translation and embedding models.
//!
//! candle runs a transformer layer as many small tensor operations, each allocating its output
//! and handing work to a thread pool. On the CPU the models here instead run a layer as a few
//! large matrix products plus fused passes over rows (attention, residual + layer norm,
//! activation), with vector kernels compiled for AVX2 and picked at run time.

pub mod int8;
pub mod layers;
pub mod packed_f32;
pub mod simd;

/// A kernel was handed buffers whose sizes disagree: a bug in the caller, reported instead of
/// panicking.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("kernel buffers disagree: {0}")]
    Shape(&'static str),
    #[error("f32 matrix product: {0}")]
    PackedF32(#[from] packed_f32::KernelError),
    #[error("int8 matrix product: {0}")]
    Int8(#[from] int8::KernelError),
}

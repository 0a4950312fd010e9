//! A decode step's attention as one operation: each new token's query over its keys and
//! values (scores, scale, bias, softmax and weighted sum), where candle's operations launch a
//! matrix product, the scale, the bias, a softmax, a second product and a transpose, each a
//! kernel and an allocation; at batch 1 a decode step is bound by such launches.
//!
//! On a GPU the kernel is `cuda/decode_attention.cu` (f32, f16, bf16; scores, softmax and sums
//! in f32). On the CPU [`DecodeAttention`] runs a plain reference of the same contract, which
//! the tests hold to candle's attention and, through the decoder, to transformers. In f32 it
//! equals candle's attention to summation order. In f16/bf16 it is closer to f32 than candle's
//! path, which rounds the scores and the probabilities to the half type, so half-precision ids
//! may differ between the two (both stay within the half-precision tests' bounds).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Shape, Tensor};

/// Positions one query may attend to: the kernel keeps a score per position in shared memory,
/// 48 KiB with its fixed shared memory (24 bytes of variables, 32 as ptxas lays them out for
/// sm_90; 64 kept).
pub const MAX_LEN: usize = (48 * 1024 - 64) / 4;

/// Attention of queries (groups, heads, per, head_dim; contiguous) over keys and values
/// (groups, heads, len, head_dim; any group and head strides, positions contiguous, so a view
/// of a larger cache will do), scores scaled by `scale` (skipped at 1) and an optional additive
/// bias (groups, 1, 1, len) added. A group's `per` queries share its keys (a sentence's beams
/// in cross-attention). Output: (groups, per, heads · head_dim), the rows' contexts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeAttention {
    pub scale: f32,
}

/// The shapes of one call.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    groups: usize,
    heads: usize,
    per: usize,
    len: usize,
    head_dim: usize,
    /// Elements between groups, and between heads, of the keys and values (the kernel's; the
    /// reference reads through the layouts).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    group_stride: usize,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    head_stride: usize,
}

struct Op {
    scale: f32,
    bias: Option<Tensor>,
}

impl DecodeAttention {
    /// Whether the kernel serves keys of `len` positions.
    pub fn fits(len: usize) -> bool {
        (1..=MAX_LEN).contains(&len)
    }

    pub fn apply(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        super::count_run(super::Kernel::DecodeAttention);
        let op = Op {
            scale: self.scale,
            bias: bias.map(Tensor::contiguous).transpose()?,
        };
        q.contiguous()?.apply_op3_no_bwd(k, v, &op)
    }
}

fn fail<T>(what: String) -> candle_core::Result<T> {
    Err(candle_core::Error::Msg(format!("decode attention: {what}")))
}

impl Op {
    fn geometry(&self, q: &Layout, k: &Layout, v: &Layout) -> candle_core::Result<Geometry> {
        let (groups, heads, per, head_dim) = q.shape().dims4()?;
        let (kg, kh, len, kd) = k.shape().dims4()?;
        if (kg, kh, kd) != (groups, heads, head_dim) || v.dims() != k.dims() {
            return fail(format!(
                "queries {:?}, keys {:?}, values {:?}",
                q.dims(),
                k.dims(),
                v.dims()
            ));
        }
        // A dimension of size 1 may carry any stride.
        let stride = k.stride();
        let positions_dense =
            (head_dim == 1 || stride[3] == 1) && (len == 1 || stride[2] == head_dim);
        if !dense(q) || v.stride() != stride || !positions_dense {
            return fail(format!(
                "keys (strides {stride:?}) and values (strides {:?}) must share a layout with \
                 positions contiguous, and the queries (strides {:?}) must be dense",
                v.stride(),
                q.stride()
            ));
        }
        if !DecodeAttention::fits(len) {
            return fail(format!("{len} positions (1 to {MAX_LEN})"));
        }
        if let Some(bias) = &self.bias {
            if bias.dims() != [groups, 1, 1, len] {
                return fail(format!("a bias of {:?} for {groups} × {len}", bias.dims()));
            }
        }
        Ok(Geometry {
            groups,
            heads,
            per,
            len,
            head_dim,
            group_stride: stride[0],
            head_stride: stride[1],
        })
    }
}

/// Whether a layout is dense and in order, whatever the strides of its dimensions of size 1.
fn dense(l: &Layout) -> bool {
    let mut expected = 1;
    for (&dim, &stride) in l.dims().iter().zip(l.stride()).rev() {
        if dim != 1 && stride != expected {
            return false;
        }
        expected *= dim;
    }
    true
}

/// A tensor's elements as f32, in its logical order (any layout).
fn gathered(s: &CpuStorage, l: &Layout) -> candle_core::Result<Vec<f32>> {
    let mut offsets = vec![l.start_offset()];
    for (&dim, &stride) in l.dims().iter().zip(l.stride()) {
        offsets = offsets
            .iter()
            .flat_map(|&o| (0..dim).map(move |i| o + i * stride))
            .collect();
    }
    Ok(match s {
        CpuStorage::F32(v) => offsets.iter().map(|&o| v[o]).collect(),
        CpuStorage::F16(v) => offsets.iter().map(|&o| v[o].to_f32()).collect(),
        CpuStorage::BF16(v) => offsets.iter().map(|&o| v[o].to_f32()).collect(),
        _ => return fail(format!("{:?} tensors", s.dtype())),
    })
}

/// `values` in `dtype` (rounded to nearest even, as the kernel's conversion does).
fn stored(values: Vec<f32>, dtype: DType) -> candle_core::Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(values),
        DType::F16 => CpuStorage::F16(values.into_iter().map(half::f16::from_f32).collect()),
        DType::BF16 => CpuStorage::BF16(values.into_iter().map(half::bf16::from_f32).collect()),
        other => return fail(format!("{other:?} tensors")),
    })
}

/// The contract on dense f32 inputs: q (groups, heads, per, hd), k and v (groups, heads, len,
/// hd), bias (groups, len); output (groups, per, heads, hd). The kernel's order of operations.
fn reference(
    g: &Geometry,
    scale: f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (heads, per, len, hd) = (g.heads, g.per, g.len, g.head_dim);
    let mut out = vec![0f32; g.groups * per * heads * hd];
    let mut scores = vec![0f32; len];
    for group in 0..g.groups {
        for head in 0..heads {
            let kv = (group * heads + head) * len * hd;
            for query in 0..per {
                let qrow = &q[((group * heads + head) * per + query) * hd..][..hd];
                for (t, score) in scores.iter_mut().enumerate() {
                    let key = &k[kv + t * hd..][..hd];
                    let dot: f32 = qrow.iter().zip(key).map(|(a, b)| a * b).sum();
                    let mut s = if scale != 1.0 { dot * scale } else { dot };
                    if let Some(bias) = bias {
                        s += bias[group * len + t];
                    }
                    *score = s;
                }
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                let mut sum = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let inv = 1.0 / sum;
                let dst = &mut out[((group * per + query) * heads + head) * hd..][..hd];
                for (d, o) in dst.iter_mut().enumerate() {
                    let acc: f32 = (0..len).map(|t| scores[t] * v[kv + t * hd + d]).sum();
                    *o = acc * inv;
                }
            }
        }
    }
    out
}

impl CustomOp3 for Op {
    fn name(&self) -> &'static str {
        "decode-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geometry(l1, l2, l3)?;
        let bias = match &self.bias {
            Some(b) => Some(b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        let out = reference(
            &g,
            self.scale,
            &gathered(s1, l1)?,
            &gathered(s2, l2)?,
            &gathered(s3, l3)?,
            bias.as_deref(),
        );
        let shape = Shape::from((g.groups, g.per, g.heads * g.head_dim));
        Ok((stored(out, s1.dtype())?, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let g = self.geometry(l1, l2, l3)?;
        if self.bias.as_ref().is_some_and(|b| b.dtype() != s1.dtype()) {
            return fail("the bias must have the queries' type".into());
        }
        let parts = ((s1, l1), (s2, l2), (s3, l3));
        let out = match s1.dtype() {
            DType::F32 => cuda::launch::<f32>("decode_attention_f32", self, &g, parts)?,
            DType::F16 => cuda::launch::<half::f16>("decode_attention_f16", self, &g, parts)?,
            DType::BF16 => cuda::launch::<half::bf16>("decode_attention_bf16", self, &g, parts)?,
            other => return fail(format!("{other:?} tensors")),
        };
        Ok((out, Shape::from((g.groups, g.per, g.heads * g.head_dim))))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::{BackendDevice, BackendStorage};
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CudaStorage, Layout, Storage};

    use super::{fail, Geometry, Op};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/decode_attention.ptx"));
    const MODULE: &str = "tidings_decode_attention";
    /// `ATTN_THREADS` in the kernel.
    const THREADS: u32 = 128;

    type Part<'a> = (&'a CudaStorage, &'a Layout);

    pub(super) fn launch<T: CudaDType + DeviceRepr>(
        name: &str,
        op: &Op,
        g: &Geometry,
        (q, k, v): (Part<'_>, Part<'_>, Part<'_>),
    ) -> candle_core::Result<CudaStorage> {
        let dev = q.0.device().clone();
        let qs = q.0.as_cuda_slice::<T>()?.slice(q.1.start_offset()..);
        let ks = k.0.as_cuda_slice::<T>()?.slice(k.1.start_offset()..);
        let vs = v.0.as_cuda_slice::<T>()?.slice(v.1.start_offset()..);
        // The bias's storage stays locked until the kernel is queued.
        let bias = op.bias.as_ref().map(|b| b.storage_and_layout());
        let bias_slice = match &bias {
            Some((storage, layout)) => match &**storage {
                Storage::Cuda(s) if s.device().same_device(&dev) => {
                    Some(s.as_cuda_slice::<T>()?.slice(layout.start_offset()..))
                }
                _ => return fail("the bias is not on the queries' GPU".into()),
            },
            None => None,
        };
        let out_len = g.groups * g.per * g.heads * g.head_dim;
        // SAFETY: every element is written by the kernel (one block per group, head and query
        // writes its head_dim outputs).
        let out = unsafe { dev.alloc::<T>(out_len)? };
        let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let (has_bias, heads, per, len, head_dim) = (
            i32::from(bias_slice.is_some()),
            g.heads as i32,
            g.per as i32,
            g.len as i32,
            g.head_dim as i32,
        );
        let (group_stride, head_stride) = (g.group_stride as i64, g.head_stride as i64);
        let mut args = func.builder();
        args.arg(&qs).arg(&ks).arg(&vs);
        // Without a bias the kernel never reads that pointer: the queries stand in.
        match &bias_slice {
            Some(b) => args.arg(b),
            None => args.arg(&qs),
        };
        args.arg(&has_bias)
            .arg(&heads)
            .arg(&per)
            .arg(&len)
            .arg(&head_dim)
            .arg(&group_stride)
            .arg(&head_stride)
            .arg(&op.scale)
            .arg(&out);
        let cfg = LaunchConfig {
            grid_dim: ((g.groups * g.heads * g.per) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: (g.len * 4) as u32,
        };
        // SAFETY: the arguments match the kernel's signature; the geometry was checked.
        unsafe { args.launch(cfg) }.w()?;
        drop(bias);
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
}

/// One input shape on which the kernel is checked.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub groups: usize,
    pub heads: usize,
    pub per: usize,
    pub len: usize,
    /// Positions the keys' buffer holds (≥ len): the keys are a view of its first `len`.
    pub capacity: usize,
    pub head_dim: usize,
    pub bias: bool,
    pub scale: f32,
    pub dtype: DType,
}

/// Self-attention over a cache view (one query per row), cross-attention with padding (a
/// sentence's beams share its keys), opus-mt's head size and the fixtures' small one, a
/// source as long as a model's positions, the most positions the kernel holds, and each type.
pub const CASES: [Case; 7] = [
    case(3, 8, 1, 7, 16, 64, false, 1.0, DType::F32),
    case(2, 8, 4, 33, 33, 64, true, 1.0, DType::F32),
    case(2, 2, 3, 512, 512, 4, true, 0.5, DType::F32),
    case(5, 3, 1, 1, 8, 16, false, 0.25, DType::F32),
    case(2, 8, 4, 40, 40, 64, true, 1.0, DType::F16),
    case(3, 8, 1, 9, 16, 64, false, 1.0, DType::BF16),
    case(1, 1, 1, MAX_LEN, MAX_LEN, 4, true, 1.0, DType::F32),
];

#[allow(clippy::too_many_arguments)]
const fn case(
    groups: usize,
    heads: usize,
    per: usize,
    len: usize,
    capacity: usize,
    head_dim: usize,
    bias: bool,
    scale: f32,
    dtype: DType,
) -> Case {
    Case {
        groups,
        heads,
        per,
        len,
        capacity,
        head_dim,
        bias,
        scale,
        dtype,
    }
}

impl Case {
    /// Queries (groups, heads, per, hd), keys and values (groups, heads, capacity, hd) and a
    /// bias (groups, len; -inf past a group's own length) from `seed`, as f32.
    pub fn inputs(&self, seed: u32) -> [Vec<f32>; 4] {
        let mut state = seed.wrapping_mul(0x2545_f491) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 2001) as f32 / 1000.0 - 1.0
        };
        let (g, h) = (self.groups, self.heads);
        let q = (0..g * h * self.per * self.head_dim)
            .map(|_| next())
            .collect();
        let k = (0..g * h * self.capacity * self.head_dim)
            .map(|_| 2.0 * next())
            .collect();
        let v = (0..g * h * self.capacity * self.head_dim)
            .map(|_| next())
            .collect();
        let bias = (0..g * self.len)
            .map(|i| {
                let (group, t) = (i / self.len, i % self.len);
                // Group g has len - g positions of its own (at least one).
                if t > 0 && t + group >= self.len {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        [q, k, v, bias]
    }

    /// The inputs of `seed` as tensors of the case's type on `device`: queries, keys and
    /// values (views of the first `len` of `capacity` positions) and the bias, if any.
    pub fn tensors(
        &self,
        seed: u32,
        device: &Device,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor, Option<Tensor>)> {
        let [q, k, v, bias] = self.inputs(seed);
        let (g, h, hd) = (self.groups, self.heads, self.head_dim);
        let typed = |x: Vec<f32>, shape: (usize, usize, usize, usize)| {
            Tensor::from_vec(x, shape, device)?.to_dtype(self.dtype)
        };
        let cache = |x: Vec<f32>| typed(x, (g, h, self.capacity, hd))?.narrow(2, 0, self.len);
        Ok((
            typed(q, (g, h, self.per, hd))?,
            cache(k)?,
            cache(v)?,
            self.bias
                .then(|| typed(bias, (g, 1, 1, self.len)))
                .transpose()?,
        ))
    }

    /// The operation's output on `device` for the inputs of `seed`, as f32.
    pub fn run(&self, seed: u32, device: &Device) -> candle_core::Result<Vec<f32>> {
        let (q, k, v, bias) = self.tensors(seed, device)?;
        DecodeAttention { scale: self.scale }
            .apply(&q, &k, &v, bias.as_ref())?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()
    }

    /// How far two outputs may be apart: f32 sums in another order, or one rounding to a half
    /// type apart.
    pub fn tolerance(&self, expected: f32) -> f32 {
        let relative = match self.dtype {
            DType::F16 => 1.0 / 1024.0,
            DType::BF16 => 1.0 / 128.0,
            _ => 1e-5,
        };
        1e-5 + relative * expected.abs()
    }
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}: {} groups × {} heads × {} queries over {} of {} positions, head_dim {}, bias {}, scale {}",
            self.dtype,
            self.groups,
            self.heads,
            self.per,
            self.len,
            self.capacity,
            self.head_dim,
            self.bias,
            self.scale
        )
    }
}

/// The first output of `case` further from `expected` than its tolerance.
pub fn compare(case: &Case, got: &[f32], expected: &[f32]) -> Option<String> {
    if got.len() != expected.len() {
        return Some(format!("{} outputs, not {}", got.len(), expected.len()));
    }
    got.iter()
        .zip(expected)
        .position(|(a, b)| {
            let close = a == b || (a - b).abs() <= case.tolerance(*b);
            !close
        })
        .map(|i| format!("output {i}: {}, not {}", got[i], expected[i]))
}

/// The first difference between the kernel on `device` and its reference on the host.
pub fn check(device: &Device) -> Result<(), String> {
    super::check_cases(&CASES, device, Case::run, |c, g, e| compare(c, g, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::marian::tensors::attention;

    /// The reference against candle's attention (what the tensor backend runs without the
    /// kernel), in f32 on every f32 check case: views of a cache, biases, scales, head sizes.
    #[test]
    fn reference_equals_candle_attention() {
        let cpu = Device::Cpu;
        for case in CASES.iter().filter(|c| c.dtype == DType::F32) {
            let (q, k, v, bias) = case.tensors(3, &cpu).unwrap();
            let op = DecodeAttention { scale: case.scale };
            let fused = op.apply(&q, &k, &v, bias.as_ref()).unwrap();
            let by_ops = attention(&q, &k, &v, bias.as_ref(), case.scale.into()).unwrap();
            assert_eq!(fused.dims(), by_ops.dims(), "{case}");
            let (a, b) = (
                fused.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                by_ops.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(compare(case, &a, &b), None, "{case}");
        }
    }

    #[test]
    fn half_types_round_once() {
        // The reference rounds its f32 result to the type once: f16 and bf16 outputs stay
        // within one rounding of the f32 reference on the same (rounded) inputs.
        for dtype in [DType::F16, DType::BF16] {
            let mut case = CASES[1];
            case.dtype = dtype;
            let half = case.run(5, &Device::Cpu).unwrap();
            // The same inputs, rounded to the type, in f32.
            let (q, k, v, bias) = case.tensors(5, &Device::Cpu).unwrap();
            let widen = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let out = DecodeAttention { scale: case.scale }
                .apply(
                    &widen(&q),
                    &widen(&k),
                    &widen(&v),
                    bias.as_ref().map(widen).as_ref(),
                )
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(compare(&case, &half, &out), None, "{dtype:?}");
            assert!(half != out, "{dtype:?}: no rounding at all");
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let cpu = Device::Cpu;
        let z = |s: (usize, usize, usize, usize)| Tensor::zeros(s, DType::F32, &cpu).unwrap();
        let op = DecodeAttention { scale: 1.0 };
        let (q, k) = (z((2, 4, 1, 8)), z((2, 4, 5, 8)));
        assert!(op.apply(&q, &k, &k, None).is_ok());
        assert!(op
            .apply(&q, &z((2, 4, 5, 4)), &z((2, 4, 5, 4)), None)
            .is_err());
        assert!(op.apply(&q, &k, &z((2, 4, 6, 8)), None).is_err());
        assert!(op.apply(&q, &k, &k, Some(&z((2, 1, 1, 4)))).is_err());
        // Keys whose positions are not contiguous (a transposed view).
        let kt = z((2, 4, 8, 5)).transpose(2, 3).unwrap();
        assert!(op.apply(&q, &kt, &kt, None).is_err());
        assert!(!DecodeAttention::fits(0) && !DecodeAttention::fits(MAX_LEN + 1));
    }
}

//! f32 matrix product `out = x · Wᵀ + bias` with W packed once (at model load) into column
//! panels, so that no call re-packs the weights.
//!
//! Layout: W (n, k) row-major is cut into panels of [`NR`] output features; inside a panel the
//! values are stored k-major (`panel[p * NR + c] = W[q * NR + c, p]`), so a microkernel reads
//! one contiguous `NR`-wide row of the panel per step of `p`. The last panel is zero-padded.
//!
//! Determinism contract: every output element is `bias[j]` followed by one fused multiply-add
//! `acc = fma(x[i, p], W[j, p], acc)` for `p = 0, 1, …, k − 1` in that order, with a single
//! accumulator, in every kernel (AVX-512F, AVX2+FMA, portable; full or edge tiles; threaded
//! or not). A row's result is therefore bitwise identical whatever `m`, its position in the
//! batch, the thread count and the SIMD path.
//!
//! Set `TIDINGS_KERNELS=portable` to force the portable path (`avx2` forces AVX2+FMA when the
//! CPU has it).

use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use rayon::prelude::*;

/// Output features per packed panel (two zmm / four ymm registers).
const NR: usize = 32;
/// Panels visited together: they stay in L2 while every row block of x passes over them.
const GROUP: usize = 4;
/// Largest row block of the AVX-512 kernel (14 × 2 zmm accumulators of 32 registers).
const MR_512: usize = 14;
/// Largest row block of the AVX2 kernel (6 × 2 ymm accumulators of 16 registers).
const MR_256: usize = 6;
/// Largest scratch buffer (floats) kept per thread between calls.
const SCRATCH_KEEP: usize = 1 << 20;
/// Row block of the portable kernel.
const MR_PORTABLE: usize = 4;
/// Below this many multiply-adds the product runs on the calling thread (same threshold as the
/// gemm call it replaces).
const PAR_MIN_WORK: usize = 1 << 18;

/// Shape errors of the packed kernels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError(String);

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "packed f32 kernel: {}", self.0)
    }
}

impl std::error::Error for KernelError {}

fn err(msg: String) -> KernelError {
    KernelError(msg)
}

/// Which kernel family computes the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Plain Rust with `f32::mul_add`; runs everywhere.
    Portable,
    /// AVX2 + FMA (x86_64).
    Avx2,
    /// AVX-512F (x86_64).
    Avx512,
}

impl Path {
    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        match self {
            Path::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every path this CPU can run, portable first.
    pub fn available() -> Vec<Path> {
        [Path::Portable, Path::Avx2, Path::Avx512]
            .into_iter()
            .filter(|p| p.supported())
            .collect()
    }

    /// The path [`PackedF32::matmul`] uses: the fastest supported one, unless
    /// `TIDINGS_KERNELS` asks for `portable` (or `avx2`). Detected once per process.
    pub fn detected() -> Path {
        static PATH: OnceLock<Path> = OnceLock::new();
        *PATH.get_or_init(|| Path::choose(&std::env::var("TIDINGS_KERNELS").unwrap_or_default()))
    }

    /// The path for a `TIDINGS_KERNELS` value on this CPU.
    fn choose(wanted: &str) -> Path {
        match wanted.trim().to_ascii_lowercase().as_str() {
            "portable" => Path::Portable,
            "avx2" if Path::Avx2.supported() => Path::Avx2,
            _ if Path::Avx512.supported() => Path::Avx512,
            _ if Path::Avx2.supported() => Path::Avx2,
            _ => Path::Portable,
        }
    }
}

/// A linear layer's weights packed for [`PackedF32::matmul`].
pub struct PackedF32 {
    /// Panels (see the module docs), starting at `buf[off]`, which is 64-byte aligned so that
    /// vector loads of a panel row never straddle cache lines.
    buf: Vec<f32>,
    off: usize,
    /// Bias zero-padded to whole panels.
    bias: Vec<f32>,
    n: usize,
    k: usize,
}

impl fmt::Debug for PackedF32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedF32")
            .field("n", &self.n)
            .field("k", &self.k)
            .finish_non_exhaustive()
    }
}

impl PackedF32 {
    /// Pack `w`, (n, k) row-major (PyTorch's (out, in)), and its `bias` (n entries).
    pub fn pack(w: &[f32], bias: &[f32], n: usize, k: usize) -> Result<Self, KernelError> {
        let nk = n
            .checked_mul(k)
            .ok_or_else(|| err(format!("n·k overflows ({n} × {k})")))?;
        if w.len() != nk {
            return Err(err(format!(
                "weights have {} values, expected n·k = {n} × {k}",
                w.len()
            )));
        }
        if bias.len() != n {
            return Err(err(format!(
                "bias has {} values, expected n = {n}",
                bias.len()
            )));
        }
        let panels = n.div_ceil(NR);
        let len = panels
            .checked_mul(NR * k)
            .and_then(|v| v.checked_add(16))
            .ok_or_else(|| err(format!("packed size overflows ({n} × {k})")))?;
        let mut buf = vec![0.0f32; len];
        // 16 spare floats let the panels start on a 64-byte boundary.
        let off = match buf.as_ptr().align_offset(64) {
            o if o < 16 => o,
            _ => 0,
        };
        for (j, wrow) in w.chunks_exact(k.max(1)).take(n).enumerate() {
            let base = off + (j / NR) * NR * k + j % NR;
            for (p, &v) in wrow.iter().enumerate() {
                buf[base + p * NR] = v;
            }
        }
        let mut padded = vec![0.0f32; panels * NR];
        padded[..n].copy_from_slice(bias);
        Ok(PackedF32 {
            buf,
            off,
            bias: padded,
            n,
            k,
        })
    }

    /// Output features.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes held (for memory reports).
    pub fn bytes(&self) -> usize {
        (self.buf.capacity() + self.bias.capacity()) * std::mem::size_of::<f32>()
            + std::mem::size_of::<Self>()
    }

    /// `out = x[m×k] · Wᵀ + bias`; `out` is resized to `m·n` (its capacity is reused).
    /// `x` must hold exactly `m·k` values.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut Vec<f32>) -> Result<(), KernelError> {
        self.matmul_with(Path::detected(), x, m, out)
    }

    /// [`PackedF32::matmul`] on a chosen kernel path (tests and benchmarks compare paths).
    pub fn matmul_with(
        &self,
        path: Path,
        x: &[f32],
        m: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), KernelError> {
        if !path.supported() {
            return Err(err(format!("{path:?} is not supported by this CPU")));
        }
        let mk = m
            .checked_mul(self.k)
            .ok_or_else(|| err(format!("m·k overflows ({m} × {})", self.k)))?;
        if x.len() != mk {
            return Err(err(format!(
                "x has {} values, expected m·k = {m} × {}",
                x.len(),
                self.k
            )));
        }
        let mn = m
            .checked_mul(self.n)
            .ok_or_else(|| err(format!("m·n overflows ({m} × {})", self.n)))?;
        out.clear();
        out.resize(mn, 0.0);
        if mn == 0 {
            return Ok(());
        }
        let panels = self.n.div_ceil(NR);
        let mr = match path {
            Path::Avx512 => MR_512,
            Path::Avx2 => MR_256,
            Path::Portable => MR_PORTABLE,
        };
        // Row blocks are fixed for the whole call so that packed x and the tasks agree.
        let blocks: Vec<(usize, usize)> = row_blocks(0..m, mr).collect();
        let threads = rayon::current_num_threads();
        let work = mn.saturating_mul(self.k);
        let dst = OutPtr(out.as_mut_ptr());
        with_scratch(|scratch| {
            // The SIMD kernels read x block-interleaved (see `pack_x`); a single row already
            // is in that layout.
            let xs: &[f32] = if path != Path::Portable && m > 1 {
                pack_x(x, self.k, &blocks, scratch);
                scratch
            } else {
                x
            };
            if threads > 1 && work >= PAR_MIN_WORK {
                let tasks = split(blocks.len(), panels, threads);
                tasks.into_par_iter().for_each(|(bs, cols)| {
                    // SAFETY: `out` holds m·n values; the tasks' (row blocks, panels)
                    // rectangles are disjoint, so no two threads write the same element, and
                    // `out` outlives the parallel loop.
                    unsafe { self.run(path, xs, dst.get(), &blocks[bs], cols) }
                });
            } else {
                // SAFETY: `out` holds m·n values; the blocks cover rows 0..m and the panels
                // all columns.
                unsafe { self.run(path, xs, dst.get(), &blocks, 0..panels) }
            }
        });
        Ok(())
    }

    /// Compute the row blocks `blocks` × panels `cols` of the product into `out` (m × n
    /// row-major).
    ///
    /// # Safety
    /// `x` has `m·k` values (block-interleaved by `pack_x` for the SIMD paths when m > 1),
    /// `blocks` are consecutive `(first row, rows)` pairs inside 0..m of at most the path's
    /// row block, `cols.end ≤ n.div_ceil(NR)`, `out` points to `m·n` writable floats, and
    /// `path` is supported by the CPU.
    unsafe fn run(
        &self,
        path: Path,
        x: &[f32],
        out: *mut f32,
        blocks: &[(usize, usize)],
        cols: Range<usize>,
    ) {
        #[cfg(target_arch = "x86_64")]
        match path {
            // SAFETY: forwarded contract; the caller checked that AVX-512F is present.
            Path::Avx512 => return unsafe { x86::block_512(self, x, out, blocks, cols) },
            // SAFETY: forwarded contract; the caller checked that AVX2 and FMA are present.
            Path::Avx2 => return unsafe { x86::block_256(self, x, out, blocks, cols) },
            Path::Portable => {}
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = path; // only the portable kernel exists here
        let rows = match (blocks.first(), blocks.last()) {
            (Some(&(first, _)), Some(&(last, r))) => first..last + r,
            _ => 0..0,
        };
        // SAFETY: forwarded contract.
        unsafe { self.block_portable(x, out, rows, cols) }
    }

    /// Panel `q` (NR·k floats).
    fn panel(&self, q: usize) -> &[f32] {
        let start = self.off + q * NR * self.k;
        &self.buf[start..start + NR * self.k]
    }

    /// Portable kernel: blocks of up to `MR_PORTABLE` rows × one panel.
    ///
    /// # Safety
    /// As [`PackedF32::run`].
    unsafe fn block_portable(
        &self,
        x: &[f32],
        out: *mut f32,
        rows: Range<usize>,
        cols: Range<usize>,
    ) {
        let (n, k) = (self.n, self.k);
        for q in cols {
            let panel = self.panel(q);
            let bias = &self.bias[q * NR..q * NR + NR];
            let width = NR.min(n - q * NR);
            let mut i0 = rows.start;
            while i0 < rows.end {
                let r = MR_PORTABLE.min(rows.end - i0);
                let mut acc = [[0.0f32; NR]; MR_PORTABLE];
                for a in acc.iter_mut().take(r) {
                    a.copy_from_slice(bias);
                }
                for (p, wrow) in panel.chunks_exact(NR).enumerate() {
                    for (i, a) in acc.iter_mut().enumerate().take(r) {
                        let xv = x[(i0 + i) * k + p];
                        for (c, &wv) in a.iter_mut().zip(wrow) {
                            *c = xv.mul_add(wv, *c);
                        }
                    }
                }
                for (i, a) in acc.iter().enumerate().take(r) {
                    // SAFETY: row i0 + i < m and columns q·NR .. q·NR + width ≤ n, so the
                    // destination lies inside the m·n output; only this block writes it.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out.add((i0 + i) * n + q * NR), width)
                    };
                    dst.copy_from_slice(&a[..width]);
                }
                i0 += r;
            }
        }
    }
}

/// Split the product into (row blocks, panels) rectangles for the thread pool: whole groups
/// of panels first, and row blocks too when there are too few panels to keep every thread busy.
fn split(blocks: usize, panels: usize, threads: usize) -> Vec<(Range<usize>, Range<usize>)> {
    let want = threads * 4;
    let per = panels.div_ceil(want).next_multiple_of(GROUP).max(GROUP);
    let col_tasks = panels.div_ceil(per);
    let row_tasks = if col_tasks >= want {
        1
    } else {
        want.div_ceil(col_tasks).min(blocks).max(1)
    };
    let blocks_per = blocks.div_ceil(row_tasks).max(1);
    let mut tasks = Vec::with_capacity(row_tasks * col_tasks);
    for b0 in (0..blocks).step_by(blocks_per) {
        for c0 in (0..panels).step_by(per) {
            tasks.push((
                b0..(b0 + blocks_per).min(blocks),
                c0..(c0 + per).min(panels),
            ));
        }
    }
    tasks
}

/// Lay x out block-interleaved: for the row block `(i0, r)`, element (i0 + i, p) goes to
/// `i0·k + p·r + i`, so a kernel step reads its r values of x from one place.
fn pack_x(x: &[f32], k: usize, blocks: &[(usize, usize)], buf: &mut Vec<f32>) {
    buf.clear();
    buf.resize(x.len(), 0.0);
    for &(i0, r) in blocks {
        let (src, dst) = (&x[i0 * k..(i0 + r) * k], &mut buf[i0 * k..(i0 + r) * k]);
        for (i, row) in src.chunks_exact(k.max(1)).enumerate() {
            for (p, &v) in row.iter().enumerate() {
                dst[p * r + i] = v;
            }
        }
    }
}

/// Run `f` with this thread's reusable scratch buffer (a fresh one if it is already in use,
/// e.g. by a call that a waiting rayon worker picked up).
fn with_scratch<T>(f: impl FnOnce(&mut Vec<f32>) -> T) -> T {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| {
        let mut fresh = Vec::new();
        let mut guard = cell.try_borrow_mut();
        let buf = match guard {
            Ok(ref mut b) => &mut **b,
            Err(_) => &mut fresh,
        };
        let v = f(buf);
        // Do not keep an encoder-sized buffer alive for the rest of the thread's life.
        if buf.capacity() > SCRATCH_KEEP {
            *buf = Vec::new();
        }
        v
    })
}

/// Balanced row blocks: `len` rows cut into the fewest blocks of at most `max` rows.
fn row_blocks(rows: Range<usize>, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let len = rows.end - rows.start;
    let blocks = len.div_ceil(max).max(1);
    let (base, extra) = (len / blocks, len % blocks);
    (0..blocks).scan(rows.start, move |at, b| {
        let r = base + usize::from(b < extra);
        let start = *at;
        *at += r;
        (r > 0).then_some((start, r))
    })
}

/// The output pointer shared by the parallel tasks (each writes its own rectangle).
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements (see `matmul_with`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}
impl OutPtr {
    // A method (not a field access) so closures capture the whole Send + Sync wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

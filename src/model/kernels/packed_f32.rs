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
mod x86 {
    use super::{PackedF32, GROUP, MR_256, MR_512, NR};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Rows per chunk: a chunk of x (MC × KC floats) stays in L2 while W streams past it.
    const MC: usize = 128;
    /// k steps per block; partial sums go through `out` between blocks, which keeps the
    /// per-element fma order (and so the bits) unchanged.
    const KC: usize = 512;

    /// One microkernel call: a block of rows × columns over the k steps `p0 .. p0 + kc`.
    struct Tile {
        /// x at (first row of the block, p0), block-interleaved: (i, p) at `x + p·R + i`.
        x: *const f32,
        /// Packed W at (first panel, p0) plus a column offset for AVX2 half panels.
        w: *const f32,
        /// Floats between consecutive panels (NR·k).
        wstride: usize,
        /// k steps in this call.
        kc: usize,
        /// Start from the bias (first k block) or from the partial sums already in `out`.
        first: bool,
        /// Padded bias at the tile's first column.
        bias: *const f32,
        /// Output at the tile's first row and column (row stride `ldo`).
        out: *mut f32,
        ldo: usize,
        /// Valid output columns from the tile's first one (the rest are padding).
        cols: usize,
        /// Same place in the next panel group, prefetched while this tile runs; null = none.
        pf: *const f32,
    }

    /// AVX-512F microkernel: R rows × P panels (2·P zmm per row).
    ///
    /// # Safety
    /// AVX-512F present; `t.x` has R·`t.kc` floats; `t.w` has P
    /// panels `t.wstride` apart with `t.kc` rows of NR floats each; `t.bias` has P·NR floats;
    /// `t.out` has R rows (stride `t.ldo`) with `min(t.cols, P·NR)` valid floats each (read
    /// back when `!t.first`).
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_512<const R: usize, const P: usize>(t: &Tile) {
        let mut acc = [[[_mm512_setzero_ps(); 2]; P]; R];
        for (i, row) in acc.iter_mut().enumerate() {
            for (q, pair) in row.iter_mut().enumerate() {
                for (h, a) in pair.iter_mut().enumerate() {
                    let col = q * NR + h * 16;
                    // SAFETY: bias has P·NR floats; out row i has t.cols valid floats from
                    // the tile start and the masked load touches only col + lane < t.cols.
                    *a = unsafe {
                        if t.first {
                            _mm512_loadu_ps(t.bias.add(col))
                        } else if col >= t.cols {
                            _mm512_setzero_ps()
                        } else {
                            let dst = t.out.add(i * t.ldo + col);
                            let valid = t.cols - col;
                            if valid >= 16 {
                                _mm512_loadu_ps(dst)
                            } else {
                                _mm512_maskz_loadu_ps((1u16 << valid) - 1, dst)
                            }
                        }
                    };
                }
            }
        }
        let mut wp = t.w;
        let mut xp = t.x;
        let mut pf = t.pf;
        for _ in 0..t.kc {
            let mut wv = [[_mm512_setzero_ps(); 2]; P];
            for (q, pair) in wv.iter_mut().enumerate() {
                for (h, v) in pair.iter_mut().enumerate() {
                    // SAFETY: row p < kc of panel q is NR floats at wp + q·wstride.
                    *v = unsafe { _mm512_loadu_ps(wp.add(q * t.wstride + h * 16)) };
                }
            }
            if !pf.is_null() {
                for q in 0..P {
                    // Prefetches never fault; the address is computed with wrapping
                    // arithmetic and only hints the cache.
                    let a = pf.wrapping_add(q * t.wstride).cast::<i8>();
                    _mm_prefetch::<_MM_HINT_T1>(a);
                    _mm_prefetch::<_MM_HINT_T1>(a.wrapping_add(64));
                }
                pf = pf.wrapping_add(NR);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                // SAFETY: x[i, p] with i < R and p < kc.
                let xb = _mm512_set1_ps(unsafe { *xp.add(i) });
                for (pair, w) in row.iter_mut().zip(&wv) {
                    for (a, &v) in pair.iter_mut().zip(w) {
                        *a = _mm512_fmadd_ps(xb, v, *a);
                    }
                }
            }
            // SAFETY: at most one past the last step of this block, still inside the buffers.
            unsafe {
                wp = wp.add(NR);
                xp = xp.add(R);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (q, pair) in row.iter().enumerate() {
                for (h, &a) in pair.iter().enumerate() {
                    let col = q * NR + h * 16;
                    if col >= t.cols {
                        continue;
                    }
                    // SAFETY: row i < R; only lanes with col + lane < t.cols are written.
                    unsafe {
                        let dst = t.out.add(i * t.ldo + col);
                        if col + 16 <= t.cols {
                            _mm512_storeu_ps(dst, a);
                        } else {
                            _mm512_mask_storeu_ps(dst, (1u16 << (t.cols - col)) - 1, a);
                        }
                    }
                }
            }
        }
    }

    /// AVX2+FMA microkernel: R rows × V ymm vectors (8 columns each); vector v sits at
    /// `w + (v / 4)·wstride + (v % 4)·8` (V ≤ 2 may start half a panel in).
    ///
    /// # Safety
    /// AVX2 and FMA present; otherwise as [`tile_512`] with V·8 columns.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_256<const R: usize, const V: usize>(t: &Tile) {
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        for (i, row) in acc.iter_mut().enumerate() {
            for (v, a) in row.iter_mut().enumerate() {
                let col = v * 8;
                let mut tmp = [0.0f32; 8];
                if t.first {
                    // SAFETY: the padded bias holds V·8 floats from t.bias.
                    unsafe { std::ptr::copy_nonoverlapping(t.bias.add(col), tmp.as_mut_ptr(), 8) };
                } else if col < t.cols {
                    let valid = (t.cols - col).min(8);
                    // SAFETY: out row i has `valid` floats from col (col + valid ≤ t.cols).
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            t.out.add(i * t.ldo + col),
                            tmp.as_mut_ptr(),
                            valid,
                        )
                    };
                }
                // SAFETY: tmp holds 8 floats.
                *a = unsafe { _mm256_loadu_ps(tmp.as_ptr()) };
            }
        }
        let mut wp = t.w;
        let mut xp = t.x;
        let mut pf = t.pf;
        for _ in 0..t.kc {
            let mut wv = [_mm256_setzero_ps(); V];
            for (v, w) in wv.iter_mut().enumerate() {
                // SAFETY: row p < kc of the panel holding vector v, inside the packed buffer.
                *w = unsafe { _mm256_loadu_ps(wp.add((v / 4) * t.wstride + (v % 4) * 8)) };
            }
            if !pf.is_null() {
                for v in (0..V).step_by(2) {
                    // Prefetch hints never fault (wrapping address arithmetic); one per line.
                    let a = pf
                        .wrapping_add((v / 4) * t.wstride + (v % 4) * 8)
                        .cast::<i8>();
                    _mm_prefetch::<_MM_HINT_T1>(a);
                }
                pf = pf.wrapping_add(NR);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                // SAFETY: x[i, p] with i < R and p < kc.
                let xb = _mm256_set1_ps(unsafe { *xp.add(i) });
                for (a, &w) in row.iter_mut().zip(&wv) {
                    *a = _mm256_fmadd_ps(xb, w, *a);
                }
            }
            // SAFETY: at most one past the last step of this block.
            unsafe {
                wp = wp.add(NR);
                xp = xp.add(R);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &a) in row.iter().enumerate() {
                let col = v * 8;
                if col >= t.cols {
                    continue;
                }
                let valid = (t.cols - col).min(8);
                let mut tmp = [0.0f32; 8];
                // SAFETY: tmp holds 8 floats; out row i < R has `valid` writable floats from
                // col (col + valid ≤ t.cols).
                unsafe {
                    _mm256_storeu_ps(tmp.as_mut_ptr(), a);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), t.out.add(i * t.ldo + col), valid);
                }
            }
        }
    }

    macro_rules! dispatch {
        ($kern:ident, $r:expr, $t:expr, $c:literal, [$($n:literal),*]) => {
            match $r {
                $($n => $kern::<$n, $c>($t),)*
                _ => {}
            }
        };
    }

    /// # Safety
    /// As [`tile_512`], with `1 ≤ r ≤ MR_512` and `p ∈ {1, 2, 4}` (r ≤ 6 for p = 2, r ≤ 3 for
    /// p = 4).
    #[target_feature(enable = "avx512f")]
    unsafe fn call_512(r: usize, p: usize, t: &Tile) {
        // SAFETY: forwarded contract.
        unsafe {
            match p {
                4 => dispatch!(tile_512, r, t, 4, [1, 2, 3]),
                2 => dispatch!(tile_512, r, t, 2, [1, 2, 3, 4, 5, 6]),
                _ => dispatch!(
                    tile_512,
                    r,
                    t,
                    1,
                    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
                ),
            }
        }
    }

    /// # Safety
    /// As [`tile_256`], with `1 ≤ r ≤ MR_256` and `v ∈ {2, 4, 8}` (r ≤ 2 for v = 4, r = 1 for
    /// v = 8).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn call_256(r: usize, v: usize, t: &Tile) {
        // SAFETY: forwarded contract.
        unsafe {
            match v {
                8 => dispatch!(tile_256, r, t, 8, [1]),
                4 => dispatch!(tile_256, r, t, 4, [1, 2]),
                _ => dispatch!(tile_256, r, t, 2, [1, 2, 3, 4, 5, 6]),
            }
        }
    }

    /// Panels per AVX-512 tile for a row block of r rows (≤ 28 accumulators, and enough
    /// independent chains when r is small).
    fn panels_for(r: usize) -> usize {
        match r {
            0..=3 => 4,
            4..=6 => 2,
            _ => 1,
        }
    }

    /// Vectors per AVX2 tile for a row block of r rows.
    fn vecs_for(r: usize) -> usize {
        match r {
            1 => 8,
            2 => 4,
            _ => 2,
        }
    }

    /// Cache blocking shared by both SIMD paths: chunks of row blocks of about `MC` rows
    /// (their x stays in L2), k blocks of `KC`, groups of `GROUP` panels (read from memory
    /// once per chunk and k block, the next group prefetched while the first row block runs),
    /// then the row blocks. `tile(i0, r, panels, p0, kc, first, prefetch)` runs one row block
    /// over the group's panels.
    ///
    /// # Safety
    /// As `PackedF32::run`; `tile` must stay inside the rectangle it is given.
    unsafe fn blocked(
        pk: &PackedF32,
        blocks: &[(usize, usize)],
        cols: Range<usize>,
        mr: usize,
        mut tile: impl FnMut(usize, usize, Range<usize>, usize, usize, bool, bool),
    ) {
        let k = pk.k;
        for chunk in blocks.chunks((MC / mr).max(1)) {
            let mut p0 = 0;
            loop {
                let kc = KC.min(k - p0);
                let mut g = cols.start;
                while g < cols.end {
                    let gend = (g + GROUP).min(cols.end);
                    // Only worth it when several row blocks reuse the group: with one, W just
                    // streams and the hardware prefetcher already follows it.
                    let prefetch_next = gend < cols.end && chunk.len() > 1;
                    for (b, &(i0, r)) in chunk.iter().enumerate() {
                        tile(i0, r, g..gend, p0, kc, p0 == 0, prefetch_next && b == 0);
                    }
                    g = gend;
                }
                p0 += kc;
                if p0 >= k {
                    break;
                }
            }
        }
    }

    /// # Safety
    /// As `PackedF32::run`, with AVX-512F present.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block_512(
        pk: &PackedF32,
        x: &[f32],
        out: *mut f32,
        blocks: &[(usize, usize)],
        cols: Range<usize>,
    ) {
        let (n, k) = (pk.n, pk.k);
        let base = pk.buf[pk.off..].as_ptr();
        let run = |i0: usize,
                   r: usize,
                   grp: Range<usize>,
                   p0: usize,
                   kc: usize,
                   first: bool,
                   pf: bool| {
            let mut q = grp.start;
            while q < grp.end {
                let mut p = panels_for(r);
                while q + p > grp.end {
                    p /= 2;
                }
                let t = Tile {
                    // SAFETY (pointers): block (i0, r) owns x[i0·k .. (i0 + r)·k] and
                    // p0·r ≤ r·k; panel q < n.div_ceil(NR) and p0 ≤ k keep w inside the packed
                    // buffer; column q·NR < n keeps bias (padded) and out (row i0 < m) inside.
                    x: unsafe { x.as_ptr().add(i0 * k + p0 * r) },
                    w: unsafe { base.add(q * NR * k + p0 * NR) },
                    wstride: NR * k,
                    kc,
                    first,
                    bias: unsafe { pk.bias.as_ptr().add(q * NR) },
                    out: unsafe { out.add(i0 * n + q * NR) },
                    ldo: n,
                    cols: n - q * NR,
                    pf: if pf {
                        base.wrapping_add((q + GROUP) * NR * k + p0 * NR)
                    } else {
                        std::ptr::null()
                    },
                };
                // SAFETY: r ≤ MR_512 rows from i0 are inside x and out; panels q .. q + p
                // exist with k rows each, p0 + kc ≤ k; the bias is padded to whole panels;
                // stores stop at column n.
                unsafe { call_512(r, p, &t) };
                q += p;
            }
        };
        // SAFETY: forwarded contract; `run` stays inside its rectangle.
        unsafe { blocked(pk, blocks, cols, MR_512, run) }
    }

    /// # Safety
    /// As `PackedF32::run`, with AVX2 and FMA present.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_256(
        pk: &PackedF32,
        x: &[f32],
        out: *mut f32,
        blocks: &[(usize, usize)],
        cols: Range<usize>,
    ) {
        let (n, k) = (pk.n, pk.k);
        let base = pk.buf[pk.off..].as_ptr();
        let run = |i0: usize,
                   r: usize,
                   grp: Range<usize>,
                   p0: usize,
                   kc: usize,
                   first: bool,
                   pf: bool| {
            // Columns of the group in units of 8 (ymm vectors), up to the last valid one.
            let gend = grp.end * NR / 8;
            let last = (grp.end * NR).min(n).div_ceil(8);
            let mut v0 = grp.start * NR / 8;
            while v0 < last {
                let mut v = vecs_for(r);
                // Wide tiles start on a panel and stay inside the group.
                while v > 2 && (!v0.is_multiple_of(4) || v0 + v > gend) {
                    v /= 2;
                }
                let (q, within) = (v0 / 4, (v0 % 4) * 8);
                let t = Tile {
                    // SAFETY (pointers): block (i0, r) owns x[i0·k .. (i0 + r)·k] and
                    // p0·r ≤ r·k; panel q of the group and p0 ≤ k keep w inside the packed
                    // buffer; column v0·8 < n keeps bias (padded) and out (row i0 < m) inside.
                    x: unsafe { x.as_ptr().add(i0 * k + p0 * r) },
                    w: unsafe { base.add(q * NR * k + p0 * NR + within) },
                    wstride: NR * k,
                    kc,
                    first,
                    bias: unsafe { pk.bias.as_ptr().add(v0 * 8) },
                    out: unsafe { out.add(i0 * n + v0 * 8) },
                    ldo: n,
                    cols: n - v0 * 8,
                    pf: if pf {
                        base.wrapping_add((q + GROUP) * NR * k + p0 * NR + within)
                    } else {
                        std::ptr::null()
                    },
                };
                // SAFETY: r ≤ MR_256 rows from i0 are inside x and out; the v vectors lie
                // in padded panels of the group with k rows each, p0 + kc ≤ k; stores stop
                // at column n.
                unsafe { call_256(r, v, &t) };
                v0 += v;
            }
        };
        // SAFETY: forwarded contract; `run` stays inside its rectangle.
        unsafe { blocked(pk, blocks, cols, MR_256, run) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1).
    fn fill(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The contract, element by element: bias then fma over p in order.
    fn contract(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = b[j];
                for p in 0..k {
                    acc = x[i * k + p].mul_add(w[j * k + p], acc);
                }
                out[i * n + j] = acc;
            }
        }
        out
    }

    fn reference_f64(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = f64::from(b[j]);
                for p in 0..k {
                    acc += f64::from(x[i * k + p]) * f64::from(w[j * k + p]);
                }
                out[i * n + j] = acc;
            }
        }
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    fn run(pk: &PackedF32, path: Path, x: &[f32], m: usize) -> Vec<f32> {
        let mut out = Vec::new();
        let res = pk.matmul_with(path, x, m, &mut out);
        assert!(res.is_ok(), "{res:?}");
        out
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
            Ok(p) => p,
            Err(e) => panic!("thread pool: {e}"),
        }
    }

    const SHAPES: &[(usize, usize)] = &[
        (1, 1),
        (7, 3),
        (33, 513),
        (1003, 64),
        (1, 17),
        (64, 1),
        (96, 40),
        (130, 257),
    ];

    #[test]
    fn every_path_matches_the_fma_contract_bitwise() {
        for &(n, k) in SHAPES {
            let w = fill(n * k, 1 + n as u64);
            let b = fill(n, 2 + k as u64);
            let pk = PackedF32::pack(&w, &b, n, k).unwrap_or_else(|e| panic!("{e}"));
            for m in [1, 2, 3, 5, 7, 13, 14, 15, 29] {
                let x = fill(m * k, 3 + m as u64);
                let want = bits(&contract(&x, &w, &b, m, n, k));
                for path in Path::available() {
                    let got = run(&pk, path, &x, m);
                    assert_eq!(bits(&got), want, "{path:?} n={n} k={k} m={m}");
                }
            }
        }
    }

    #[test]
    fn close_to_f64_reference() {
        for &(n, k) in &[(58, 512), (1003, 33), (33, 2048), (7, 1)] {
            let w = fill(n * k, 11);
            let b = fill(n, 12);
            let pk = PackedF32::pack(&w, &b, n, k).unwrap_or_else(|e| panic!("{e}"));
            let m = 9;
            let x = fill(m * k, 13);
            let want = reference_f64(&x, &w, &b, m, n, k);
            // Scale of the terms, so cancellation does not make the bound meaningless.
            let mag: Vec<f64> = (0..m * n)
                .map(|e| {
                    let (i, j) = (e / n, e % n);
                    f64::from(b[j].abs())
                        + (0..k)
                            .map(|p| f64::from((x[i * k + p] * w[j * k + p]).abs()))
                            .sum::<f64>()
                })
                .collect();
            for path in Path::available() {
                let got = run(&pk, path, &x, m);
                for e in 0..m * n {
                    let d = (f64::from(got[e]) - want[e]).abs();
                    assert!(
                        d <= 1e-4 * want[e].abs().max(1e-3) || d <= 1e-6 * mag[e],
                        "{path:?} n={n} k={k} elem {e}: {} vs {}",
                        got[e],
                        want[e]
                    );
                }
            }
        }
    }

    #[test]
    fn row_alone_equals_row_in_batch_at_every_position() {
        let (n, k) = (103, 70);
        let w = fill(n * k, 21);
        let b = fill(n, 22);
        let pk = PackedF32::pack(&w, &b, n, k).unwrap_or_else(|e| panic!("{e}"));
        for m in [37, 128] {
            let x = fill(m * k, 23 + m as u64);
            for path in Path::available() {
                let batch = run(&pk, path, &x, m);
                for i in 0..m {
                    let alone = run(&pk, path, &x[i * k..(i + 1) * k], 1);
                    assert_eq!(
                        bits(&alone),
                        bits(&batch[i * n..(i + 1) * n]),
                        "{path:?} m={m} row {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn one_and_two_threads_agree_bitwise() {
        // Large enough to cross the threading threshold, odd n for edge panels.
        for &(m, n, k) in &[
            (37, 1003, 64),
            (1, 2049, 512),
            (128, 70, 200),
            (300, 33, 40),
        ] {
            assert!(m * n * k >= PAR_MIN_WORK);
            let w = fill(n * k, 31);
            let b = fill(n, 32);
            let x = fill(m * k, 33);
            let pk = PackedF32::pack(&w, &b, n, k).unwrap_or_else(|e| panic!("{e}"));
            let want = bits(&contract(&x, &w, &b, m, n, k));
            for path in Path::available() {
                let one = pool(1).install(|| run(&pk, path, &x, m));
                let two = pool(2).install(|| run(&pk, path, &x, m));
                assert_eq!(bits(&one), want, "{path:?} 1 thread {m}×{n}×{k}");
                assert_eq!(bits(&two), want, "{path:?} 2 threads {m}×{n}×{k}");
            }
            // The default entry point follows the same contract.
            let mut out = vec![1.0; 5];
            let res = pool(2).install(|| pk.matmul(&x, m, &mut out));
            assert!(res.is_ok());
            assert_eq!(bits(&out), want);
        }
    }

    #[test]
    fn split_covers_every_element_once() {
        for &(m, panels, threads) in &[(1, 1, 2), (1, 16, 2), (10, 1816, 2), (72, 16, 2), (5, 3, 8)]
        {
            let mut seen = vec![0u8; m * panels];
            for (rows, cols) in split(m, panels, threads) {
                for i in rows {
                    for q in cols.clone() {
                        seen[i * panels + q] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{m} {panels} {threads}");
        }
        for len in 0..40 {
            for max in [1, 6, 14] {
                let blocks: Vec<_> = row_blocks(3..3 + len, max).collect();
                assert_eq!(blocks.iter().map(|b| b.1).sum::<usize>(), len);
                assert!(blocks.iter().all(|b| b.1 >= 1 && b.1 <= max));
                let mut at = 3;
                for (s, r) in blocks {
                    assert_eq!(s, at);
                    at += r;
                }
            }
        }
    }

    #[test]
    fn env_value_selects_the_path() {
        assert_eq!(Path::choose("portable"), Path::Portable);
        assert_eq!(Path::choose(" Portable\n"), Path::Portable);
        let best = Path::choose("");
        assert!(best.supported());
        assert_eq!(Path::available().last(), Some(&best));
        assert!(Path::choose("avx2").supported());
        assert!(Path::detected().supported());
    }

    #[test]
    fn empty_batch_gives_empty_output() {
        let pk = PackedF32::pack(&fill(21, 1), &fill(7, 2), 7, 3).unwrap_or_else(|e| panic!("{e}"));
        for path in Path::available() {
            let mut out = vec![3.0; 10];
            assert!(pk.matmul_with(path, &[], 0, &mut out).is_ok());
            assert!(out.is_empty());
        }
    }

    #[test]
    fn k_zero_gives_the_bias() {
        let b = fill(40, 5);
        let pk = PackedF32::pack(&[], &b, 40, 0).unwrap_or_else(|e| panic!("{e}"));
        for path in Path::available() {
            let out = run(&pk, path, &[], 3);
            assert_eq!(
                bits(&out),
                bits(&[b.clone(), b.clone(), b.clone()].concat())
            );
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let (n, k) = (7, 3);
        assert!(PackedF32::pack(&fill(20, 1), &fill(7, 2), n, k).is_err());
        assert!(PackedF32::pack(&fill(21, 1), &fill(6, 2), n, k).is_err());
        assert!(PackedF32::pack(&[], &[], usize::MAX, 2).is_err());
        let pk = PackedF32::pack(&fill(21, 1), &fill(7, 2), n, k).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((pk.n(), pk.k()), (7, 3));
        assert!(pk.bytes() >= 32 * 3 * 4);
        let mut out = Vec::new();
        for path in Path::available() {
            assert!(pk.matmul_with(path, &fill(8, 3), 3, &mut out).is_err());
            assert!(pk.matmul_with(path, &fill(10, 3), 3, &mut out).is_err());
            assert!(pk
                .matmul_with(path, &fill(3, 3), usize::MAX, &mut out)
                .is_err());
        }
        assert!(pk.matmul(&fill(4, 3), 1, &mut out).is_err());
    }

    #[test]
    fn special_values_follow_the_contract() {
        let (n, k, m) = (40, 5, 3);
        let mut w = fill(n * k, 41);
        w[3] = f32::INFINITY;
        w[k * 33 + 1] = f32::NAN;
        let mut x = fill(m * k, 42);
        x[k + 2] = 1e30;
        let b = fill(n, 43);
        let pk = PackedF32::pack(&w, &b, n, k).unwrap_or_else(|e| panic!("{e}"));
        // NaN payloads are not part of the contract: compare every NaN as one value.
        let canon = |v: &[f32]| -> Vec<u32> {
            v.iter()
                .map(|f| if f.is_nan() { u32::MAX } else { f.to_bits() })
                .collect()
        };
        let want = contract(&x, &w, &b, m, n, k);
        assert!(want.iter().any(|f| f.is_nan()) && want.iter().any(|f| f.is_infinite()));
        for path in Path::available() {
            assert_eq!(canon(&run(&pk, path, &x, m)), canon(&want), "{path:?}");
        }
    }
}

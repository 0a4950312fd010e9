//! Int8 weights for the CPU linears: `out[m×n] = x[m×k] · Wᵀ + b` with W quantised once per
//! output feature and x quantised per row on every call (what CTranslate2 calls
//! `compute_type=int8`).
//!
//! Every path (AVX-512 VNNI, AVX2, portable) computes the same exact i32 dot products and then
//! applies the same scalar-equivalent epilogue `((acc as f32) * sx_i) * sw_j + b_j` (no fused
//! multiply-add anywhere), so the f32 outputs are bitwise identical across paths, thread counts
//! and batch positions.
//!
//! Weight layout: features are grouped in panels of [`PANEL`] = 64; inside a panel, k runs in
//! groups of 4 and each group stores 64 features × 4 consecutive k bytes (256 bytes), which is
//! what `vpdpbusd` (4 zmm of 16 features) and the AVX2 `maddubs` sequence (8 ymm of 8 features)
//! both consume. k is padded with zeros to a multiple of 4 and n to a multiple of 64.
//!
//! Non-finite activations: a row of x holding NaN or ±inf gets all its outputs set to NaN
//! (its scale becomes NaN and its quantised values 0); other rows are unaffected.
//!
//! `TIDINGS_KERNELS=portable` forces the portable path, `TIDINGS_KERNELS=avx2` the AVX2 path
//! (when the CPU has AVX2).

use std::fmt;
use std::sync::OnceLock;

/// Output features per packed panel.
const PANEL: usize = 64;
/// Bytes per group of 4 k-values in a panel (64 features × 4).
const GROUP_BYTES: usize = PANEL * 4;
/// Largest k whose dot product Σ q_x·q_w (|q| ≤ 127) always fits in i32, so every path is exact.
pub const MAX_K: usize = (i32::MAX as usize) / (127 * 127);
/// Rows per cache block of x: keeps a block of quantised activations in L2 while the panels
/// stream past it.
const ROW_CHUNK: usize = 192;
/// Work (m·n·k) from which a call is split over the rayon pool, as the f32 path does.
const PAR_THRESHOLD: usize = 1 << 18;
/// 1.5·2^23: adding it to |v| ≤ 2^22 rounds v to the nearest integer (ties to even) and leaves
/// that integer in the low mantissa bits, so rounding needs no float→int conversion.
const ROUND_MAGIC: f32 = 12_582_912.0;
const ROUND_MAGIC_BITS: i32 = 0x4B40_0000;

/// Shape or value errors of the int8 kernels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// A buffer does not have the length the shapes call for.
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A shape product overflows `usize`, or k exceeds [`MAX_K`].
    TooLarge { what: &'static str },
    /// A weight is NaN or infinite (row index given).
    NonFiniteWeight { row: usize },
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::Length {
                what,
                expected,
                got,
            } => write!(f, "{what}: expected {expected} elements, got {got}"),
            KernelError::TooLarge { what } => write!(f, "{what}: shape too large"),
            KernelError::NonFiniteWeight { row } => {
                write!(f, "weight row {row} holds a NaN or infinite value")
            }
        }
    }
}

impl std::error::Error for KernelError {}

/// Which kernel family runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

impl Path {
    /// Whether this CPU can run the path.
    fn supported(self) -> bool {
        match self {
            Path::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Path::Vnni => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
        }
    }

    /// Rows per microkernel tile.
    fn mr(self) -> usize {
        match self {
            Path::Portable => 4,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => AVX2_MR,
            #[cfg(target_arch = "x86_64")]
            Path::Vnni => VNNI_MR,
        }
    }
}

/// The path chosen once per process: the best the CPU supports, unless `TIDINGS_KERNELS` says
/// otherwise.
fn active_path() -> Path {
    static PATH: OnceLock<Path> = OnceLock::new();
    *PATH.get_or_init(|| {
        let forced = std::env::var("TIDINGS_KERNELS").unwrap_or_default();
        if forced.eq_ignore_ascii_case("portable") {
            return Path::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if !forced.eq_ignore_ascii_case("avx2") && Path::Vnni.supported() {
                return Path::Vnni;
            }
            if Path::Avx2.supported() {
                return Path::Avx2;
            }
        }
        Path::Portable
    })
}

/// One 64-byte-aligned line of packed weights, so every zmm load of a panel is aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([i8; 64]);

/// Int8 weights of one linear layer, packed for the kernels.
#[derive(Clone)]
pub struct PackedI8 {
    n: usize,
    k: usize,
    /// k rounded up to a multiple of 4.
    kp: usize,
    /// n rounded up to a multiple of [`PANEL`].
    np: usize,
    /// Panels of `kp / 4` groups × 64 features × 4 bytes.
    w: Vec<Line>,
    /// Per-feature scale, `np` entries (0 in the padding).
    scale: Vec<f32>,
    /// Bias, `np` entries (0 in the padding).
    bias: Vec<f32>,
    /// −128·Σ_p q_w[j,p] per feature: the VNNI path feeds q_x + 128 as u8 and starts its
    /// accumulators here to cancel the offset. `np` entries.
    offset: Vec<i32>,
}

impl fmt::Debug for PackedI8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedI8")
            .field("n", &self.n)
            .field("k", &self.k)
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// Round `v` (|v| ≤ 2^22) to the nearest integer, ties to even, with float adds only.
#[inline(always)]
fn round_small(v: f32) -> i32 {
    (v + ROUND_MAGIC).to_bits() as i32 - ROUND_MAGIC_BITS
}

impl PackedI8 {
    /// Quantise `w`, (n, k) row-major as PyTorch stores (out, in), symmetrically per output
    /// feature: `scale_j = max|W[j,:]| / 127`, `q = round(W / scale)` (ties to even) in
    /// [−127, 127]. A row whose scale is 0 (all zeros, or so tiny that the scale underflows)
    /// is stored as zeros with scale 0.
    pub fn quantize(w: &[f32], bias: &[f32], n: usize, k: usize) -> Result<Self, KernelError> {
        let nk = n
            .checked_mul(k)
            .ok_or(KernelError::TooLarge { what: "n·k" })?;
        if k > MAX_K {
            return Err(KernelError::TooLarge { what: "k" });
        }
        if w.len() != nk {
            return Err(KernelError::Length {
                what: "weights",
                expected: nk,
                got: w.len(),
            });
        }
        if bias.len() != n {
            return Err(KernelError::Length {
                what: "bias",
                expected: n,
                got: bias.len(),
            });
        }
        let kp = k.div_ceil(4) * 4;
        let np = n.div_ceil(PANEL) * PANEL;
        let groups = kp / 4;
        let lines = np.checked_mul(kp).ok_or(KernelError::TooLarge {
            what: "packed weights",
        })? / 64;
        let mut packed = vec![Line([0; 64]); lines];
        let mut scale = vec![0.0f32; np];
        let mut bias_p = vec![0.0f32; np];
        let mut offset = vec![0i32; np];
        bias_p[..n].copy_from_slice(bias);
        let mut q_row = vec![0i8; kp];
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            if row.iter().any(|v| !v.is_finite()) {
                return Err(KernelError::NonFiniteWeight { row: j });
            }
            let amax = row.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let s = amax / 127.0;
            scale[j] = s;
            let mut sum = 0i32;
            for (q, &v) in q_row.iter_mut().zip(row) {
                *q = if s == 0.0 {
                    0
                } else {
                    (v / s).round_ties_even().clamp(-127.0, 127.0) as i8
                };
                sum += i32::from(*q);
            }
            offset[j] = -128 * sum;
            // Scatter into the panel layout: panel j/64, feature j%64, group p/4, byte p%4.
            let (panel, f) = (j / PANEL, j % PANEL);
            for (p, &q) in q_row.iter().enumerate() {
                let byte = (panel * groups + p / 4) * GROUP_BYTES + f * 4 + p % 4;
                packed[byte / 64].0[byte % 64] = q;
            }
        }
        Ok(PackedI8 {
            n,
            k,
            kp,
            np,
            w: packed,
            scale,
            bias: bias_p,
            offset,
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

    /// Heap bytes held (packed weights with padding, scales, bias, offsets).
    pub fn bytes(&self) -> usize {
        self.w.len() * std::mem::size_of::<Line>()
            + (self.scale.len() + self.bias.len()) * std::mem::size_of::<f32>()
            + self.offset.len() * std::mem::size_of::<i32>()
    }

    /// Quantised weight of feature `j` at input `p` (both in range).
    fn q(&self, j: usize, p: usize) -> i8 {
        let groups = self.kp / 4;
        let byte = ((j / PANEL) * groups + p / 4) * GROUP_BYTES + (j % PANEL) * 4 + p % 4;
        self.w[byte / 64].0[byte % 64]
    }

    /// The dequantised weights, (n, k) row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.n * self.k);
        for j in 0..self.n {
            for p in 0..self.k {
                out.push(f32::from(self.q(j, p)) * self.scale[j]);
            }
        }
        out
    }

    /// `out = x[m×k] · Wᵀ + bias`, x quantised per row on the fly (symmetric,
    /// `scale = max|x_i| / 127`; an all-zero row gives the bias; a row with NaN/±inf gives
    /// NaN). `x.len()` must be exactly `m·k`. `out` is resized to `m·n`, reusing its capacity.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut Vec<f32>) -> Result<(), KernelError> {
        self.matmul_with(active_path(), x, m, out)
    }

    fn matmul_with(
        &self,
        path: Path,
        x: &[f32],
        m: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), KernelError> {
        let mk = m
            .checked_mul(self.k)
            .ok_or(KernelError::TooLarge { what: "m·k" })?;
        let mn = m
            .checked_mul(self.n)
            .ok_or(KernelError::TooLarge { what: "m·n" })?;
        if x.len() != mk {
            return Err(KernelError::Length {
                what: "x",
                expected: mk,
                got: x.len(),
            });
        }
        // The quantised copy of x pads k to kp and m to whole tiles.
        m.checked_add(8)
            .and_then(|v| v.checked_mul(self.kp))
            .ok_or(KernelError::TooLarge { what: "m·k" })?;
        out.resize(mn, 0.0);
        if m == 0 || self.n == 0 {
            return Ok(());
        }
        let path = if path.supported() {
            path
        } else {
            Path::Portable
        };
        let threads = rayon::current_num_threads();
        let parallel = threads > 1 && mn.saturating_mul(self.k) >= PAR_THRESHOLD;
        let (xq, sx) = quantize_rows(path, x, m, self.k, self.kp, parallel);
        let dst = OutPtr(out.as_mut_ptr());
        let n_panels = self.np / PANEL;
        if parallel {
            // Up to four tasks per thread, but at least ~2^17 multiply-adds each so small
            // products do not drown in fork overhead: split the panels first (each task then
            // streams its own slice of W once), and the rows too when there are few panels.
            let mr = path.mr();
            let target = (mn.saturating_mul(self.k) >> 17).clamp(threads, 4 * threads);
            let pc = n_panels.min(target);
            let row_tiles = m.div_ceil(mr);
            let rc = row_tiles.min(target.div_ceil(pc)).max(1);
            use rayon::prelude::*;
            (0..rc * pc).into_par_iter().for_each(|t| {
                let (ri, pi) = (t / pc, t % pc);
                let rows =
                    (row_tiles * ri / rc * mr).min(m)..(row_tiles * (ri + 1) / rc * mr).min(m);
                let panels = n_panels * pi / pc..n_panels * (pi + 1) / pc;
                self.run_block(path, &xq, &sx, m, dst, rows, panels);
            });
        } else {
            self.run_block(path, &xq, &sx, m, dst, 0..m, 0..n_panels);
        }
        Ok(())
    }

    /// Compute the outputs of `rows` × the features of `panels`.
    #[allow(clippy::too_many_arguments)]
    fn run_block(
        &self,
        path: Path,
        xq: &[u8],
        sx: &[f32],
        m: usize,
        dst: OutPtr,
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
    ) {
        debug_assert!(rows.end <= m && panels.end <= self.np / PANEL);
        let mr = path.mr();
        let mut r0 = rows.start;
        while r0 < rows.end {
            let r1 = (r0 + ROW_CHUNK).min(rows.end);
            for panel in panels.clone() {
                let mut i = r0;
                while i < r1 {
                    let rows_here = mr.min(r1 - i);
                    self.tile(path, xq, sx, dst, i, rows_here, panel);
                    i += rows_here;
                }
            }
            r0 = r1;
        }
    }

    /// One microkernel call: rows `i..i + rows`, all 64 features of `panel`.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        path: Path,
        xq: &[u8],
        sx: &[f32],
        dst: OutPtr,
        i: usize,
        rows: usize,
        panel: usize,
    ) {
        let groups = self.kp / 4;
        let j0 = panel * PANEL;
        let cols = PANEL.min(self.n - j0);
        let wpanel =
            &self.w[panel * groups * (GROUP_BYTES / 64)..(panel + 1) * groups * (GROUP_BYTES / 64)];
        // `i` is a multiple of the path's tile height: tiles start at multiples of it.
        let mr = path.mr();
        let tix = i / mr;
        let a = &xq[tix * mr * self.kp..(tix + 1) * mr * self.kp];
        let t = Tile {
            a,
            ar: mr,
            kp: self.kp,
            w: wpanel,
            sx: &sx[i..i + rows],
            sw: &self.scale[j0..j0 + PANEL],
            bias: &self.bias[j0..j0 + PANEL],
            offset: &self.offset[j0..j0 + PANEL],
            // SAFETY: `i < m` and `j0 < n`, so the offset stays inside the m·n output.
            out: unsafe { dst.0.add(i * self.n + j0) },
            ldo: self.n,
            cols,
        };
        match path {
            Path::Portable => tile_portable(&t),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `path` was checked with `Path::supported` in `matmul_with`.
            Path::Avx2 => unsafe { x86::tile_avx2(&t) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, the CPU has AVX-512F/BW/VNNI.
            Path::Vnni => unsafe { x86::tile_vnni(&t) },
        }
    }
}

/// The output pointer shared by the rayon tasks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks write disjoint (row, feature) blocks of the output, and the buffer outlives
// the `for_each` that uses it.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// Everything one microkernel call reads and writes. Invariants (set by `PackedI8::tile`):
/// `a.len() == ar * kp` (one tile of quantised x, see `quantize_rows`; `kp` a multiple of 4,
/// `sx.len() ≤ ar`), `w` holds
/// `kp / 4` groups of 256 bytes, `sw`/`bias`/`offset` hold 64 entries, `1 ≤ cols ≤ 64`, and
/// `out` points at a `sx.len()` × `cols` block with row stride `ldo` inside the output.
struct Tile<'a> {
    a: &'a [u8],
    /// Rows interleaved in `a` (its tile height; `sx.len()` ≤ `ar`).
    ar: usize,
    kp: usize,
    w: &'a [Line],
    sx: &'a [f32],
    sw: &'a [f32],
    bias: &'a [f32],
    offset: &'a [i32],
    out: *mut f32,
    ldo: usize,
    cols: usize,
}

/// The one epilogue formula every path reproduces (vector paths with the same operations in
/// the same order and no FMA).
#[inline(always)]
fn epilogue(acc: i32, sx: f32, sw: f32, b: f32) -> f32 {
    acc as f32 * sx * sw + b
}

fn tile_portable(t: &Tile<'_>) {
    let groups = t.kp / 4;
    for (r, &sx) in t.sx.iter().enumerate() {
        let mut acc = [0i32; PANEL];
        for g in 0..groups {
            let a4 = &t.a[(g * t.ar + r) * 4..(g * t.ar + r) * 4 + 4];
            let a4 = [a4[0] as i8, a4[1] as i8, a4[2] as i8, a4[3] as i8].map(i32::from);
            let lines = &t.w[g * 4..g * 4 + 4];
            for (l, line) in lines.iter().enumerate() {
                for (f4, w4) in line.0.chunks_exact(4).enumerate() {
                    acc[l * 16 + f4] += a4[0] * i32::from(w4[0])
                        + a4[1] * i32::from(w4[1])
                        + a4[2] * i32::from(w4[2])
                        + a4[3] * i32::from(w4[3]);
                }
            }
        }
        for (c, &v) in acc.iter().enumerate().take(t.cols) {
            let y = epilogue(v, sx, t.sw[c], t.bias[c]);
            // SAFETY: `r < rows` and `c < cols`: inside the block described by `Tile`.
            unsafe { *t.out.add(r * t.ldo + c) = y };
        }
    }
}

/// Quantise the m rows of x (k padded to `kp` with q = 0) and their scales. The VNNI path
/// stores q + 128 as u8; the others store q as i8 (bit pattern in the u8 buffer).
///
/// Layout: rows are interleaved in tiles of `mr` (the path's microkernel rows): tile t, group g
/// (4 k-values), row r at byte `(t·kp/4 + g)·mr·4 + r·4`, so a microkernel's broadcasts for one
/// group read one contiguous run of `mr·4` bytes. A last partial tile keeps the full stride.
fn quantize_rows(
    path: Path,
    x: &[f32],
    m: usize,
    k: usize,
    kp: usize,
    parallel: bool,
) -> (Vec<u8>, Vec<f32>) {
    let mr = path.mr();
    let mut xq = vec![0u8; m.div_ceil(mr) * mr * kp];
    let mut sx = vec![0.0f32; m];
    let run = |x: &[f32], xq: &mut [u8], sx: &mut [f32]| match path {
        Path::Portable => quantize_rows_generic(x, k, kp, mr, 0, xq, sx),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the AVX2 path is only chosen on CPUs that have AVX2.
        Path::Avx2 => unsafe { x86::quantize_rows_avx2(x, k, kp, mr, xq, sx) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the VNNI path is only chosen on CPUs that have AVX-512F/BW.
        Path::Vnni => unsafe { x86::quantize_rows_avx512(x, k, kp, mr, xq, sx) },
    };
    // Rows are independent, so big batches quantise in parallel blocks of whole tiles.
    const TILES_PER_TASK: usize = 8;
    if parallel && k > 0 && m > 2 * TILES_PER_TASK * mr {
        use rayon::prelude::*;
        let rows = TILES_PER_TASK * mr;
        x.par_chunks(rows * k)
            .zip(xq.par_chunks_mut(rows * kp))
            .zip(sx.par_chunks_mut(rows))
            .for_each(|((x, xq), sx)| run(x, xq, sx));
    } else {
        run(x, &mut xq, &mut sx);
    }
    (xq, sx)
}

/// Shared body of the row quantisers (compiled once per target feature set; identical IEEE
/// operations, so identical results). `flip` is XORed into every stored byte (0x80 turns
/// q into q + 128 as u8).
#[inline(always)]
fn quantize_rows_generic(
    x: &[f32],
    k: usize,
    kp: usize,
    mr: usize,
    flip: u8,
    xq: &mut [u8],
    sx: &mut [f32],
) {
    if k == 0 {
        sx.fill(0.0);
        return;
    }
    // One row is quantised contiguously here (vectorisable), then scattered 4 bytes at a time.
    let mut q = vec![flip; kp];
    for (i, (row, s)) in x.chunks_exact(k).zip(sx.iter_mut()).enumerate() {
        // max |x| on the bit patterns: for non-NaN floats the order of (bits & 0x7fff_ffff)
        // is the order of |x|, and NaN/inf land at or above the infinity pattern.
        let bits = row
            .iter()
            .fold(0u32, |acc, v| acc.max(v.to_bits() & 0x7fff_ffff));
        let amax = f32::from_bits(bits);
        let inv = 127.0 / amax;
        if bits >= 0x7f80_0000 {
            // NaN or ±inf in the row: all its outputs become NaN.
            *s = f32::NAN;
            q.fill(flip);
        } else if bits == 0 || !inv.is_finite() {
            // All zeros (or so tiny that 127/amax overflows): the row contributes nothing.
            *s = 0.0;
            q.fill(flip);
        } else {
            *s = amax / 127.0;
            for (d, &v) in q.iter_mut().zip(row) {
                let r = round_small((v * inv).clamp(-127.0, 127.0));
                *d = (r as i8 as u8) ^ flip;
            }
            q[k..].fill(flip);
        }
        let base = (i / mr) * mr * kp + (i % mr) * 4;
        // Group g of this row goes to base + g·mr·4: chunks of mr·4 bytes from base.
        for (dst, q4) in xq[base..].chunks_mut(mr * 4).zip(q.chunks_exact(4)) {
            dst[..4].copy_from_slice(q4);
        }
    }
}

#[cfg(target_arch = "x86_64")]
const VNNI_MR: usize = 6;
#[cfg(target_arch = "x86_64")]
const AVX2_MR: usize = 2;

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

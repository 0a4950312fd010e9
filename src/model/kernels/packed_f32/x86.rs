//! The x86-64 microkernels of the packed f32 product: AVX-512F and AVX2+FMA register tiles,
//! and the cache blocking that feeds them. Each keeps the one-fma-chain-per-element contract.

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
    let run =
        |i0: usize, r: usize, grp: Range<usize>, p0: usize, kc: usize, first: bool, pf: bool| {
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
    let run =
        |i0: usize, r: usize, grp: Range<usize>, p0: usize, kc: usize, first: bool, pf: bool| {
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

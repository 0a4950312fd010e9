//! The x86-64 int8 kernels: activation quantisation with AVX2 / AVX-512BW, and the AVX-512 VNNI
//! and AVX2 tiles of the integer product.

use super::{quantize_rows_generic, Tile, AVX2_MR, GROUP_BYTES, VNNI_MR};
use std::arch::x86_64::*;

#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_rows_avx2(
    x: &[f32],
    k: usize,
    kp: usize,
    mr: usize,
    xq: &mut [u8],
    sx: &mut [f32],
) {
    quantize_rows_generic(x, k, kp, mr, 0, xq, sx)
}

#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize_rows_avx512(
    x: &[f32],
    k: usize,
    kp: usize,
    mr: usize,
    xq: &mut [u8],
    sx: &mut [f32],
) {
    quantize_rows_generic(x, k, kp, mr, 0x80, xq, sx)
}

/// Dispatch on the number of rows so the tile's accumulators are a fixed-size array the
/// compiler keeps in registers.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn tile_vnni(t: &Tile<'_>) {
    // SAFETY (all arms): `Tile`'s invariants, rows == t.sx.len() ≤ VNNI_MR.
    match t.sx.len() {
        1 => vnni::<1>(t),
        2 => vnni::<2>(t),
        3 => vnni::<3>(t),
        4 => vnni::<4>(t),
        5 => vnni::<5>(t),
        _ => vnni::<VNNI_MR>(t),
    }
}

/// R rows × 64 features: per group of 4 k, one broadcast of each row's 4 activation bytes
/// and 4 `vpdpbusd` against the panel's 4 zmm of weights.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn vnni<const R: usize>(t: &Tile<'_>) {
    let groups = t.kp / 4;
    debug_assert!(t.sx.len() == R && t.a.len() == t.ar * t.kp && t.w.len() == groups * 4);
    let w = t.w.as_ptr() as *const i8;
    let a = t.a.as_ptr();
    let off = t.offset.as_ptr();
    // SAFETY: `offset` has 64 entries: four loads of 16 i32.
    let init =
        unsafe { [0, 1, 2, 3].map(|b| _mm512_loadu_si512(off.add(16 * b) as *const __m512i)) };
    let mut acc = [init; R];
    for g in 0..groups {
        // SAFETY: `w` holds `groups` × 256 bytes, so the 4 × 64 bytes of group g are inside.
        let wv = unsafe {
            let wp = w.add(g * GROUP_BYTES);
            [0, 1, 2, 3].map(|b| _mm512_load_si512(wp.add(64 * b) as *const __m512i))
        };
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: r < R ≤ ar and g < kp / 4, so the 4 bytes lie in the ar·kp tile.
            let a4 = unsafe { (a.add((g * t.ar + r) * 4) as *const i32).read_unaligned() };
            let av = _mm512_set1_epi32(a4);
            for b in 0..4 {
                acc_r[b] = _mm512_dpbusd_epi32(acc_r[b], av, wv[b]);
            }
        }
    }
    // SAFETY: `sw`/`bias` have 64 entries.
    let (swv, bv) = unsafe {
        (
            [0, 1, 2, 3].map(|b| _mm512_loadu_ps(t.sw.as_ptr().add(16 * b))),
            [0, 1, 2, 3].map(|b| _mm512_loadu_ps(t.bias.as_ptr().add(16 * b))),
        )
    };
    for (r, acc_r) in acc.iter().enumerate() {
        let sxv = _mm512_set1_ps(t.sx[r]);
        for b in 0..4 {
            // Same operations and order as `epilogue`.
            let y = _mm512_add_ps(
                _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc_r[b]), sxv), swv[b]),
                bv[b],
            );
            let c0 = 16 * b;
            if c0 >= t.cols {
                break;
            }
            let live = (t.cols - c0).min(16);
            // SAFETY: row r < R and columns c0..c0 + live < cols lie inside the block;
            // the mask keeps the store to those `live` lanes.
            unsafe {
                let p = t.out.add(r * t.ldo + c0);
                if live == 16 {
                    _mm512_storeu_ps(p, y);
                } else {
                    _mm512_mask_storeu_ps(p, ((1u32 << live) - 1) as __mmask16, y);
                }
            }
        }
    }
}

#[target_feature(enable = "avx2")]
pub(super) unsafe fn tile_avx2(t: &Tile<'_>) {
    // SAFETY (all arms): `Tile`'s invariants; rows are taken AVX2_MR at a time.
    let mut r = 0;
    while r < t.sx.len() {
        let rows = (t.sx.len() - r).min(AVX2_MR);
        for half in 0..2 {
            if half * 32 >= t.cols {
                break;
            }
            match rows {
                1 => avx2::<1>(t, r, half),
                _ => avx2::<AVX2_MR>(t, r, half),
            }
        }
        r += rows;
    }
}

/// R rows (from `r0`) × 32 features (half `half` of the panel) with the sign trick:
/// `maddubs(|a|, sign(w, a))` gives exact pairwise a·w in i16 (|a|, |w| ≤ 127, so a pair is
/// at most 32258), and `madd` with ones widens the pairs to i32 sums of 4.
#[target_feature(enable = "avx2")]
unsafe fn avx2<const R: usize>(t: &Tile<'_>, r0: usize, half: usize) {
    let groups = t.kp / 4;
    debug_assert!(r0 + R <= t.sx.len() && t.w.len() == groups * 4);
    let w = t.w.as_ptr() as *const i8;
    let a = t.a.as_ptr() as *const i8;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); 4]; R];
    for g in 0..groups {
        // SAFETY: group g is 256 bytes inside `w`; half `half` is bytes 128·half..+128.
        let wv = unsafe {
            let wp = w.add(g * GROUP_BYTES + 128 * half);
            [0, 1, 2, 3].map(|b| _mm256_load_si256(wp.add(32 * b) as *const __m256i))
        };
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: r0 + r < sx.len() ≤ ar and g < kp / 4: inside the ar·kp tile.
            let a4 = unsafe { (a.add((g * t.ar + r0 + r) * 4) as *const i32).read_unaligned() };
            let av = _mm256_set1_epi32(a4);
            let aa = _mm256_abs_epi8(av);
            for b in 0..4 {
                let p = _mm256_maddubs_epi16(aa, _mm256_sign_epi8(wv[b], av));
                acc_r[b] = _mm256_add_epi32(acc_r[b], _mm256_madd_epi16(p, ones));
            }
        }
    }
    let base = 32 * half;
    for (r, acc_r) in acc.iter().enumerate() {
        let sxv = _mm256_set1_ps(t.sx[r0 + r]);
        for (b, &acc_rb) in acc_r.iter().enumerate() {
            let c0 = base + 8 * b;
            if c0 >= t.cols {
                break;
            }
            // SAFETY: `sw`/`bias` have 64 entries and c0 + 8 ≤ 64.
            let (swv, bv) = unsafe {
                (
                    _mm256_loadu_ps(t.sw.as_ptr().add(c0)),
                    _mm256_loadu_ps(t.bias.as_ptr().add(c0)),
                )
            };
            // Same operations and order as `epilogue`.
            let y = _mm256_add_ps(
                _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc_rb), sxv), swv),
                bv,
            );
            let live = (t.cols - c0).min(8);
            // SAFETY: row r0 + r and columns c0..c0 + live (< cols) are inside the block.
            unsafe {
                let p = t.out.add((r0 + r) * t.ldo + c0);
                if live == 8 {
                    _mm256_storeu_ps(p, y);
                } else {
                    let mut tmp = [0.0f32; 8];
                    _mm256_storeu_ps(tmp.as_mut_ptr(), y);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), p, live);
                }
            }
        }
    }
}

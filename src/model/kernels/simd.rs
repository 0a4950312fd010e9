//! Small vector kernels written so that the compiler vectorises them, compiled twice on
//! x86-64 (baseline and AVX2) and picked at run time.

const LANES: usize = 8;

/// `$body` for `$l` = 0..8, written out: the compiler turns the eight statements into one
/// vector operation, and unoptimised (test) builds run them without iterator calls.
macro_rules! lanes {
    ($l:ident => $body:expr) => {{
        {
            let $l = 0;
            $body;
        }
        {
            let $l = 1;
            $body;
        }
        {
            let $l = 2;
            $body;
        }
        {
            let $l = 3;
            $body;
        }
        {
            let $l = 4;
            $body;
        }
        {
            let $l = 5;
            $body;
        }
        {
            let $l = 6;
            $body;
        }
        {
            let $l = 7;
            $body;
        }
    }};
}

#[inline(always)]
fn reduce(acc: &[f32; LANES]) -> f32 {
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        lanes!(l => acc[l] += x[l] * y[l]);
    }
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    reduce(&acc) + tail
}

/// `y += s * x`
#[inline(always)]
pub fn axpy(y: &mut [f32], s: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += s * *x;
    }
}

#[inline(always)]
pub fn max(v: &[f32]) -> f32 {
    let n = v.len();
    let full = n - n % LANES;
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut i = 0;
    while i < full {
        let x = &v[i..i + LANES];
        lanes!(l => acc[l] = acc[l].max(x[l]));
        i += LANES;
    }
    let mut m = f32::NEG_INFINITY;
    for &x in acc.iter().chain(&v[full..]) {
        m = m.max(x);
    }
    m
}

/// e^x to within a few ulp for x ≤ 88 (NaN stays NaN), branch-free so that loops over it
/// vectorise:
/// x = n·ln2 + r with |r| ≤ ln2/2, e^r by its Taylor series to r^7, 2^n from the exponent
/// bits. Below -87.3 (where f32 leaves normal numbers) it returns 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2^8.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.0);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // n sits in the low mantissa bits of t; integer arithmetic (unlike a float-to-int
    // cast, which saturates) keeps this loop vectorisable.
    let n_int = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    let y = p * scale;
    let y = if x < -87.3 { 0.0 } else { y };
    let y = if x > 88.0 { f32::INFINITY } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error 1.5e-7, about 5e-7 in f32), with the e^(-x²)
/// from [`exp`], so loops over it vectorise. The libm-style erf candle uses runs one element
/// at a time and was ~30% of a BERT forward pass.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152;
    const A5: f32 = 1.061_405_4;
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = ((((A5 * t + A4) * t + A3) * t + A2) * t + A1) * t;
    let far = 1.0 - poly * exp(-a * a);
    // Near 0 the formula's absolute error is large next to erf itself: there, its Maclaurin
    // series (to x^13; the next term is below 1e-8 for |x| < 0.6). Both are computed and one
    // picked, so the loop stays branch-free.
    let z = a * a;
    let mut s = -1.0 / 75_600.0;
    s = s * z + 1.0 / 9_360.0;
    s = s * z - 1.0 / 1_320.0;
    s = s * z + 1.0 / 216.0;
    s = s * z - 1.0 / 42.0;
    s = s * z + 1.0 / 10.0;
    s = s * z - 1.0 / 3.0;
    s = s * z + 1.0;
    let near = std::f32::consts::FRAC_2_SQRT_PI * a * s;
    let y = if a < 0.6 { near } else { far };
    // NaN stays NaN (the comparisons are false for it, and it flows through `far`).
    if x < 0.0 {
        -y
    } else {
        y
    }
}

/// GELU with the exact (erf) form: x · (1 + erf(x/√2)) / 2.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU's tanh approximation (`gelu_new`): x · (1 + tanh(√(2/π)·(x + 0.044715·x³))) / 2,
/// with tanh(u) = 1 - 2 / (e^(2u) + 1).
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // √(2/π)
    let u = C * (x + 0.044_715 * x * x * x);
    let t = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
    0.5 * x * (1.0 + t)
}

/// Σ e^(x - shift)
#[inline(always)]
pub fn sum_exp(v: &[f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += exp(c[l] - shift);
        }
    }
    let mut tail = 0f32;
    for &x in chunks.remainder() {
        tail += exp(x - shift);
    }
    reduce(&acc) + tail
}

#[inline(always)]
pub fn sum(v: &[f32]) -> f32 {
    let n = v.len();
    let full = n - n % LANES;
    let mut acc = [0f32; LANES];
    let mut i = 0;
    while i < full {
        let x = &v[i..i + LANES];
        lanes!(l => acc[l] += x[l]);
        i += LANES;
    }
    let mut tail = 0f32;
    for &x in &v[full..] {
        tail += x;
    }
    reduce(&acc) + tail
}

/// `v[i] = f(v[i])` for every i.
// An index loop rather than an iterator: as fast when optimised, and much faster in the
// unoptimised builds the tests run in.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub fn map(v: &mut [f32], f: impl Fn(f32) -> f32) {
    for i in 0..v.len() {
        v[i] = f(v[i]);
    }
}

/// Softmax in place, as torch computes it: e^(x - max) / Σ.
#[inline(always)]
pub fn softmax(v: &mut [f32]) {
    let m = max(v);
    map(v, |x| exp(x - m));
    let sum = sum(v);
    map(v, |x| x / sum);
}

/// log_softmax in place: x - max - ln Σ e^(x - max).
#[inline(always)]
pub fn log_softmax(v: &mut [f32]) {
    let m = max(v);
    let log_sum = sum_exp(v, m).ln();
    map(v, |x| x - m - log_sum);
}

/// Calls `$body` (an expression using only `#[inline(always)]` kernels) compiled for AVX2
/// when the CPU has it.
macro_rules! dispatch {
    ($name:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $body:expr) => {
        #[allow(clippy::too_many_arguments)]
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) -> $ret {
                    $body
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body
        }
    };
}
pub(crate) use dispatch;

dispatch!(log_softmax_row, (v: &mut [f32]) -> (), log_softmax(v));
dispatch!(max_row, (v: &[f32]) -> f32, max(v));

#[cfg(test)]
mod tests {
    use super as simd;

    #[test]
    fn exp_is_accurate_and_saturates() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = simd::exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(
            worst < 4.0 * f32::EPSILON as f64,
            "relative error {worst:e}"
        );
        assert_eq!(simd::exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(simd::exp(-100.0), 0.0);
        assert_eq!(simd::exp(0.0), 1.0);
        assert_eq!(simd::exp(100.0), f32::INFINITY);
    }

    #[test]
    fn kernels_match_plain_loops() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((simd::dot(&a, &b) - plain).abs() < 1e-5);
        assert_eq!(
            simd::max(&a),
            a.iter().copied().fold(f32::NEG_INFINITY, f32::max)
        );
        let mut row = a.clone();
        row[3] = f32::NEG_INFINITY;
        simd::log_softmax_row(&mut row);
        let total: f32 = row.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert_eq!(row[3], f32::NEG_INFINITY);
        let mut p = a.clone();
        simd::softmax(&mut p);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn erf_and_gelu_are_close_to_the_exact_functions() {
        let mut worst_erf = 0f64;
        let mut worst_gelu = 0f64;
        let mut x = -9.0f32;
        while x < 9.0 {
            let exact = candle_core::cpu::erf::erf_f64(x as f64);
            worst_erf = worst_erf.max((simd::erf(x) as f64 - exact).abs());
            let xd = x as f64;
            let gelu = 0.5 * xd * (1.0 + candle_core::cpu::erf::erf_f64(xd / 2f64.sqrt()));
            worst_gelu = worst_gelu.max((simd::gelu(x) as f64 - gelu).abs() / (1.0 + xd.abs()));
            let tanh = 0.5
                * xd
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd * xd * xd))
                        .tanh());
            worst_gelu =
                worst_gelu.max((simd::gelu_tanh(x) as f64 - tanh).abs() / (1.0 + xd.abs()));
            x += 0.00731;
        }
        assert!(worst_erf < 1e-6, "erf error {worst_erf:e}");
        assert!(worst_gelu < 1e-6, "gelu error {worst_gelu:e}");
        assert_eq!(simd::erf(0.0), 0.0);
        for x in [1e-6f32, 1e-3, 0.1, 0.3, 0.59] {
            let exact = candle_core::cpu::erf::erf_f64(x as f64);
            let rel = (simd::erf(x) as f64 - exact).abs() / exact;
            assert!(
                rel < 4.0 * f32::EPSILON as f64,
                "erf({x}) relative error {rel:e}"
            );
        }
        assert_eq!(simd::erf(40.0), 1.0);
        assert_eq!(simd::erf(-40.0), -1.0);
        assert!(simd::erf(f32::NAN).is_nan());
        assert_eq!(simd::gelu(-100.0), 0.0);
        assert_eq!(simd::gelu(100.0), 100.0);
        assert_eq!(simd::gelu_tanh(100.0), 100.0);
    }
}

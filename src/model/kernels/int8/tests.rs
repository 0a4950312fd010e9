//! Tests of the int8 product: every path bitwise against a naive reference, saturation, threads,
//! batch positions, error against f32, non-finite rows, shapes and errors.

use super::*;

/// splitmix64 + Box–Muller: deterministic test data without extra crates.
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn normal(&mut self, sd: f32) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        sd * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
    fn vec(&mut self, len: usize, sd: f32) -> Vec<f32> {
        (0..len).map(|_| self.normal(sd)).collect()
    }
}

fn paths() -> Vec<Path> {
    let mut all = vec![Path::Portable];
    #[cfg(target_arch = "x86_64")]
    all.extend([Path::Avx2, Path::Vnni]);
    all.into_iter().filter(|p| p.supported()).collect()
}

/// Naive reference written from the spec, independent of the packing and kernels.
fn reference(w: &[f32], b: &[f32], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    let mut qw = vec![0i32; n * k];
    let mut sw = vec![0.0f32; n];
    for j in 0..n {
        let amax = w[j * k..(j + 1) * k]
            .iter()
            .fold(0.0f32, |a, v| a.max(v.abs()));
        sw[j] = amax / 127.0;
        for p in 0..k {
            if sw[j] != 0.0 {
                qw[j * k + p] = (w[j * k + p] / sw[j])
                    .round_ties_even()
                    .clamp(-127.0, 127.0) as i32;
            }
        }
    }
    let mut out = vec![0.0f32; m * n];
    for i in 0..m {
        let row = &x[i * k..(i + 1) * k];
        let mut qx = vec![0i32; k];
        let sx;
        if row.iter().any(|v| !v.is_finite()) {
            sx = f32::NAN;
        } else {
            let amax = row.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let inv = 127.0 / amax;
            if amax == 0.0 || !inv.is_finite() {
                sx = 0.0;
            } else {
                sx = amax / 127.0;
                for p in 0..k {
                    qx[p] = (row[p] * inv).clamp(-127.0, 127.0).round_ties_even() as i32;
                }
            }
        }
        for j in 0..n {
            let acc: i64 = (0..k).map(|p| i64::from(qx[p] * qw[j * k + p])).sum();
            let acc = i32::try_from(acc).unwrap_or(i32::MAX);
            out[i * n + j] = acc as f32 * sx * sw[j] + b[j];
        }
    }
    out
}

fn assert_bitwise(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (idx, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}: element {idx}: got {g}, want {w}"
        );
    }
}

#[test]
fn every_path_matches_the_naive_reference_bitwise() {
    let mut rng = Rng(1);
    let shapes: &[(usize, usize, &[usize])] = &[
        (1, 1, &[1, 3]),
        (7, 3, &[1, 2, 7]),
        (33, 5, &[1, 6, 13]),
        (64, 8, &[5]),
        (65, 513, &[1, 7, 13]),
        (1003, 513, &[1, 3]),
        (7, 2048, &[1, 6, 9]),
        (33, 2048, &[2]),
        (1, 2048, &[4]),
        (1003, 5, &[8]),
    ];
    for &(n, k, ms) in shapes {
        let w = rng.vec(n * k, 0.02);
        let b = rng.vec(n, 0.1);
        let packed = PackedI8::quantize(&w, &b, n, k).unwrap();
        for &m in ms {
            let x = rng.vec(m * k, 1.0);
            let want = reference(&w, &b, n, k, &x, m);
            for path in paths() {
                let mut out = Vec::new();
                packed.matmul_with(path, &x, m, &mut out).unwrap();
                assert_bitwise(&out, &want, &format!("{path:?} n={n} k={k} m={m}"));
            }
        }
    }
}

#[test]
fn full_scale_values_do_not_saturate() {
    // Every |q| = 127 with random signs: pair sums of 2·127² stress the AVX2 i16 step and
    // the u8 offset of the VNNI path; the sum over k = 2048 is far from the i16 range.
    let mut rng = Rng(2);
    let (n, k, m) = (70, 2048, 7);
    let sign = |r: &mut Rng| if r.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
    let w: Vec<f32> = (0..n * k).map(|_| sign(&mut rng)).collect();
    let mut x: Vec<f32> = (0..m * k).map(|_| sign(&mut rng)).collect();
    // Row 0 all +1 against an all +1 weight row: the largest possible dot product.
    x[..k].fill(1.0);
    let mut w = w;
    w[..k].fill(1.0);
    let b = vec![0.0; n];
    let packed = PackedI8::quantize(&w, &b, n, k).unwrap();
    let want = reference(&w, &b, n, k, &x, m);
    assert_eq!(
        want[0],
        2048.0 * (1.0f32 / 127.0) * (1.0 / 127.0) * 127.0 * 127.0
    );
    for path in paths() {
        let mut out = Vec::new();
        packed.matmul_with(path, &x, m, &mut out).unwrap();
        assert_bitwise(&out, &want, &format!("{path:?}"));
    }
}

#[test]
fn a_row_alone_equals_the_same_row_inside_a_batch() {
    let mut rng = Rng(3);
    let (n, k) = (200, 512);
    let w = rng.vec(n * k, 0.02);
    let b = rng.vec(n, 0.1);
    let packed = PackedI8::quantize(&w, &b, n, k).unwrap();
    for m in [37, 128] {
        let x = rng.vec(m * k, 1.0);
        for path in paths() {
            let mut batch = Vec::new();
            packed.matmul_with(path, &x, m, &mut batch).unwrap();
            for i in [0, 1, 5, 6, 17, 36, m - 1] {
                let mut one = Vec::new();
                packed
                    .matmul_with(path, &x[i * k..(i + 1) * k], 1, &mut one)
                    .unwrap();
                assert_bitwise(
                    &one,
                    &batch[i * n..(i + 1) * n],
                    &format!("{path:?} m={m} row {i}"),
                );
            }
        }
    }
}

#[test]
fn one_and_two_threads_give_identical_results() {
    let mut rng = Rng(4);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    // Many panels (split over features only), few panels (rows split too), long k.
    for (n, k) in [(1003, 513), (200, 512), (70, 2048)] {
        let w = rng.vec(n * k, 0.02);
        let b = rng.vec(n, 0.1);
        let packed = PackedI8::quantize(&w, &b, n, k).unwrap();
        for m in [1, 13, 37, 200] {
            let x = rng.vec(m * k, 1.0);
            let check_reference = m == 37 || (m == 200 && n == 200);
            let want = check_reference.then(|| reference(&w, &b, n, k, &x, m));
            for path in paths() {
                // NaN-filled outputs: an element no task writes would stay NaN.
                let (mut a, mut c) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
                one.install(|| packed.matmul_with(path, &x, m, &mut a))
                    .unwrap();
                two.install(|| packed.matmul_with(path, &x, m, &mut c))
                    .unwrap();
                let what = format!("{path:?} n={n} k={k} m={m}");
                assert!(c.iter().all(|v| v.is_finite()), "{what}: unwritten output");
                assert_bitwise(&c, &a, &format!("{what}: 2 vs 1 thread"));
                if let Some(want) = &want {
                    assert_bitwise(&c, want, &format!("{what}: 2 threads vs reference"));
                }
            }
        }
    }
}

#[test]
fn error_against_the_f32_product_is_small() {
    let mut rng = Rng(5);
    let (m, n, k) = (128, 2048, 512);
    let w = rng.vec(n * k, 0.02);
    let b = rng.vec(n, 0.02);
    let x = rng.vec(m * k, 1.0);
    let packed = PackedI8::quantize(&w, &b, n, k).unwrap();
    let mut out = Vec::new();
    packed.matmul(&x, m, &mut out).unwrap();
    let (mut num, mut den, mut worst) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..m {
        for j in 0..n {
            let exact: f64 = (0..k)
                .map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p]))
                .sum::<f64>()
                + f64::from(b[j]);
            let d = f64::from(out[i * n + j]) - exact;
            num += d * d;
            den += exact * exact;
            worst = worst.max(d.abs());
        }
    }
    let rel = (num / den).sqrt();
    println!("int8 vs f32: relative Frobenius error {rel:.5}, max abs error {worst:.5}");
    assert!(rel < 0.02, "relative error {rel}");
    // The dequantised weights are within half a step of the originals.
    let deq = packed.dequantize();
    for j in 0..n {
        let amax = w[j * k..(j + 1) * k]
            .iter()
            .fold(0.0f32, |a, v| a.max(v.abs()));
        for p in 0..k {
            assert!((deq[j * k + p] - w[j * k + p]).abs() <= amax / 127.0 * 0.5001);
        }
    }
}

#[test]
fn non_finite_rows_become_nan_and_leave_other_rows_alone() {
    let mut rng = Rng(6);
    let (n, k, m) = (70, 33, 9);
    let w = rng.vec(n * k, 0.02);
    let b = rng.vec(n, 0.1);
    let packed = PackedI8::quantize(&w, &b, n, k).unwrap();
    let mut x = rng.vec(m * k, 1.0);
    x[2 * k + 4] = f32::NAN;
    x[4 * k] = f32::INFINITY;
    x[7 * k + 32] = f32::NEG_INFINITY;
    for path in paths() {
        let mut out = Vec::new();
        packed.matmul_with(path, &x, m, &mut out).unwrap();
        for i in 0..m {
            let row = &out[i * n..(i + 1) * n];
            if [2, 4, 7].contains(&i) {
                assert!(row.iter().all(|v| v.is_nan()), "{path:?} row {i}");
            } else {
                let mut one = Vec::new();
                packed
                    .matmul_with(path, &x[i * k..(i + 1) * k], 1, &mut one)
                    .unwrap();
                assert!(row.iter().all(|v| v.is_finite()));
                assert_bitwise(row, &one, &format!("{path:?} row {i}"));
            }
        }
    }
}

#[test]
fn zero_rows_give_the_bias_and_zero_weights_dequantise_to_zero() {
    let mut rng = Rng(7);
    let (n, k, m) = (9, 40, 3);
    let mut w = rng.vec(n * k, 0.02);
    w[3 * k..4 * k].fill(0.0);
    let b = rng.vec(n, 0.1);
    let packed = PackedI8::quantize(&w, &b, n, k).unwrap();
    assert!(packed.dequantize()[3 * k..4 * k].iter().all(|&v| v == 0.0));
    let mut x = rng.vec(m * k, 1.0);
    x[k..2 * k].fill(0.0);
    x[2 * k..3 * k].fill(1e-40); // subnormal: 127 / amax overflows, treated as zero
    for path in paths() {
        let mut out = Vec::new();
        packed.matmul_with(path, &x, m, &mut out).unwrap();
        assert_bitwise(
            &out[n..3 * n],
            &[b.as_slice(), b.as_slice()].concat(),
            "zero rows",
        );
        assert_eq!(out[3], b[3], "{path:?}: zero weight row gives its bias");
        assert_bitwise(&out, &reference(&w, &b, n, k, &x, m), &format!("{path:?}"));
    }
}

#[test]
fn empty_batches_and_degenerate_shapes() {
    let packed = PackedI8::quantize(&[0.5; 12], &[1.0, 2.0, 3.0], 3, 4).unwrap();
    assert_eq!((packed.n(), packed.k()), (3, 4));
    assert!(packed.bytes() >= 12);
    let mut out = vec![7.0; 10];
    packed.matmul(&[], 0, &mut out).unwrap();
    assert!(out.is_empty());
    // k = 0: every output is the bias.
    let p0 = PackedI8::quantize(&[], &[1.0, -2.0], 2, 0).unwrap();
    for path in paths() {
        p0.matmul_with(path, &[], 3, &mut out).unwrap();
        assert_eq!(out, [1.0, -2.0, 1.0, -2.0, 1.0, -2.0]);
    }
    // n = 0: nothing to compute.
    let pn = PackedI8::quantize(&[], &[], 0, 5).unwrap();
    pn.matmul(&[1.0; 10], 2, &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn wrong_lengths_and_bad_weights_are_errors() {
    let w = vec![0.1f32; 6 * 5];
    let b = vec![0.0f32; 6];
    assert!(matches!(
        PackedI8::quantize(&w[1..], &b, 6, 5),
        Err(KernelError::Length {
            what: "weights",
            ..
        })
    ));
    assert!(matches!(
        PackedI8::quantize(&w, &b[1..], 6, 5),
        Err(KernelError::Length { what: "bias", .. })
    ));
    assert!(PackedI8::quantize(&w, &b, 5, 6).is_err());
    assert!(PackedI8::quantize(&[], &[], usize::MAX, 2).is_err());
    assert!(matches!(
        PackedI8::quantize(&[], &[], 0, MAX_K + 1),
        Err(KernelError::TooLarge { what: "k" })
    ));
    let mut bad = w.clone();
    bad[13] = f32::NAN;
    assert_eq!(
        PackedI8::quantize(&bad, &b, 6, 5).err(),
        Some(KernelError::NonFiniteWeight { row: 2 })
    );
    let packed = PackedI8::quantize(&w, &b, 6, 5).unwrap();
    let mut out = Vec::new();
    for (len, m) in [(9, 2), (11, 2), (0, 1), (5, 0)] {
        let err = packed.matmul(&vec![1.0; len], m, &mut out).unwrap_err();
        assert!(err.to_string().contains("x"), "{err}");
    }
    assert!(packed.matmul(&[], usize::MAX, &mut out).is_err());
}

#[test]
fn the_active_path_is_supported_and_honours_the_env_override() {
    let path = active_path();
    assert!(path.supported());
    match std::env::var("TIDINGS_KERNELS").as_deref() {
        Ok("portable") => assert_eq!(path, Path::Portable),
        #[cfg(target_arch = "x86_64")]
        Ok("avx2") if Path::Avx2.supported() => assert_eq!(path, Path::Avx2),
        _ => {}
    }
}

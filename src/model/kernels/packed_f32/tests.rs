//! Tests of the packed f32 product: every path bitwise against the fma contract, threads,
//! batch positions, shapes and errors.

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
    for &(m, panels, threads) in &[(1, 1, 2), (1, 16, 2), (10, 1816, 2), (72, 16, 2), (5, 3, 8)] {
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

// The search step of beam search in two kernels, so that a step reads its logits once:
//
// 1. beam_row_candidates (one block per row): the row's log-sum-exp and its k best tokens,
//    as log-probabilities plus the row's running beam score.
// 2. beam_merge_rows (one thread per sentence): a sentence's k best of its beams' k each,
//    with flat indices beam · vocab + token.
//
// The contract, and a reference on the host, are in fused/beam_candidates.rs; the model checks
// these kernels against it on the device before it uses them.
//
// Order: value descending, then index ascending (the order of the host search). The k best of
// a row are chosen by the processed logit (logit + ban), which orders the row as its final
// values do: a log-probability is the logit less a constant of the row.
//
// The values are transformers' beam scores: log_softmax(logits) + ban, or with `renormalize`
// (renormalize_logits) log_softmax(logits + ban) (log-softmax taken again after the ban, in
// one step: equal to rounding), plus the running score. One log-sum-exp serves either: of the
// logits, or of the processed logits.

#include <stdint.h>

#define MAX_K 32
#define ROW_THREADS 256
#define WARPS (ROW_THREADS / 32)

__device__ __forceinline__ float minus_inf() { return __int_as_float(0xff800000); }

// NaN counts as -inf (a NaN logit makes its row's log-sum-exp, so all its values, NaN).
__device__ __forceinline__ float key(float v) { return v != v ? minus_inf() : v; }

// Is (av, ai) ahead of (bv, bi)? An index below 0 is an empty slot, behind everything.
__device__ __forceinline__ bool ahead(float av, int ai, float bv, int bi) {
    if (ai < 0) return false;
    if (bi < 0) return true;
    av = key(av);
    bv = key(bv);
    return av > bv || (av == bv && ai < bi);
}

// Adds x to a running (max, sum of exp(v - max)).
__device__ __forceinline__ void lse_push(float &m, float &s, float x) {
    if (x > m) {
        s = s * expf(m - x) + 1.0f;
        m = x;
    } else if (x != minus_inf()) {
        s += expf(x - m);
    }
}

// Merges two running (max, sum) pairs. A NaN sum (a NaN logit) spreads to the row, as in
// log-softmax.
__device__ __forceinline__ void lse_merge(float &m, float &s, float m2, float s2) {
    if (s != s) return;
    if (s2 != s2) { s = s2; return; }
    if (m2 == minus_inf()) return;
    if (m == minus_inf()) { m = m2; s = s2; return; }
    float top = fmaxf(m, m2);
    s = s * expf(m - top) + s2 * expf(m2 - top);
    m = top;
}

// The best of every lane's (v, i) in lane 0... and in every lane (butterfly).
__device__ __forceinline__ void warp_best(float &v, int &i) {
    for (int off = 16; off > 0; off >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, off);
        int oi = __shfl_xor_sync(0xffffffffu, i, off);
        if (ahead(ov, oi, v, i)) { v = ov; i = oi; }
    }
}

// logits: rows × vocab (contiguous); running: one score per row; ban: vocab entries of 0 or
// -inf, read only when has_ban; renormalize: the log-sum-exp of the processed logits; out: rows × 2k, the k values then the k tokens (as floats,
// exact below 2^24).
// k ≤ MAX_K and k ≤ vocab (the caller checks); blockDim.x == ROW_THREADS.
extern "C" __global__ void beam_row_candidates(
    const float *__restrict__ logits, const float *__restrict__ running,
    const float *__restrict__ ban_row, int has_ban, int renormalize, int vocab, int k,
    float *__restrict__ out) {
    __shared__ float warp_m[WARPS], warp_s[WARPS], warp_v[WARPS];
    __shared__ int warp_i[WARPS];
    __shared__ float row_m, row_log_sum;
    __shared__ int chosen[MAX_K];

    if (blockDim.x != ROW_THREADS) __trap();  // the reductions below assume it
    const int row = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *x = logits + (size_t)row * vocab;
    const float *ban = has_ban ? ban_row : nullptr;

    // This thread's share of the row: its (max, sum) and its k best, sorted.
    float m = minus_inf(), s = 0.0f;
    float best_v[MAX_K];
    int best_i[MAX_K];
    int count = 0;
    for (int j = threadIdx.x; j < vocab; j += ROW_THREADS) {
        const float logit = x[j];
        float p = ban ? logit + ban[j] : logit;
        lse_push(m, s, renormalize ? p : logit);
        if (p != p) p = minus_inf();  // NaN: never ahead of a number
        if (count < k || p > best_v[k - 1]) {
            // Indices rise along the scan, so an equal value stays behind the earlier one.
            int at = count < k ? count : k - 1;
            while (at > 0 && p > best_v[at - 1]) {
                best_v[at] = best_v[at - 1];
                best_i[at] = best_i[at - 1];
                at--;
            }
            best_v[at] = p;
            best_i[at] = j;
            if (count < k) count++;
        }
    }

    // The row's log-sum-exp.
    for (int off = 16; off > 0; off >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, off);
        float s2 = __shfl_xor_sync(0xffffffffu, s, off);
        lse_merge(m, s, m2, s2);
    }
    if (lane == 0) { warp_m[warp] = m; warp_s[warp] = s; }
    __syncthreads();
    if (threadIdx.x == 0) {
        float bm = warp_m[0], bs = warp_s[0];
        for (int w = 1; w < WARPS; w++) lse_merge(bm, bs, warp_m[w], warp_s[w]);
        row_m = bm;
        row_log_sum = logf(bs);
    }

    // k rounds: every thread offers its best not yet taken; the block's best is taken.
    int head = 0;
    for (int round = 0; round < k; round++) {
        float v = head < count ? best_v[head] : minus_inf();
        int i = head < count ? best_i[head] : -1;
        warp_best(v, i);
        if (lane == 0) { warp_v[warp] = v; warp_i[warp] = i; }
        __syncthreads();
        if (threadIdx.x == 0) {
            float bv = warp_v[0];
            int bi = warp_i[0];
            for (int w = 1; w < WARPS; w++)
                if (ahead(warp_v[w], warp_i[w], bv, bi)) { bv = warp_v[w]; bi = warp_i[w]; }
            chosen[round] = bi;
        }
        __syncthreads();
        // Tokens are unique to a thread, so exactly one thread advances.
        if (head < count && best_i[head] == chosen[round]) head++;
    }

    // The chosen tokens' values, in the order candle's operations compute them:
    // (logit - max) - log(sum), + ban, + the running score (renormalized: the ban first).
    if ((int)threadIdx.x < k) {
        const int token = chosen[threadIdx.x];
        float v = minus_inf();
        float t = 0.0f;
        if (token >= 0) {
            const float logit = x[token];
            if (renormalize) {
                v = ((ban ? logit + ban[token] : logit) - row_m) - row_log_sum;
            } else {
                v = (logit - row_m) - row_log_sum;
                if (ban) v = v + ban[token];
            }
            v = v + running[row];
            t = (float)token;
        }
        out[(size_t)row * 2 * k + threadIdx.x] = v;
        out[(size_t)row * 2 * k + k + threadIdx.x] = t;
    }
}

// rows: items × beams rows of beam_row_candidates' output (2k each); out: items × 2k, a
// sentence's k best values then their flat indices beam · vocab + token (as floats).
extern "C" __global__ void beam_merge_rows(
    const float *__restrict__ rows, int items, int beams, int k, int vocab,
    float *__restrict__ out) {
    const int item = blockIdx.x * blockDim.x + threadIdx.x;
    if (item >= items) return;
    const float *c = rows + (size_t)item * beams * 2 * k;
    float *o = out + (size_t)item * 2 * k;
    // Pick by pick: the best candidate behind the previous pick (the order is total, as flat
    // indices are unique).
    float last_v = 0.0f;
    int last_i = -1;
    for (int pick = 0; pick < k; pick++) {
        float bv = minus_inf();
        int bi = -1;
        for (int b = 0; b < beams; b++) {
            const float *r = c + (size_t)b * 2 * k;
            for (int j = 0; j < k; j++) {
                const float v = r[j];
                const int i = b * vocab + (int)r[k + j];
                const bool behind_last = last_i < 0 || ahead(last_v, last_i, v, i);
                if (behind_last && ahead(v, i, bv, bi)) { bv = v; bi = i; }
            }
        }
        o[pick] = bv;
        o[k + pick] = bi < 0 ? 0.0f : (float)bi;
        last_v = bv;
        last_i = bi;
    }
}

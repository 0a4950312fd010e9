// Attention for a decode step in one kernel: each query (one new token of a row) over its keys
// and values, scores, softmax and weighted sum in one pass, where candle's operations take a
// matrix product, the scale, the bias, a softmax, another product and a transpose.
//
// q: groups × heads × per × head_dim (contiguous): a group's `per` queries share its keys (a
// sentence's beams in cross-attention; one row in self-attention). k, v: groups × heads × len ×
// head_dim, a group and a head `group_stride` and `head_stride` elements apart, a position
// head_dim (a view of a larger cache is fine). bias: groups × len (added to the scores), read
// only when has_bias. out: groups × per × heads × head_dim (the rows' contexts, heads side by
// side). Scores, softmax and sums are f32 whatever T is; the context is rounded to T once.
//
// One block of ATTN_THREADS per (group, head, query); len floats of dynamic shared memory.

#include <stdint.h>
#ifndef TIDINGS_EMULATED
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

#define ATTN_THREADS 128
#define ATTN_WARPS (ATTN_THREADS / 32)

__device__ __forceinline__ float as_float(float x) { return x; }
__device__ __forceinline__ float as_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float as_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16(x);
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
    for (int off = 16; off > 0; off >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
    return x;
}

template <typename T>
__device__ void decode_attention(
    const T *__restrict__ q, const T *__restrict__ k, const T *__restrict__ v,
    const T *__restrict__ bias, int has_bias, int heads, int per, int len, int head_dim,
    long long group_stride, long long head_stride, float scale, T *__restrict__ out) {
    DYNAMIC_SHARED(float, scores);
    __shared__ float partial[ATTN_WARPS];
    __shared__ float row_max, row_sum;
    if (blockDim.x != ATTN_THREADS) __trap();  // the reductions below assume it

    const int query = blockIdx.x % per;
    const int head = (blockIdx.x / per) % heads;
    const int group = blockIdx.x / (per * heads);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const T *qrow = q + ((size_t)(group * heads + head) * per + query) * head_dim;
    const T *keys = k + group * group_stride + head * head_stride;
    const T *values = v + group * group_stride + head * head_stride;

    // Scores: a warp per position, its lanes across head_dim.
    for (int t = warp; t < len; t += ATTN_WARPS) {
        const T *key = keys + (size_t)t * head_dim;
        float dot = 0.0f;
        for (int d = lane; d < head_dim; d += 32) dot += as_float(qrow[d]) * as_float(key[d]);
        dot = warp_sum(dot);
        if (lane == 0) {
            // The order of candle's operations: the product, the scale, then the bias.
            float s = scale != 1.0f ? dot * scale : dot;
            if (has_bias) s = s + as_float(bias[(size_t)group * len + t]);
            scores[t] = s;
        }
    }
    __syncthreads();

    // Softmax over the positions.
    float m = __int_as_float(0xff800000);
    for (int t = threadIdx.x; t < len; t += ATTN_THREADS) m = fmaxf(m, scores[t]);
    m = warp_max(m);
    if (lane == 0) partial[warp] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
        float b = partial[0];
        for (int w = 1; w < ATTN_WARPS; w++) b = fmaxf(b, partial[w]);
        row_max = b;
    }
    __syncthreads();
    float sum = 0.0f;
    for (int t = threadIdx.x; t < len; t += ATTN_THREADS) {
        const float e = expf(scores[t] - row_max);
        scores[t] = e;
        sum += e;
    }
    sum = warp_sum(sum);
    __syncthreads();  // every warp has read partial[] (the maxima) before it is reused
    if (lane == 0) partial[warp] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        float b = 0.0f;
        for (int w = 0; w < ATTN_WARPS; w++) b += partial[w];
        row_sum = b;
    }
    __syncthreads();

    // The context: a thread per dimension, the positions in order.
    const float inv = 1.0f / row_sum;
    T *dst = out + ((size_t)(group * per + query) * heads + head) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += ATTN_THREADS) {
        float acc = 0.0f;
        for (int t = 0; t < len; t++) acc += scores[t] * as_float(values[(size_t)t * head_dim + d]);
        dst[d] = from_float<T>(acc * inv);
    }
}

#define DECODE_ATTENTION(NAME, T)                                                               \
    extern "C" __global__ void NAME(                                                            \
        const T *q, const T *k, const T *v, const T *bias, int has_bias, int heads, int per,    \
        int len, int head_dim, long long group_stride, long long head_stride, float scale,      \
        T *out) {                                                                               \
        decode_attention<T>(q, k, v, bias, has_bias, heads, per, len, head_dim, group_stride,   \
                            head_stride, scale, out);                                           \
    }

DECODE_ATTENTION(decode_attention_f32, float)
DECODE_ATTENTION(decode_attention_f16, __half)
DECODE_ATTENTION(decode_attention_bf16, __nv_bfloat16)

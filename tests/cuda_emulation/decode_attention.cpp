// The decode-attention kernels (src/model/marian/cuda/decode_attention.cu) run on the CPU
// under emulate.h, as the launch in src/model/marian/fused/decode_attention.rs makes them.
// stdin (little-endian): dtype (0 f32, 1 f16, 2 bf16), groups, heads, per, len, capacity,
// head_dim, has_bias (int32 each), scale (f32); then as f32: queries (groups × heads × per ×
// head_dim), keys and values (groups × heads × capacity × head_dim each; the kernel reads the
// first len positions) and, when has_bias, the bias (groups × len).
// stdout: the output (groups × per × heads × head_dim) as f32.
#define TIDINGS_EMULATED
#include "emulate.h"

#include "../../src/model/marian/cuda/decode_attention.cu"

#include <cstdio>

static bool read_all(void *to, size_t bytes) { return fread(to, 1, bytes, stdin) == bytes; }

template <typename T>
static int run(int groups, int heads, int per, int len, int capacity, int head_dim, int has_bias,
               float scale, void (*kernel)(const T *, const T *, const T *, const T *, int, int,
                                           int, int, int, long long, long long, float, T *)) {
    const size_t nq = (size_t)groups * heads * per * head_dim;
    const size_t nk = (size_t)groups * heads * capacity * head_dim;
    std::vector<float> in(nq + 2 * nk + (has_bias ? (size_t)groups * len : 1));
    if (!read_all(in.data(), (nq + 2 * nk + (has_bias ? (size_t)groups * len : 0)) * 4)) return 2;
    std::vector<T> typed(in.size());
    // Rounded to T by the kernel file's own conversion.
    for (size_t i = 0; i < in.size(); i++) typed[i] = from_float<T>(in[i]);
    const T *q = typed.data(), *k = q + nq, *v = k + nk, *bias = v + nk;
    std::vector<T> out(nq);
    const long long head_stride = (long long)capacity * head_dim;
    emulate::launch(
        groups * heads * per, ATTN_THREADS,
        [&] {
            kernel(q, k, v, bias, has_bias, heads, per, len, head_dim, head_stride * heads,
                   head_stride, scale, out.data());
        },
        (size_t)len * 4);
    for (const T &x : out) {
        const float f = as_float(x);
        fwrite(&f, 4, 1, stdout);
    }
    return 0;
}

int main() {
    int32_t head[8];
    float scale;
    if (!read_all(head, sizeof head) || !read_all(&scale, 4)) return 2;
    const int dtype = head[0];
    const int g = head[1], h = head[2], per = head[3], len = head[4], cap = head[5];
    const int hd = head[6], has_bias = head[7];
    switch (dtype) {
        case 0: return run<float>(g, h, per, len, cap, hd, has_bias, scale, decode_attention_f32);
        case 1: return run<__half>(g, h, per, len, cap, hd, has_bias, scale, decode_attention_f16);
        case 2:
            return run<__nv_bfloat16>(g, h, per, len, cap, hd, has_bias, scale,
                                      decode_attention_bf16);
        default: return 2;
    }
}

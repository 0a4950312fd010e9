// Runs CUDA kernels on the CPU, one thread per CUDA thread, one block at a time, so that the
// tests can check a kernel's logic on a machine without a GPU. It covers what the project's
// kernels use: threadIdx/blockIdx/blockDim (x), __shared__ (one block runs at a time, so a
// static is the block's, zero at the start), dynamic shared memory (DYNAMIC_SHARED, NaN bytes
// at the start, sized exactly), __syncthreads,
// __shfl_xor_sync, __int_as_float, __trap, and __half / __nv_bfloat16 with their conversions
// (round to nearest even, as the device's). It says
// nothing of speed or of the GPU's memory model, and it can hide what needs several blocks at
// once, reads of shared memory never written (a static starts at zero) and a handoff through
// shared memory that relies on a shuffle alone (a shuffle here orders memory).
#pragma once

#include <barrier>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

struct Dim3 {
    unsigned x = 0, y = 0, z = 0;
};
inline thread_local Dim3 threadIdx, blockIdx, blockDim;

namespace emulate {
struct Warp {
    std::barrier<> meet{32};
    uint32_t slot[32];
};
struct Block {
    // Dynamic shared memory is filled with 0xff bytes (NaN as floats): a read before a write
    // shows.
    Block(int threads, size_t shared_bytes)
        : meet(threads), warps((threads + 31) / 32), shared(shared_bytes, 0xff) {}
    std::barrier<> meet;
    std::vector<Warp> warps;
    std::vector<unsigned char> shared;  // operator new aligns it for any scalar
};

// A block's shared memory without opting in to more: 48 KiB, of which the kernels' fixed
// (static) shared memory takes up to 64 bytes.
constexpr size_t max_dynamic_shared = 48 * 1024 - 64;
inline thread_local Block *block = nullptr;

// Runs kernel() as grid blocks of `threads` threads each, with `shared_bytes` of dynamic
// shared memory per block.
template <class Kernel>
void launch(unsigned grid, unsigned threads, Kernel kernel, size_t shared_bytes = 0) {
    if (shared_bytes > max_dynamic_shared || threads > 1024) std::abort();  // a failed launch
    for (unsigned b = 0; b < grid; b++) {
        Block shared(threads, shared_bytes);
        std::vector<std::thread> team;
        for (unsigned t = 0; t < threads; t++) {
            team.emplace_back([&, t] {
                threadIdx.x = t;
                blockIdx.x = b;
                blockDim.x = threads;
                block = &shared;
                kernel();
            });
        }
        for (auto &member : team) member.join();
    }
}
}  // namespace emulate

#define DYNAMIC_SHARED(T, name) T *name = reinterpret_cast<T *>(emulate::block->shared.data())

inline void __syncthreads() { emulate::block->meet.arrive_and_wait(); }

template <class T>
T __shfl_xor_sync(unsigned, T value, int lane_mask) {
    static_assert(sizeof(T) == 4, "32-bit values only");
    emulate::Warp &warp = emulate::block->warps[threadIdx.x / 32];
    const unsigned lane = threadIdx.x % 32;
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    warp.slot[lane] = bits;
    warp.meet.arrive_and_wait();
    bits = warp.slot[lane ^ lane_mask];
    warp.meet.arrive_and_wait();  // every lane has read before the slots are reused
    std::memcpy(&value, &bits, 4);
    return value;
}

inline void __trap() { std::abort(); }

inline float __int_as_float(int bits) {
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

struct __half {
    uint16_t bits;
};
inline float __half2float(__half h) {
    _Float16 f;
    std::memcpy(&f, &h.bits, 2);
    return (float)f;
}
inline __half __float2half(float x) {
    const _Float16 f = (_Float16)x;  // round to nearest even
    __half h;
    std::memcpy(&h.bits, &f, 2);
    return h;
}

struct __nv_bfloat16 {
    uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 b) {
    const uint32_t u = (uint32_t)b.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline __nv_bfloat16 __float2bfloat16(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if (x != x) return {0x7fc0};
    u += 0x7fff + ((u >> 16) & 1);  // round to nearest even
    return {(uint16_t)(u >> 16)};
}

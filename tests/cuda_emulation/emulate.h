// Runs CUDA kernels on the CPU, one thread per CUDA thread, one block at a time, so that the
// tests can check a kernel's logic on a machine without a GPU. It covers what the project's
// kernels use: threadIdx/blockIdx/blockDim (x), __shared__ (one block runs at a time, so a
// static is the block's), __syncthreads, __shfl_xor_sync, __int_as_float and __trap. It says
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
    explicit Block(int threads) : meet(threads), warps((threads + 31) / 32) {}
    std::barrier<> meet;
    std::vector<Warp> warps;
};
inline thread_local Block *block = nullptr;

// Runs kernel() as grid blocks of `threads` threads each.
template <class Kernel>
void launch(unsigned grid, unsigned threads, Kernel kernel) {
    for (unsigned b = 0; b < grid; b++) {
        Block shared(threads);
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

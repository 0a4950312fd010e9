// The beam-candidates kernels (src/model/marian/cuda/beam_candidates.cu) run on the CPU under
// emulate.h, as the launch in src/model/marian/fused/beam_candidates.rs makes them.
// stdin: rows vocab beams want has_ban renormalize (int32 each), then the logits (rows × vocab), running
// scores (rows) and, when has_ban, the ban row (vocab), as little-endian f32.
// stdout: sentences × 2·want f32, the kernels' output.
#include "emulate.h"

#include "../../src/model/marian/cuda/beam_candidates.cu"

#include <cstdio>

static bool read_all(void *to, size_t bytes) { return fread(to, 1, bytes, stdin) == bytes; }

int main() {
    int32_t head[6];
    if (!read_all(head, sizeof head)) return 2;
    const int rows = head[0], vocab = head[1], beams = head[2], want = head[3], has_ban = head[4];
    const int renormalize = head[5];
    const int items = rows / beams;
    std::vector<float> logits((size_t)rows * vocab), running(rows), ban(has_ban ? vocab : 1);
    if (!read_all(logits.data(), logits.size() * 4) || !read_all(running.data(), rows * 4) ||
        (has_ban && !read_all(ban.data(), vocab * 4)))
        return 2;
    std::vector<float> per_row((size_t)rows * 2 * want, NAN), out((size_t)items * 2 * want, NAN);
    emulate::launch(rows, ROW_THREADS, [&] {
        beam_row_candidates(logits.data(), running.data(), ban.data(), has_ban, renormalize, vocab, want,
                            per_row.data());
    });
    const unsigned merge_threads = 128;
    emulate::launch((items + merge_threads - 1) / merge_threads, merge_threads, [&] {
        beam_merge_rows(per_row.data(), items, beams, want, vocab, out.data());
    });
    fwrite(out.data(), 4, out.size(), stdout);
    return 0;
}

// A minimal parallel-for over std::threads, sized like the OpenBLAS thread pool.
#pragma once
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace wn {

/** Threads worth starting for `work` (roughly: scalar operations), at most as many as OpenBLAS uses. Starting
 *  a thread costs tens of microseconds on an idle machine, and up to a scheduler time slice (milliseconds) when
 *  another process holds the other cores; so each thread must get enough work to outweigh that. On a busy
 *  2-core machine the bundled tiny model took 8-11 s per image with a threshold of 2^15 and 1.4 s with one
 *  thread. */
inline int64_t threads_for(int64_t work, int64_t min_work_per_thread = int64_t{1} << 20) {
  return std::min<int64_t>(openblas_get_num_threads(), std::max<int64_t>(1, work / min_work_per_thread));
}

/** Runs fn(begin, end) on contiguous slices of [0, n), on threads_for(work) threads; small jobs stay on the
 *  calling thread. The slices are handed out on demand, several per thread, so that a thread the OS has
 *  preempted (another process on the same cores) does not hold up the others: whichever thread is running
 *  takes the next slice. Slice boundaries depend only on n, work and the thread count, so results that sum per
 *  slice stay reproducible. */
template <class Fn>
void parallel_for(int64_t n, int64_t work, const Fn& fn) {
  constexpr int64_t kSlicesPerThread = 4;
  const int64_t threads = std::min(n, threads_for(work));
  if (threads <= 1) {
    if (n > 0) fn(int64_t{0}, n);
    return;
  }
  const int64_t slices = std::min(n, threads * kSlicesPerThread), size = (n + slices - 1) / slices;
  std::atomic<int64_t> next{0};
  const auto worker = [&] {
    for (int64_t begin; (begin = next.fetch_add(1) * size) < n;) fn(begin, std::min(n, begin + size));
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; t++) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
}

/** Element offset of row `row` (rows index all dims but the last) in a view with element `strides`. */
inline int64_t row_offset(int64_t row, const std::vector<int64_t>& shape, const std::vector<int64_t>& strides) {
  int64_t offset = 0;
  for (int64_t d = static_cast<int64_t>(shape.size()) - 2; d >= 0; d--) {
    offset += row % shape[d] * strides[d];
    row /= shape[d];
  }
  return offset;
}

/** Runs fn(row, begin, end) over every row of `shape` in column blocks of at most `block`, so that
 *  a single long row is split across threads too. */
template <class Fn>
void parallel_rows(const std::vector<int64_t>& shape, int64_t block, const Fn& fn) {
  const int64_t cols = shape.back(), blocks = (cols + block - 1) / block;
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < shape.size(); d++) rows *= shape[d];
  parallel_for(rows * blocks, rows * cols, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t row = t / blocks, begin = t % blocks * block;
      fn(row, begin, std::min(cols, begin + block));
    }
  });
}

}  // namespace wn

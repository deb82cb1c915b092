// A minimal parallel-for over std::threads, sized like the OpenBLAS thread pool.
#pragma once
#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace wn {

/** Runs fn(begin, end) on contiguous slices of [0, n). `work` (roughly: scalar operations) decides
 *  how many threads are worth starting; small jobs stay on the calling thread. */
template <class Fn>
void parallel_for(int64_t n, int64_t work, const Fn& fn) {
  constexpr int64_t kMinWorkPerThread = 1 << 15;
  const int64_t threads = std::min<int64_t>(
      {static_cast<int64_t>(openblas_get_num_threads()), n, std::max<int64_t>(1, work / kMinWorkPerThread)});
  if (threads <= 1) {
    if (n > 0) fn(int64_t{0}, n);
    return;
  }
  const int64_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (int64_t begin = chunk; begin < n; begin += chunk) {
    pool.emplace_back([&fn, begin, end = std::min(n, begin + chunk)] { fn(begin, end); });
  }
  fn(int64_t{0}, chunk);
  for (auto& t : pool) t.join();
}

}  // namespace wn

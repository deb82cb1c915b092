// Data movement and reductions: strided copies (transpose, slice) and sums over a run of axes.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "parallel.h"
#include "simd.h"

namespace wn {
namespace {

/** Elements per task of a strided copy. */
constexpr int64_t kCopyBlock = int64_t{1} << 14;
/** Largest inner block a reduction task accumulates at once, in floats. */
constexpr int64_t kReduceBlock = 1024;

WN_MULTIVERSION
void accumulate_row(double* __restrict acc, const float* __restrict x, int64_t n) {
  for (int64_t i = 0; i < n; i++) acc[i] += x[i];
}

WN_MULTIVERSION
double sum_row(const float* x, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; i++) s += x[i];
  return s;
}

}  // namespace

void strided_copy(const float* x, float* out, const std::vector<int64_t>& shape, const std::vector<int64_t>& strides) {
  const int64_t step = strides.back(), cols = shape.back();
  parallel_rows(shape, kCopyBlock, [&](int64_t row, int64_t c0, int64_t c1) {
    const float* src = x + row_offset(row, shape, strides) + c0 * step;
    float* dst = out + row * cols + c0;
    if (step == 1) {
      std::memcpy(dst, src, (c1 - c0) * sizeof(float));
    } else {
      for (int64_t i = 0; i < c1 - c0; i++) dst[i] = src[i * step];
    }
  });
}

void reduce_sum(const float* x, float* out, int64_t outer, int64_t mid, int64_t inner, float scale) {
  if (inner == 1) {
    parallel_for(outer, outer * mid, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; o++) out[o] = static_cast<float>(sum_row(x + o * mid, mid) * scale);
    });
    return;
  }
  // Tasks are (outer index, block of inner columns); each sums its block over `mid` in doubles.
  const int64_t blocks = (inner + kReduceBlock - 1) / kReduceBlock;
  parallel_for(outer * blocks, outer * mid * inner, [&](int64_t t0, int64_t t1) {
    std::vector<double> acc(kReduceBlock);
    for (int64_t t = t0; t < t1; t++) {
      const int64_t o = t / blocks, i0 = t % blocks * kReduceBlock, n = std::min(kReduceBlock, inner - i0);
      std::fill(acc.begin(), acc.begin() + n, 0.0);
      for (int64_t m = 0; m < mid; m++) accumulate_row(acc.data(), x + (o * mid + m) * inner + i0, n);
      for (int64_t i = 0; i < n; i++) out[o * inner + i0 + i] = static_cast<float>(acc[i] * scale);
    }
  });
}

void segment_sum(const float* x, const int32_t* ids, float* out, int64_t rows, int64_t inner, int64_t segments) {
  // Sequential in row order: the gradient of a gather, deterministic for a bit-exact resume.
  for (int64_t r = 0; r < rows; r++) {
    if (ids[r] < 0 || ids[r] >= segments) continue;
    float* dst = out + ids[r] * inner;
    const float* src = x + r * inner;
    for (int64_t i = 0; i < inner; i++) dst[i] += src[i];
  }
}

}  // namespace wn

// Elementwise float32 kernels: broadcasting binary ops, unary math, and softmax over the last axis.
// Threads split the rows; inner loops are written so that the compiler vectorises them.
#include <cmath>
#include <vector>

#include "vmath.h"
#include "kernels.h"
#include "parallel.h"
#include "simd.h"

namespace wn {
namespace {

/** Elements per task of the elementwise loops. */
constexpr int64_t kBlock = int64_t{1} << 14;

/** out[i] = f(a[i * sa], b[i * sb]) with the common stride patterns (1 or 0) spelled out. */
template <class F>
inline __attribute__((always_inline)) void binary_loop(float* out, const float* a, int64_t sa, const float* b,
                                                       int64_t sb, int64_t n, F f) {
  if (sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; i++) out[i] = f(a[i], b[i]);
  } else if (sa == 1 && sb == 0) {
    const float bv = *b;
    for (int64_t i = 0; i < n; i++) out[i] = f(a[i], bv);
  } else if (sa == 0 && sb == 1) {
    const float av = *a;
    for (int64_t i = 0; i < n; i++) out[i] = f(av, b[i]);
  } else {
    for (int64_t i = 0; i < n; i++) out[i] = f(a[i * sa], b[i * sb]);
  }
}

WN_MULTIVERSION
void binary_row(BinaryOp op, float* out, const float* a, int64_t sa, const float* b, int64_t sb, int64_t n) {
  switch (op) {
    case kAdd: return binary_loop(out, a, sa, b, sb, n, [](float x, float y) { return x + y; });
    case kSub: return binary_loop(out, a, sa, b, sb, n, [](float x, float y) { return x - y; });
    case kMul: return binary_loop(out, a, sa, b, sb, n, [](float x, float y) { return x * y; });
    case kDiv: return binary_loop(out, a, sa, b, sb, n, [](float x, float y) { return x / y; });
  }
}

template <class F>
inline __attribute__((always_inline)) void unary_loop(float* out, const float* x, int64_t n, F f) {
  for (int64_t i = 0; i < n; i++) out[i] = f(x[i]);
}

WN_MULTIVERSION
void unary_range(UnaryOp op, float* out, const float* x, int64_t n) {
  switch (op) {
    case kErf: return unary_loop(out, x, n, erf_as);
    case kExp: return unary_loop(out, x, n, [](float v) { return exp_vec(v); });
    case kNeg: return unary_loop(out, x, n, [](float v) { return -v; });
    case kSquare: return unary_loop(out, x, n, [](float v) { return v * v; });
    case kSqrt: return unary_loop(out, x, n, [](float v) { return std::sqrt(v); });
    case kRsqrt: return unary_loop(out, x, n, [](float v) { return 1.f / std::sqrt(v); });
    case kLogistic: return unary_loop(out, x, n, [](float v) { return 1.f / (1.f + exp_vec(-v)); });
  }
}

/** Lanes of the partial maxima and sums below: the compiler vectorises a fixed-width inner loop, but not a
 *  single running max or sum (reordering it would change the result, which it may not do on its own). */
constexpr int64_t kLanes = 16;

WN_MULTIVERSION
void softmax_row(const float* in, float* o, int64_t cols) {
  float lane_max[kLanes];
  for (int64_t l = 0; l < kLanes; l++) lane_max[l] = in[0];
  int64_t i = 0;
  for (; i + kLanes <= cols; i += kLanes) {
    for (int64_t l = 0; l < kLanes; l++) lane_max[l] = in[i + l] > lane_max[l] ? in[i + l] : lane_max[l];
  }
  float max = in[0];
  for (int64_t l = 0; l < kLanes; l++) max = lane_max[l] > max ? lane_max[l] : max;
  for (; i < cols; i++) max = in[i] > max ? in[i] : max;
  for (i = 0; i < cols; i++) o[i] = exp_vec(in[i] - max);
  double lane_sum[kLanes] = {};
  for (i = 0; i + kLanes <= cols; i += kLanes) {
    for (int64_t l = 0; l < kLanes; l++) lane_sum[l] += o[i + l];
  }
  double sum = 0;
  for (int64_t l = 0; l < kLanes; l++) sum += lane_sum[l];
  for (; i < cols; i++) sum += o[i];
  const float scale = static_cast<float>(1.0 / sum);
  for (i = 0; i < cols; i++) o[i] *= scale;
}

/** dx = y · (dy − Σ dy·y), the softmax's gradient along its row. */
WN_MULTIVERSION
void softmax_grad_row(const float* dy, const float* y, float* dx, int64_t cols) {
  double lane_dot[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= cols; i += kLanes) {
    for (int64_t l = 0; l < kLanes; l++) lane_dot[l] += static_cast<double>(dy[i + l]) * y[i + l];
  }
  double dot = 0;
  for (int64_t l = 0; l < kLanes; l++) dot += lane_dot[l];
  for (; i < cols; i++) dot += static_cast<double>(dy[i]) * y[i];
  const float d = static_cast<float>(dot);
  for (i = 0; i < cols; i++) dx[i] = y[i] * (dy[i] - d);
}

}  // namespace

void binary(BinaryOp op, const float* a, const float* b, float* out, const std::vector<int64_t>& shape,
            const std::vector<int64_t>& a_strides, const std::vector<int64_t>& b_strides) {
  const int64_t sa = a_strides.back(), sb = b_strides.back(), cols = shape.back();
  parallel_rows(shape, kBlock, [&](int64_t row, int64_t c0, int64_t c1) {
    const float* pa = a + row_offset(row, shape, a_strides) + c0 * sa;
    const float* pb = b + row_offset(row, shape, b_strides) + c0 * sb;
    binary_row(op, out + row * cols + c0, pa, sa, pb, sb, c1 - c0);
  });
}

void unary(UnaryOp op, const float* x, float* out, int64_t n) {
  parallel_for(n, op == kErf || op == kExp || op == kLogistic ? 8 * n : n,
               [&](int64_t i0, int64_t i1) { unary_range(op, out + i0, x + i0, i1 - i0); });
}

void softmax(const float* x, float* out, int64_t rows, int64_t cols) {
  parallel_for(rows, 8 * rows * cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) softmax_row(x + r * cols, out + r * cols, cols);
  });
}

void softmax_grad(const float* dy, const float* y, float* dx, int64_t rows, int64_t cols) {
  parallel_for(rows, 4 * rows * cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) softmax_grad_row(dy + r * cols, y + r * cols, dx + r * cols, cols);
  });
}

}  // namespace wn

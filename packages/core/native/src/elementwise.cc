// Elementwise float32 kernels: broadcasting binary ops, unary math, and softmax over the last axis.
// Threads split the rows; inner loops are written so that the compiler vectorises them.
#include <cmath>
#include <vector>

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

/** tfjs's erf: Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7). */
inline float erf_as(float x) {
  constexpr float p = 0.3275911f, a1 = 0.254829592f, a2 = -0.284496736f, a3 = 1.421413741f,
                  a4 = -1.453152027f, a5 = 1.061405429f;
  const float v = std::fabs(x), t = 1.f / (1.f + p * v);
  const float y = 1.f - ((((a5 * t + a4) * t + a3) * t + a2) * t + a1) * t * std::exp(-v * v);
  return x > 0.f ? y : (x < 0.f ? -y : x);
}

template <class F>
inline __attribute__((always_inline)) void unary_loop(float* out, const float* x, int64_t n, F f) {
  for (int64_t i = 0; i < n; i++) out[i] = f(x[i]);
}

WN_MULTIVERSION
void unary_range(UnaryOp op, float* out, const float* x, int64_t n) {
  switch (op) {
    case kErf: return unary_loop(out, x, n, erf_as);
    case kExp: return unary_loop(out, x, n, [](float v) { return std::exp(v); });
    case kNeg: return unary_loop(out, x, n, [](float v) { return -v; });
    case kSquare: return unary_loop(out, x, n, [](float v) { return v * v; });
    case kSqrt: return unary_loop(out, x, n, [](float v) { return std::sqrt(v); });
    case kRsqrt: return unary_loop(out, x, n, [](float v) { return 1.f / std::sqrt(v); });
  }
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
  parallel_for(n, op == kErf || op == kExp ? 8 * n : n,
               [&](int64_t i0, int64_t i1) { unary_range(op, out + i0, x + i0, i1 - i0); });
}

void softmax(const float* x, float* out, int64_t rows, int64_t cols) {
  parallel_for(rows, 8 * rows * cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* in = x + r * cols;
      float* o = out + r * cols;
      float max = in[0];
      for (int64_t i = 1; i < cols; i++) max = in[i] > max ? in[i] : max;
      double sum = 0;
      for (int64_t i = 0; i < cols; i++) {
        o[i] = std::exp(in[i] - max);
        sum += o[i];
      }
      const float scale = static_cast<float>(1.0 / sum);
      for (int64_t i = 0; i < cols; i++) o[i] *= scale;
    }
  });
}

}  // namespace wn

// Batched matrix multiply on cblas_sgemm, and the bias + activation epilogue of the fused kernels.
#include <cmath>

#include "kernels.h"
#include "parallel.h"
#include "simd.h"
#include "vmath.h"

namespace wn {

void batch_matmul(const float* a, const float* b, float* out, int64_t batch, int64_t batchA,
                  int64_t batchB, int64_t m, int64_t n, int64_t k, bool ta, bool tb) {
  const CBLAS_TRANSPOSE opA = ta ? CblasTrans : CblasNoTrans, opB = tb ? CblasTrans : CblasNoTrans;
  const int64_t lda = ta ? m : k, ldb = tb ? k : n;
  if (batchB == 1 && batchA == batch && !ta) {
    // One shared right operand: stack the left batches into a single tall matrix.
    cblas_sgemm(CblasRowMajor, opA, opB, batch * m, n, k, 1.f, a, lda, b, ldb, 0.f, out, n);
    return;
  }
  for (int64_t i = 0; i < batch; i++) {
    cblas_sgemm(CblasRowMajor, opA, opB, m, n, k, 1.f, a + (i % batchA) * m * k, lda,
                b + (i % batchB) * k * n, ldb, 0.f, out + i * m * n, n);
  }
}

namespace {

WN_MULTIVERSION
void add_bias_row(float* y, const float* bias, int64_t bias_len, int64_t channels) {
  if (bias_len == 1) {
    for (int64_t i = 0; i < channels; i++) y[i] += bias[0];
  } else {
    for (int64_t i = 0; i < channels; i++) y[i] += bias[i];
  }
}

void activate_row(float* y, int64_t channels, Activation act, const float* alpha, int64_t alpha_len,
                  float leaky_alpha) {
  for (int64_t i = 0; i < channels; i++) {
    const float v = y[i];
    switch (act) {
      case kLinear: break;
      case kRelu: y[i] = v < 0.f ? 0.f : v; break;
      case kRelu6: y[i] = v < 0.f ? 0.f : (v > 6.f ? 6.f : v); break;
      case kElu: y[i] = v >= 0.f ? v : exp_vec(v) - 1.f; break;
      case kSigmoid: y[i] = 1.f / (1.f + exp_vec(-v)); break;
      case kLeakyRelu: y[i] = v < 0.f ? leaky_alpha * v : v; break;
      case kPrelu: y[i] = v < 0.f ? alpha[alpha_len == 1 ? 0 : i] * v : v; break;
    }
  }
}

}  // namespace

void bias_activation(float* y, int64_t size, int64_t channels, const float* bias, int64_t bias_len,
                     Activation act, const float* alpha, int64_t alpha_len, float leaky_alpha) {
  const int64_t rows = size / channels;
  parallel_for(rows, size, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      float* row = y + r * channels;
      if (bias) add_bias_row(row, bias, bias_len, channels);
      if (act != kLinear) activate_row(row, channels, act, alpha, alpha_len, leaky_alpha);
    }
  });
}

}  // namespace wn

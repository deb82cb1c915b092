// Fused float32 kernels for the layers that dominate the elementwise time of Würstchen's blocks: exact GELU,
// LayerNorm over the last axis (Würstchen's channel LayerNorm on NHWC) and ConvNeXt-V2 GlobalResponseNorm,
// each with its gradient; and the AdamW update. One pass over memory replaces the chain of tfjs ops (and their
// saved intermediates, or for AdamW the fourteen parameter-sized temporaries of each update).
#include <cmath>
#include <vector>

#include "vmath.h"
#include "kernels.h"
#include "parallel.h"
#include "simd.h"

namespace wn {
namespace {

constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
/** GlobalResponseNorm's epsilon in N = G / (mean G + eps) (diffusers modeling_wuerstchen_common.py). */
constexpr double kGrnEps = 1e-6;

WN_MULTIVERSION
void gelu_range(const float* x, float* y, int64_t n) {
  // The order of the tfjs ops it replaces: (x · 0.5) · (erf(x · √½) + 1).
  for (int64_t i = 0; i < n; i++) y[i] = (x[i] * 0.5f) * (erf_as(x[i] * kSqrtHalf) + 1.f);
}

WN_MULTIVERSION
void gelu_grad_range(const float* dy, const float* x, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const float v = x[i];
    const float cdf = 0.5f * (1.f + erf_as(v * kSqrtHalf));
    dx[i] = dy[i] * (cdf + v * kInvSqrt2Pi * exp_vec(-0.5f * v * v));
  }
}

/** Mean and 1/sqrt(biased variance + eps) of one row (two passes, accumulated in double). */
WN_MULTIVERSION
void row_moments(const float* x, int64_t cols, float eps, float* mean, float* rstd) {
  double sum = 0;
  for (int64_t i = 0; i < cols; i++) sum += x[i];
  const float mu = static_cast<float>(sum / static_cast<double>(cols));
  double sq = 0;
  for (int64_t i = 0; i < cols; i++) {
    const float d = x[i] - mu;
    sq += static_cast<double>(d) * d;
  }
  *mean = mu;
  *rstd = 1.f / std::sqrt(static_cast<float>(sq / static_cast<double>(cols)) + eps);
}

WN_MULTIVERSION
void layer_norm_row(const float* x, float* y, int64_t cols, float eps) {
  float mu, r;
  row_moments(x, cols, eps, &mu, &r);
  for (int64_t i = 0; i < cols; i++) y[i] = (x[i] - mu) * r;
}

/** dx = r · (dy − mean(dy) − y · mean(dy · y)) with y = (x − μ) · r. */
WN_MULTIVERSION
void layer_norm_grad_row(const float* dy, const float* x, float* dx, int64_t cols, float eps) {
  float mu, r;
  row_moments(x, cols, eps, &mu, &r);
  double sum_dy = 0, sum_dy_y = 0;
  for (int64_t i = 0; i < cols; i++) {
    sum_dy += dy[i];
    sum_dy_y += static_cast<double>(dy[i]) * ((x[i] - mu) * r);
  }
  const float mean_dy = static_cast<float>(sum_dy / static_cast<double>(cols));
  const float mean_dy_y = static_cast<float>(sum_dy_y / static_cast<double>(cols));
  for (int64_t i = 0; i < cols; i++) dx[i] = r * (dy[i] - mean_dy - ((x[i] - mu) * r) * mean_dy_y);
}

/** acc[c] += Σ_p a[p, c] · b[p, c] over `positions` rows of `channels`, for channels [c0, c1). */
WN_MULTIVERSION
void column_dot(const float* a, const float* b, int64_t positions, int64_t channels, int64_t c0, int64_t c1,
                double* acc) {
  for (int64_t p = 0; p < positions; p++) {
    const float* ra = a + p * channels;
    const float* rb = b + p * channels;
    for (int64_t c = c0; c < c1; c++) acc[c] += static_cast<double>(ra[c]) * rb[c];
  }
}

/** Channel blocks per image for the GRN reductions: enough tasks for the threads, rows still long. */
constexpr int64_t kChannelBlock = 256;

/** g[b, c] = ‖x[b, :, c]‖₂ for every image, in double. */
std::vector<double> spatial_norms(const float* x, int64_t batch, int64_t positions, int64_t channels) {
  std::vector<double> g(batch * channels, 0.0);
  const int64_t blocks = (channels + kChannelBlock - 1) / kChannelBlock;
  parallel_for(batch * blocks, batch * positions * channels, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t b = t / blocks, c0 = t % blocks * kChannelBlock, c1 = std::min(channels, c0 + kChannelBlock);
      const float* xb = x + b * positions * channels;
      column_dot(xb, xb, positions, channels, c0, c1, g.data() + b * channels);
    }
  });
  for (double& v : g) v = std::sqrt(v);
  return g;
}

/** mean over channels of g[b, :] + eps, per image. */
std::vector<double> grn_denominators(const std::vector<double>& g, int64_t batch, int64_t channels) {
  std::vector<double> d(batch);
  for (int64_t b = 0; b < batch; b++) {
    double s = 0;
    for (int64_t c = 0; c < channels; c++) s += g[b * channels + c];
    d[b] = s / static_cast<double>(channels) + kGrnEps;
  }
  return d;
}

/** What the GRN gradients (of x and of γ) need, per image b and channel c: G = ‖x‖ over positions,
 *  d = mean_c G + eps, and Σ_p dy·x. */
struct GrnBackward {
  std::vector<double> g, d, dyx;
};

GrnBackward grn_backward_sums(const float* dy, const float* x, int64_t batch, int64_t positions, int64_t channels) {
  GrnBackward s{spatial_norms(x, batch, positions, channels), {}, std::vector<double>(batch * channels, 0.0)};
  s.d = grn_denominators(s.g, batch, channels);
  const int64_t blocks = (channels + kChannelBlock - 1) / kChannelBlock;
  parallel_for(batch * blocks, batch * positions * channels, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t b = t / blocks, c0 = t % blocks * kChannelBlock, c1 = std::min(channels, c0 + kChannelBlock);
      const int64_t off = b * positions * channels;
      column_dot(dy + off, x + off, positions, channels, c0, c1, s.dyx.data() + b * channels);
    }
  });
  return s;
}

WN_MULTIVERSION
void grn_rows(const float* x, const float* gamma, const float* beta, const float* n, float* y, int64_t rows,
              int64_t channels) {
  for (int64_t p = 0; p < rows; p++) {
    const float* xr = x + p * channels;
    float* yr = y + p * channels;
    // The order of the tfjs ops it replaces: γ · (x · N) + β + x.
    for (int64_t c = 0; c < channels; c++) yr[c] = (gamma[c] * (xr[c] * n[c]) + beta[c]) + xr[c];
  }
}

WN_MULTIVERSION
void grn_grad_rows(const float* dy, const float* x, const float* scale, const float* coef, float* dx, int64_t rows,
                   int64_t channels) {
  for (int64_t p = 0; p < rows; p++) {
    const float* dyr = dy + p * channels;
    const float* xr = x + p * channels;
    float* dxr = dx + p * channels;
    for (int64_t c = 0; c < channels; c++) dxr[c] = dyr[c] * scale[c] + coef[c] * xr[c];
  }
}

/** Rows per task of the GRN elementwise passes. */
int64_t rows_per_task(int64_t channels) { return std::max<int64_t>(1, (int64_t{1} << 14) / channels); }

/** Runs fn(b, p0, p1) over row blocks of every image, in parallel. */
template <class Fn>
void parallel_image_rows(int64_t batch, int64_t positions, int64_t channels, const Fn& fn) {
  const int64_t step = rows_per_task(channels), blocks = (positions + step - 1) / step;
  parallel_for(batch * blocks, batch * positions * channels, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t b = t / blocks, p0 = t % blocks * step;
      fn(b, p0, std::min(positions, p0 + step));
    }
  });
}

// No fused multiply-adds here: rounded like the separate tfjs ops, the update is the composed one bit for bit.
WN_MULTIVERSION __attribute__((optimize("fp-contract=off")))
void adamw_range(const float* p, const float* m, const float* v, const float* g, float* p_out, float* m_out,
                 float* v_out, int64_t n, const AdamWScalars& s) {
  // The order of the tfjs ops it replaces (train's AdamW): θ·decay − m1 / (√v1 / √bc2 + eps) · step.
  for (int64_t i = 0; i < n; i++) {
    const float m1 = m[i] * s.beta1 + g[i] * s.one_minus_beta1;
    const float v1 = v[i] * s.beta2 + (g[i] * g[i]) * s.one_minus_beta2;
    const float denom = std::sqrt(v1) / s.bc2_sqrt + s.eps;
    m_out[i] = m1;
    v_out[i] = v1;
    p_out[i] = p[i] * s.decay - m1 / denom * s.step_size;
  }
}

}  // namespace

void gelu(const float* x, float* y, int64_t n) {
  parallel_for(n, 16 * n, [&](int64_t i0, int64_t i1) { gelu_range(x + i0, y + i0, i1 - i0); });
}

void gelu_grad(const float* dy, const float* x, float* dx, int64_t n) {
  parallel_for(n, 24 * n, [&](int64_t i0, int64_t i1) { gelu_grad_range(dy + i0, x + i0, dx + i0, i1 - i0); });
}

void layer_norm(const float* x, float* y, int64_t rows, int64_t cols, float eps) {
  parallel_for(rows, 4 * rows * cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) layer_norm_row(x + r * cols, y + r * cols, cols, eps);
  });
}

void layer_norm_grad(const float* dy, const float* x, float* dx, int64_t rows, int64_t cols, float eps) {
  parallel_for(rows, 8 * rows * cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) layer_norm_grad_row(dy + r * cols, x + r * cols, dx + r * cols, cols, eps);
  });
}

void grn(const float* x, const float* gamma, const float* beta, float* y, int64_t batch, int64_t positions,
         int64_t channels) {
  const std::vector<double> g = spatial_norms(x, batch, positions, channels);
  const std::vector<double> d = grn_denominators(g, batch, channels);
  std::vector<float> n(batch * channels);
  for (int64_t i = 0; i < batch * channels; i++) n[i] = static_cast<float>(g[i] / d[i / channels]);
  parallel_image_rows(batch, positions, channels, [&](int64_t b, int64_t p0, int64_t p1) {
    const int64_t off = (b * positions + p0) * channels;
    grn_rows(x + off, gamma, beta, n.data() + b * channels, y + off, p1 - p0, channels);
  });
}

void grn_grad(const float* dy, const float* x, const float* gamma, float* dx, float* dgamma, int64_t batch,
              int64_t positions, int64_t channels) {
  const GrnBackward s = grn_backward_sums(dy, x, batch, positions, channels);
  // y = x·(γ·N + 1) + β with N = G / d, d = mean_c G + eps, G = ‖x‖ over positions. Per image:
  // dL/dG_c = s_c / d − Σ_c' s_c' G_c' / (C·d²) with s_c = γ_c Σ_p dy·x, and dG_c/dx = x / G_c (0 where G_c = 0,
  // as torch's norm gradient).
  std::vector<float> scale(batch * channels), coef(batch * channels);
  for (int64_t b = 0; b < batch; b++) {
    const double* g = s.g.data() + b * channels;
    const double* dyx = s.dyx.data() + b * channels;
    double k = 0;
    for (int64_t c = 0; c < channels; c++) k += gamma[c] * dyx[c] * g[c];
    const double d = s.d[b], cross = k / (static_cast<double>(channels) * d * d);
    for (int64_t c = 0; c < channels; c++) {
      scale[b * channels + c] = static_cast<float>(gamma[c] * g[c] / d + 1.0);
      coef[b * channels + c] = g[c] > 0 ? static_cast<float>((gamma[c] * dyx[c] / d - cross) / g[c]) : 0.f;
    }
  }
  parallel_image_rows(batch, positions, channels, [&](int64_t b, int64_t p0, int64_t p1) {
    const int64_t off = (b * positions + p0) * channels;
    grn_grad_rows(dy + off, x + off, scale.data() + b * channels, coef.data() + b * channels, dx + off, p1 - p0,
                  channels);
  });
  // dL/dγ_c = Σ_b N_bc Σ_p dy·x
  for (int64_t c = 0; c < channels; c++) {
    double acc = 0;
    for (int64_t b = 0; b < batch; b++) acc += s.g[b * channels + c] / s.d[b] * s.dyx[b * channels + c];
    dgamma[c] = static_cast<float>(acc);
  }
}

void adamw(const float* p, const float* m, const float* v, const float* g, float* p_out, float* m_out, float* v_out,
           int64_t n, const AdamWScalars& s) {
  parallel_for(n, 12 * n, [&](int64_t i0, int64_t i1) {
    adamw_range(p + i0, m + i0, v + i0, g + i0, p_out + i0, m_out + i0, v_out + i0, i1 - i0, s);
  });
}

}  // namespace wn

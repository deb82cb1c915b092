// Depthwise 2-D convolution and its gradients as direct loops: threads split the image rows, and the
// innermost loop runs over contiguous channels so that it vectorises. Channel ci with multiplier index q
// maps to output channel ci * m + q, as in TensorFlow.
#include <algorithm>
#include <mutex>
#include <utility>
#include <vector>

#include "kernels.h"
#include "parallel.h"
#include "simd.h"

namespace wn {
namespace {

int64_t multiplier(const ConvGeom& g) { return g.oc / g.c; }

/** y[ci*m + q] += x[ci] * w[ci*m + q] for one pixel and one filter tap. */
WN_MULTIVERSION
void tap_forward(float* __restrict y, const float* __restrict x, const float* __restrict w, int64_t c, int64_t m) {
  if (m == 1) {
    for (int64_t i = 0; i < c; i++) y[i] += x[i] * w[i];
  } else {
    for (int64_t i = 0; i < c; i++)
      for (int64_t q = 0; q < m; q++) y[i * m + q] += x[i] * w[i * m + q];
  }
}

/** dx[ci] += sum_q dy[ci*m + q] * w[ci*m + q] for one pixel and one filter tap. */
WN_MULTIVERSION
void tap_backprop_input(float* __restrict dx, const float* __restrict dy, const float* __restrict w, int64_t c,
                        int64_t m) {
  if (m == 1) {
    for (int64_t i = 0; i < c; i++) dx[i] += dy[i] * w[i];
  } else {
    for (int64_t i = 0; i < c; i++)
      for (int64_t q = 0; q < m; q++) dx[i] += dy[i * m + q] * w[i * m + q];
  }
}

/** dw[ci*m + q] += x[ci] * dy[ci*m + q] for one pixel and one filter tap. */
WN_MULTIVERSION
void tap_backprop_filter(float* __restrict dw, const float* __restrict x, const float* __restrict dy, int64_t c,
                         int64_t m) {
  if (m == 1) {
    for (int64_t i = 0; i < c; i++) dw[i] += x[i] * dy[i];
  } else {
    for (int64_t i = 0; i < c; i++)
      for (int64_t q = 0; q < m; q++) dw[i * m + q] += x[i] * dy[i * m + q];
  }
}

int64_t work(const ConvGeom& g) { return g.n * g.oh * g.ow * g.oc * g.kh * g.kw; }

}  // namespace

void depthwise(const float* x, const float* w, float* y, const ConvGeom& g) {
  const int64_t m = multiplier(g);
  parallel_for(g.n * g.oh, work(g), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; row++) {
      const int64_t b = row / g.oh, oy = row % g.oh;
      for (int64_t ox = 0; ox < g.ow; ox++) {
        float* out = y + (row * g.ow + ox) * g.oc;
        for (int64_t r = 0; r < g.kh; r++) {
          const int64_t iy = oy * g.sh - g.pt + r * g.dh;
          if (iy < 0 || iy >= g.h) continue;
          for (int64_t s = 0; s < g.kw; s++) {
            const int64_t ix = ox * g.sw - g.pl + s * g.dw;
            if (ix < 0 || ix >= g.w) continue;
            tap_forward(out, x + ((b * g.h + iy) * g.w + ix) * g.c, w + (r * g.kw + s) * g.oc, g.c, m);
          }
        }
      }
    }
  });
}

void depthwise_backprop_input(const float* dy, const float* w, float* dx, const ConvGeom& g) {
  const int64_t m = multiplier(g);
  parallel_for(g.n * g.h, work(g), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; row++) {
      const int64_t b = row / g.h, iy = row % g.h;
      for (int64_t ix = 0; ix < g.w; ix++) {
        float* out = dx + (row * g.w + ix) * g.c;
        for (int64_t r = 0; r < g.kh; r++) {
          const int64_t ty = iy + g.pt - r * g.dh;
          if (ty < 0 || ty % g.sh != 0 || ty / g.sh >= g.oh) continue;
          for (int64_t s = 0; s < g.kw; s++) {
            const int64_t tx = ix + g.pl - s * g.dw;
            if (tx < 0 || tx % g.sw != 0 || tx / g.sw >= g.ow) continue;
            const float* grad = dy + ((b * g.oh + ty / g.sh) * g.ow + tx / g.sw) * g.oc;
            tap_backprop_input(out, grad, w + (r * g.kw + s) * g.oc, g.c, m);
          }
        }
      }
    }
  });
}

void depthwise_backprop_filter(const float* x, const float* dy, float* dw, const ConvGeom& g) {
  // Each thread sums its rows into a private filter gradient; the partial sums are added at the end,
  // in row order so that the result does not depend on thread timing.
  const int64_t m = multiplier(g), filter_size = g.kh * g.kw * g.oc;
  std::vector<std::pair<int64_t, std::vector<float>>> partials;
  std::mutex lock;
  parallel_for(g.n * g.oh, work(g), [&](int64_t r0, int64_t r1) {
    std::vector<float> acc(filter_size, 0.f);
    for (int64_t row = r0; row < r1; row++) {
      const int64_t b = row / g.oh, oy = row % g.oh;
      for (int64_t ox = 0; ox < g.ow; ox++) {
        const float* grad = dy + (row * g.ow + ox) * g.oc;
        for (int64_t r = 0; r < g.kh; r++) {
          const int64_t iy = oy * g.sh - g.pt + r * g.dh;
          if (iy < 0 || iy >= g.h) continue;
          for (int64_t s = 0; s < g.kw; s++) {
            const int64_t ix = ox * g.sw - g.pl + s * g.dw;
            if (ix < 0 || ix >= g.w) continue;
            tap_backprop_filter(acc.data() + (r * g.kw + s) * g.oc, x + ((b * g.h + iy) * g.w + ix) * g.c, grad,
                                g.c, m);
          }
        }
      }
    }
    std::lock_guard<std::mutex> guard(lock);
    partials.emplace_back(r0, std::move(acc));
  });
  std::sort(partials.begin(), partials.end());
  for (const auto& part : partials)
    for (int64_t i = 0; i < filter_size; i++) dw[i] += part.second[i];
}

}  // namespace wn

// Depthwise 2-D convolution and its gradients as direct loops: threads split the image rows, and the
// innermost loop runs over contiguous channels so that it vectorises. Channel ci with multiplier index q
// maps to output channel ci * m + q, as in TensorFlow.
#include <algorithm>
#include <mutex>
#include <utility>
#include <vector>

#include "conv_taps.h"
#include "kernels.h"
#include "parallel.h"
#include "simd.h"

namespace wn {
namespace {

int64_t multiplier(const ConvGeom& g) { return g.oc / g.c; }

/** out[ci*m + q] += x[ci] * v[ci*m + q] for one pixel and one filter tap: the forward pass (v = filter)
 *  and the filter gradient (out = dw, v = dy). */
WN_MULTIVERSION
void tap_multiply_add(float* __restrict out, const float* __restrict x, const float* __restrict v, int64_t c,
                      int64_t m) {
  if (m == 1) {
    for (int64_t i = 0; i < c; i++) out[i] += x[i] * v[i];
  } else {
    for (int64_t i = 0; i < c; i++)
      for (int64_t q = 0; q < m; q++) out[i * m + q] += x[i] * v[i * m + q];
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

/** Channels summed over all taps in registers before one store: the output row is written once per pixel
 *  instead of once per tap, and the filter slice of a tile (taps × 64 floats) stays in L1. */
constexpr int64_t kChannelTile = 64;

/** out[c] = Σ_t x[inputs[t]·channels + c] · w[taps[t]·channels + c] for one output pixel (multiplier 1). */
WN_MULTIVERSION
void pixel_taps(float* __restrict out, const float* __restrict x, const float* __restrict w, const int64_t* taps,
                const int64_t* inputs, int64_t count, int64_t channels) {
  for (int64_t c0 = 0; c0 < channels; c0 += kChannelTile) {
    const int64_t len = std::min(kChannelTile, channels - c0);
    float acc[kChannelTile] = {};
    for (int64_t t = 0; t < count; t++) {
      const float* xi = x + inputs[t] * channels + c0;
      const float* wt = w + taps[t] * channels + c0;
      for (int64_t i = 0; i < len; i++) acc[i] += xi[i] * wt[i];
    }
    for (int64_t i = 0; i < len; i++) out[c0 + i] = acc[i];
  }
}

int64_t work(const ConvGeom& g) { return g.n * g.oh * g.ow * g.oc * g.kh * g.kw; }

}  // namespace

void depthwise(const float* x, const float* w, float* y, const ConvGeom& g) {
  const int64_t m = multiplier(g);
  parallel_for(g.n * g.oh, work(g), [&](int64_t r0, int64_t r1) {
    std::vector<int64_t> taps, inputs;
    for_each_pixel(g.oh, g.ow, r0, r1, [&](int64_t p, int64_t b, int64_t oy, int64_t ox) {
      float* out = y + p * g.oc;
      if (m != 1) {
        for_each_input_tap(g, b, oy, ox, [&](int64_t tap, int64_t i) {
          tap_multiply_add(out, x + i * g.c, w + tap * g.oc, g.c, m);
        });
        return;
      }
      taps.clear();
      inputs.clear();
      for_each_input_tap(g, b, oy, ox, [&](int64_t tap, int64_t i) {
        taps.push_back(tap);
        inputs.push_back(i);
      });
      pixel_taps(out, x, w, taps.data(), inputs.data(), static_cast<int64_t>(taps.size()), g.c);
    });
  });
}

void depthwise_backprop_input(const float* dy, const float* w, float* dx, const ConvGeom& g) {
  const int64_t m = multiplier(g);
  parallel_for(g.n * g.h, work(g), [&](int64_t r0, int64_t r1) {
    for_each_pixel(g.h, g.w, r0, r1, [&](int64_t i, int64_t b, int64_t iy, int64_t ix) {
      float* out = dx + i * g.c;
      for_each_output_tap(g, b, iy, ix, [&](int64_t tap, int64_t p) {
        tap_backprop_input(out, dy + p * g.oc, w + tap * g.oc, g.c, m);
      });
    });
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
    for_each_pixel(g.oh, g.ow, r0, r1, [&](int64_t p, int64_t b, int64_t oy, int64_t ox) {
      const float* grad = dy + p * g.oc;
      for_each_input_tap(g, b, oy, ox, [&](int64_t tap, int64_t i) {
        tap_multiply_add(acc.data() + tap * g.oc, x + i * g.c, grad, g.c, m);
      });
    });
    std::lock_guard<std::mutex> guard(lock);
    partials.emplace_back(r0, std::move(acc));
  });
  std::sort(partials.begin(), partials.end());
  for (const auto& part : partials)
    for (int64_t i = 0; i < filter_size; i++) dw[i] += part.second[i];
}

}  // namespace wn

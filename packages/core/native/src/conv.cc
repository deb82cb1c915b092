// Dense 2-D convolution and its two gradients as im2col + cblas_sgemm. The patch matrix ("cols") holds
// one row of kh*kw*c values per output pixel; it is built for a slice of output pixels at a time so that
// large images need only a bounded scratch buffer.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "parallel.h"
#include "simd.h"

namespace wn {
namespace {

/** Scratch budget for the patch matrix, in floats (16 MiB). */
constexpr int64_t kColsBudget = int64_t{1} << 22;

int64_t patch_size(const ConvGeom& g) { return g.kh * g.kw * g.c; }
int64_t out_pixels(const ConvGeom& g) { return g.n * g.oh * g.ow; }
int64_t chunk_pixels(const ConvGeom& g) {
  return std::max<int64_t>(1, std::min(out_pixels(g), kColsBudget / patch_size(g)));
}

/** Patch-matrix scratch of at least n floats, kept per calling thread: a fresh 16 MiB buffer per call
 *  would pay its first-touch page faults every time. */
float* scratch(int64_t n) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}

/** 1x1, stride 1, no padding: the image itself is the patch matrix. */
bool is_pointwise(const ConvGeom& g) {
  return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.oh == g.h &&
         g.ow == g.w;
}

/** Input row / column read by output row / column `o` at filter tap `t`; may fall outside the image. */
int64_t in_row(const ConvGeom& g, int64_t o, int64_t t) { return o * g.sh - g.pt + t * g.dh; }
int64_t in_col(const ConvGeom& g, int64_t o, int64_t t) { return o * g.sw - g.pl + t * g.dw; }

/** cols[p - p0] = the patch under output pixel p, for p in [p0, p1); zeros outside the image. */
void im2col(const float* x, const ConvGeom& g, int64_t p0, int64_t p1, float* cols) {
  const int64_t k = patch_size(g);
  parallel_for(p1 - p0, (p1 - p0) * k, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; q++) {
      const int64_t p = p0 + q, b = p / (g.oh * g.ow), oy = p / g.ow % g.oh, ox = p % g.ow;
      float* dst = cols + q * k;
      for (int64_t r = 0; r < g.kh; r++) {
        const int64_t iy = in_row(g, oy, r);
        for (int64_t s = 0; s < g.kw; s++, dst += g.c) {
          const int64_t ix = in_col(g, ox, s);
          if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) {
            std::memset(dst, 0, g.c * sizeof(float));
          } else {
            std::memcpy(dst, x + ((b * g.h + iy) * g.w + ix) * g.c, g.c * sizeof(float));
          }
        }
      }
    }
  });
}

WN_MULTIVERSION
void accumulate(float* __restrict dst, const float* __restrict src, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

/** Adjoint of im2col: dx += the patches cols[p - p0] of output pixels p in [p0, p1). Each thread gathers
 *  into its own input rows, so there are no write conflicts. */
void col2im(const float* cols, const ConvGeom& g, int64_t p0, int64_t p1, float* dx) {
  const int64_t k = patch_size(g), plane = g.oh * g.ow;
  // Input rows (b * h + iy) that the output pixels in [p0, p1) can reach.
  const auto clamp_row = [&](int64_t iy) { return std::min(g.h - 1, std::max<int64_t>(0, iy)); };
  const int64_t first = (p0 / plane) * g.h + clamp_row(in_row(g, p0 / g.ow % g.oh, 0));
  const int64_t last = ((p1 - 1) / plane) * g.h + clamp_row(in_row(g, (p1 - 1) / g.ow % g.oh, g.kh - 1));
  parallel_for(last - first + 1, (p1 - p0) * k, [&](int64_t r0, int64_t r1) {
    for (int64_t row = first + r0; row < first + r1; row++) {
      const int64_t b = row / g.h, iy = row % g.h;
      for (int64_t ix = 0; ix < g.w; ix++) {
        float* dst = dx + (row * g.w + ix) * g.c;
        for (int64_t r = 0; r < g.kh; r++) {
          const int64_t ty = iy + g.pt - r * g.dh;
          if (ty < 0 || ty % g.sh != 0 || ty / g.sh >= g.oh) continue;
          for (int64_t s = 0; s < g.kw; s++) {
            const int64_t tx = ix + g.pl - s * g.dw;
            if (tx < 0 || tx % g.sw != 0 || tx / g.sw >= g.ow) continue;
            const int64_t p = (b * g.oh + ty / g.sh) * g.ow + tx / g.sw;
            if (p < p0 || p >= p1) continue;
            accumulate(dst, cols + (p - p0) * k + (r * g.kw + s) * g.c, g.c);
          }
        }
      }
    }
  });
}

}  // namespace

void conv2d(const float* x, const float* w, float* y, const ConvGeom& g) {
  const int64_t k = patch_size(g), pixels = out_pixels(g);
  if (is_pointwise(g)) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, pixels, g.oc, k, 1.f, x, k, w, g.oc, 0.f, y, g.oc);
    return;
  }
  const int64_t chunk = chunk_pixels(g);
  float* cols = scratch(chunk * k);
  for (int64_t p0 = 0; p0 < pixels; p0 += chunk) {
    const int64_t p1 = std::min(pixels, p0 + chunk);
    im2col(x, g, p0, p1, cols);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p1 - p0, g.oc, k, 1.f, cols, k, w, g.oc,
                0.f, y + p0 * g.oc, g.oc);
  }
}

void conv2d_backprop_input(const float* dy, const float* w, float* dx, const ConvGeom& g) {
  const int64_t k = patch_size(g), pixels = out_pixels(g);
  if (is_pointwise(g)) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, pixels, k, g.oc, 1.f, dy, g.oc, w, g.oc, 0.f, dx, k);
    return;
  }
  const int64_t chunk = chunk_pixels(g);
  float* cols = scratch(chunk * k);
  for (int64_t p0 = 0; p0 < pixels; p0 += chunk) {
    const int64_t p1 = std::min(pixels, p0 + chunk);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p1 - p0, k, g.oc, 1.f, dy + p0 * g.oc, g.oc, w, g.oc,
                0.f, cols, k);
    col2im(cols, g, p0, p1, dx);
  }
}

void conv2d_backprop_filter(const float* x, const float* dy, float* dw, const ConvGeom& g) {
  const int64_t k = patch_size(g), pixels = out_pixels(g);
  if (is_pointwise(g)) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, g.oc, pixels, 1.f, x, k, dy, g.oc, 0.f, dw, g.oc);
    return;
  }
  const int64_t chunk = chunk_pixels(g);
  float* cols = scratch(chunk * k);
  for (int64_t p0 = 0; p0 < pixels; p0 += chunk) {
    const int64_t p1 = std::min(pixels, p0 + chunk);
    im2col(x, g, p0, p1, cols);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, g.oc, p1 - p0, 1.f, cols, k, dy + p0 * g.oc,
                g.oc, 1.f, dw, g.oc);
  }
}

}  // namespace wn

// Dense 2-D convolution and its two gradients as im2col + cblas_sgemm. The patch matrix ("cols") holds
// one row of kh*kw*c values per output pixel; it is built for a slice of output pixels at a time so that
// large images need only a bounded scratch buffer.
#include <algorithm>
#include <cstring>
#include <vector>

#include "conv_taps.h"
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

/** cols[p - p0] = the patch under output pixel p, for p in [p0, p1); zeros outside the image. */
void im2col(const float* x, const ConvGeom& g, int64_t p0, int64_t p1, float* cols) {
  const int64_t k = patch_size(g), bytes = g.c * sizeof(float);
  parallel_for(p1 - p0, (p1 - p0) * k, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; q++) {
      const int64_t p = p0 + q;
      float* patch = cols + q * k;
      for_each_input_tap(
          g, p / (g.oh * g.ow), p / g.ow % g.oh, p % g.ow,
          [&](int64_t tap, int64_t i) { std::memcpy(patch + tap * g.c, x + i * g.c, bytes); },
          [&](int64_t tap) { std::memset(patch + tap * g.c, 0, bytes); });
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
    for_each_pixel(g.h, g.w, first + r0, first + r1, [&](int64_t i, int64_t b, int64_t iy, int64_t ix) {
      float* dst = dx + i * g.c;
      for_each_output_tap(g, b, iy, ix, [&](int64_t tap, int64_t p) {
        if (p >= p0 && p < p1) accumulate(dst, cols + (p - p0) * k + tap * g.c, g.c);
      });
    });
  });
}

/** fn(p0, p1, cols) for consecutive slices [p0, p1) of the output pixels, with a scratch patch matrix. */
template <class Fn>
void for_each_slice(const ConvGeom& g, const Fn& fn) {
  const int64_t pixels = out_pixels(g), chunk = chunk_pixels(g);
  float* cols = scratch(chunk * patch_size(g));
  for (int64_t p0 = 0; p0 < pixels; p0 += chunk) fn(p0, std::min(pixels, p0 + chunk), cols);
}

/** fn(p0, p1, cols) with the patch matrix of output pixels [p0, p1), slice by slice (im2col); for a pointwise
 *  conv, x itself in one slice. */
template <class Fn>
void with_patches(const float* x, const ConvGeom& g, const Fn& fn) {
  if (is_pointwise(g)) return fn(int64_t{0}, out_pixels(g), x);
  for_each_slice(g, [&](int64_t p0, int64_t p1, float* cols) {
    im2col(x, g, p0, p1, cols);
    fn(p0, p1, static_cast<const float*>(cols));
  });
}

/** fn(p0, p1, cols) fills the patch-matrix gradient of output pixels [p0, p1), slice by slice, which is then
 *  added into dx (col2im); for a pointwise conv, cols is dx itself in one slice. */
template <class Fn>
void into_patches(float* dx, const ConvGeom& g, const Fn& fn) {
  if (is_pointwise(g)) return fn(int64_t{0}, out_pixels(g), dx);
  for_each_slice(g, [&](int64_t p0, int64_t p1, float* cols) {
    fn(p0, p1, cols);
    col2im(cols, g, p0, p1, dx);
  });
}

}  // namespace

void conv2d(const float* x, const float* w, float* y, const ConvGeom& g) {
  const int64_t k = patch_size(g);
  with_patches(x, g, [&](int64_t p0, int64_t p1, const float* cols) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p1 - p0, g.oc, k, 1.f, cols, k, w, g.oc, 0.f,
                y + p0 * g.oc, g.oc);
  });
}

void conv2d_backprop_input(const float* dy, const float* w, float* dx, const ConvGeom& g) {
  const int64_t k = patch_size(g);
  into_patches(dx, g, [&](int64_t p0, int64_t p1, float* cols) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p1 - p0, k, g.oc, 1.f, dy + p0 * g.oc, g.oc, w, g.oc,
                0.f, cols, k);
  });
}

/** dw (zero-filled) accumulates colsᵀ · dy over the slices. */
void conv2d_backprop_filter(const float* x, const float* dy, float* dw, const ConvGeom& g) {
  const int64_t k = patch_size(g);
  with_patches(x, g, [&](int64_t p0, int64_t p1, const float* cols) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, g.oc, p1 - p0, 1.f, cols, k, dy + p0 * g.oc, g.oc,
                1.f, dw, g.oc);
  });
}

}  // namespace wn

// Filter-tap iteration shared by the dense (conv.cc) and depthwise (depthwise.cc) convolutions: which input
// pixel each tap of an output pixel reads, and its adjoint, which output pixels an input pixel reaches.
// Pixels are flat NHWC indices without the channel: input pixel (b, iy, ix) is (b * h + iy) * w + ix, output
// pixel (b, oy, ox) is (b * oh + oy) * ow + ox; tap (r, s) is r * kw + s.
#pragma once
#include <cstdint>

#include "kernels.h"

namespace wn {

/** Input row / column read by output row / column `o` at filter tap `t`; may fall outside the image. */
inline int64_t in_row(const ConvGeom& g, int64_t o, int64_t t) { return o * g.sh - g.pt + t * g.dh; }
inline int64_t in_col(const ConvGeom& g, int64_t o, int64_t t) { return o * g.sw - g.pl + t * g.dw; }

/** A tap callback that does nothing (the default `miss`). */
struct NoTap {
  void operator()(int64_t) const {}
};

/** hit(tap, i) for each tap of output pixel (b, oy, ox) that reads input pixel i; miss(tap) for each tap in
 *  the padding. */
template <class Hit, class Miss = NoTap>
inline void for_each_input_tap(const ConvGeom& g, int64_t b, int64_t oy, int64_t ox, const Hit& hit,
                               const Miss& miss = Miss{}) {
  for (int64_t r = 0; r < g.kh; r++) {
    const int64_t iy = in_row(g, oy, r);
    if (iy < 0 || iy >= g.h) {
      for (int64_t s = 0; s < g.kw; s++) miss(r * g.kw + s);
      continue;
    }
    for (int64_t s = 0; s < g.kw; s++) {
      const int64_t ix = in_col(g, ox, s);
      if (ix < 0 || ix >= g.w) {
        miss(r * g.kw + s);
      } else {
        hit(r * g.kw + s, (b * g.h + iy) * g.w + ix);
      }
    }
  }
}

/** fn(tap, p) for each tap through which input pixel (b, iy, ix) reaches output pixel p (the adjoint of
 *  for_each_input_tap). */
template <class Fn>
inline void for_each_output_tap(const ConvGeom& g, int64_t b, int64_t iy, int64_t ix, const Fn& fn) {
  for (int64_t r = 0; r < g.kh; r++) {
    const int64_t ty = iy + g.pt - r * g.dh;
    if (ty < 0 || ty % g.sh != 0 || ty / g.sh >= g.oh) continue;
    for (int64_t s = 0; s < g.kw; s++) {
      const int64_t tx = ix + g.pl - s * g.dw;
      if (tx < 0 || tx % g.sw != 0 || tx / g.sw >= g.ow) continue;
      fn(r * g.kw + s, (b * g.oh + ty / g.sh) * g.ow + tx / g.sw);
    }
  }
}

/** fn(pixel, b, y, x) for every pixel in rows [r0, r1) of a batch of height x width images (row = b * height
 *  + y): output rows with (oh, ow), input rows with (h, w). */
template <class Fn>
inline void for_each_pixel(int64_t height, int64_t width, int64_t r0, int64_t r1, const Fn& fn) {
  for (int64_t row = r0; row < r1; row++) {
    const int64_t b = row / height, y = row % height;
    for (int64_t x = 0; x < width; x++) fn(row * width + x, b, y, x);
  }
}

}  // namespace wn

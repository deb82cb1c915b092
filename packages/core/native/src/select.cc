// Which implementation runs each convolution and batched matmul (see kernels.h): oneDNN where the build links it
// (WUERSTCHEN_DNNL) and it takes the case, else OpenBLAS (im2col + sgemm, a loop of sgemm) and the direct
// depthwise loops.
#include "kernels.h"

#ifdef WUERSTCHEN_DNNL
#include "dnnl_conv.h"
// True when oneDNN ran the call.
#define WN_DNNL(call) dnnl_conv::call
#else
#define WN_DNNL(call) false
#endif

namespace wn {
namespace select {
namespace {

/** The part of the epilogue the convolution did not fuse. */
void finish(float* y, const ConvGeom& g, const Epilogue& e) {
  if (e.empty()) return;
  bias_activation(y, g.n * g.oh * g.ow * g.oc, g.oc, e.bias, e.bias_len, e.act, e.alpha, e.alpha_len, e.leaky_alpha);
}

}  // namespace

void conv2d(const float* x, const float* w, float* y, const ConvGeom& g, Epilogue e) {
  if (!WN_DNNL(conv2d(x, w, y, g, e))) wn::conv2d(x, w, y, g);
  finish(y, g, e);
}

void conv2d_backprop_input(const float* dy, const float* w, float* dx, const ConvGeom& g) {
  if (!WN_DNNL(conv2d_backprop_input(dy, w, dx, g))) wn::conv2d_backprop_input(dy, w, dx, g);
}

void conv2d_backprop_filter(const float* x, const float* dy, float* dw, const ConvGeom& g) {
  if (!WN_DNNL(conv2d_backprop_filter(x, dy, dw, g))) wn::conv2d_backprop_filter(x, dy, dw, g);
}

void depthwise(const float* x, const float* w, float* y, const ConvGeom& g, Epilogue e) {
  if (!WN_DNNL(depthwise(x, w, y, g, e))) wn::depthwise(x, w, y, g);
  finish(y, g, e);
}

void depthwise_backprop_input(const float* dy, const float* w, float* dx, const ConvGeom& g) {
  if (!WN_DNNL(depthwise_backprop_input(dy, w, dx, g))) wn::depthwise_backprop_input(dy, w, dx, g);
}

void depthwise_backprop_filter(const float* x, const float* dy, float* dw, const ConvGeom& g) {
  if (!WN_DNNL(depthwise_backprop_filter(x, dy, dw, g))) wn::depthwise_backprop_filter(x, dy, dw, g);
}

void batch_matmul(const float* a, const float* b, float* out, int64_t batch, int64_t batchA, int64_t batchB,
                  int64_t m, int64_t n, int64_t k, bool ta, bool tb) {
  if (!WN_DNNL(batch_matmul(a, b, out, batch, batchA, batchB, m, n, k, ta, tb))) {
    wn::batch_matmul(a, b, out, batch, batchA, batchB, m, n, k, ta, tb);
  }
}

}  // namespace select
}  // namespace wn

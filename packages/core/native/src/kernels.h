// Compute kernels behind the N-API glue in addon.cc. All tensors are dense row-major float32;
// images are NHWC and conv filters HWIO ([kh, kw, in, out]; depthwise: [kh, kw, in, multiplier]).
// Outputs arrive zero-filled from JS.
#pragma once
#include <cstdint>
#include <vector>

namespace wn {

/** Geometry of a 2-D convolution, as computed by tfjs's backend_util.computeConv2DInfo. */
struct ConvGeom {
  int64_t n, h, w, c;     // input batch, height, width, channels
  int64_t oh, ow, oc;     // output height, width, channels (depthwise: c * multiplier)
  int64_t kh, kw;         // filter size
  int64_t sh, sw;         // strides
  int64_t dh, dw;         // dilations
  int64_t pt, pl;         // top and left padding
};

/** Fused epilogue activations, numbered as in native.ts. */
enum Activation { kLinear, kRelu, kRelu6, kElu, kSigmoid, kLeakyRelu, kPrelu };

/** y = act(y + bias) after a convolution; bias / alpha have 1 or `channels` entries (or are null). */
struct Epilogue {
  const float* bias = nullptr;
  int64_t bias_len = 0;
  Activation act = kLinear;
  const float* alpha = nullptr;
  int64_t alpha_len = 0;
  float leaky_alpha = 0.2f;
  bool empty() const { return !bias && act == kLinear; }
};

// gemm.cc
/** out[i] = op(a[i % batchA]) @ op(b[i % batchB]) for i < batch; op transposes when ta / tb. */
void batch_matmul(const float* a, const float* b, float* out, int64_t batch, int64_t batchA,
                  int64_t batchB, int64_t m, int64_t n, int64_t k, bool ta, bool tb);
/** y = act(y + bias) over rows of `channels`; bias / alpha have 1 or `channels` entries (or are null). */
void bias_activation(float* y, int64_t size, int64_t channels, const float* bias, int64_t bias_len,
                     Activation act, const float* alpha, int64_t alpha_len, float leaky_alpha);

// conv.cc (im2col + sgemm)
void conv2d(const float* x, const float* w, float* y, const ConvGeom& g);
void conv2d_backprop_input(const float* dy, const float* w, float* dx, const ConvGeom& g);
void conv2d_backprop_filter(const float* x, const float* dy, float* dw, const ConvGeom& g);

// depthwise.cc (direct loops)
void depthwise(const float* x, const float* w, float* y, const ConvGeom& g);
void depthwise_backprop_input(const float* dy, const float* w, float* dx, const ConvGeom& g);
void depthwise_backprop_filter(const float* x, const float* dy, float* dw, const ConvGeom& g);

// select.cc: what addon.cc calls. oneDNN when the build has it and it takes the case, else the kernels
// above; then whatever part of the epilogue oneDNN did not fuse.
namespace select {
void conv2d(const float* x, const float* w, float* y, const ConvGeom& g, Epilogue e);
void conv2d_backprop_input(const float* dy, const float* w, float* dx, const ConvGeom& g);
void conv2d_backprop_filter(const float* x, const float* dy, float* dw, const ConvGeom& g);
void depthwise(const float* x, const float* w, float* y, const ConvGeom& g, Epilogue e);
void depthwise_backprop_input(const float* dy, const float* w, float* dx, const ConvGeom& g);
void depthwise_backprop_filter(const float* x, const float* dy, float* dw, const ConvGeom& g);
void batch_matmul(const float* a, const float* b, float* out, int64_t batch, int64_t batchA, int64_t batchB,
                  int64_t m, int64_t n, int64_t k, bool ta, bool tb);
}  // namespace select

// elementwise.cc
enum BinaryOp { kAdd, kSub, kMul, kDiv };
enum UnaryOp { kErf, kExp, kNeg, kSquare, kSqrt, kRsqrt, kLogistic };
/** out = a op b over `shape`; the strides (in elements) are 0 along broadcast dims. */
void binary(BinaryOp op, const float* a, const float* b, float* out, const std::vector<int64_t>& shape,
            const std::vector<int64_t>& a_strides, const std::vector<int64_t>& b_strides);
void unary(UnaryOp op, const float* x, float* out, int64_t n);
/** Softmax of each row of a [rows, cols] matrix, and its gradient given the softmax y. */
void softmax(const float* x, float* out, int64_t rows, int64_t cols);
void softmax_grad(const float* dy, const float* y, float* dx, int64_t rows, int64_t cols);

// fused.cc
/** y = x · Φ(x) (exact GELU, with tfjs's erf) and its gradient dx = dy · (Φ(x) + x · φ(x)). */
void gelu(const float* x, float* y, int64_t n);
void gelu_grad(const float* dy, const float* x, float* dx, int64_t n);
/** Each row of [rows, cols] normalised to zero mean and unit biased variance (eps inside the sqrt), and the
 *  gradient of that with respect to x. */
void layer_norm(const float* x, float* y, int64_t rows, int64_t cols, float eps);
void layer_norm_grad(const float* dy, const float* x, float* dx, int64_t rows, int64_t cols, float eps);
/** GlobalResponseNorm of x [batch, positions, channels] with gamma, beta [channels], its gradient with respect
 *  to x, and with respect to gamma (summed over the batch; beta's is the plain sum of dy). */
void grn(const float* x, const float* gamma, const float* beta, float* y, int64_t batch, int64_t positions,
         int64_t channels);
/** The gradients of grn with respect to x (`dx`, like x) and γ (`dgamma`, [channels]), from one pass of sums. */
void grn_grad(const float* dy, const float* x, const float* gamma, float* dx, float* dgamma, int64_t batch,
              int64_t positions, int64_t channels);
/** One AdamW update (PyTorch's, decoupled decay) of a parameter p with moments m, v and gradient g:
 *  m' = β1·m + (1−β1)·g, v' = β2·v + (1−β2)·g², p' = p·decay − m' / (√v' / bc2_sqrt + eps) · step_size. */
struct AdamWScalars {
  // 1 − β is rounded from double like the tfjs scalar it replaces, not computed in float.
  float beta1, one_minus_beta1, beta2, one_minus_beta2, decay, step_size, bc2_sqrt, eps;
};
void adamw(const float* p, const float* m, const float* v, const float* g, float* p_out, float* m_out, float* v_out,
           int64_t n, const AdamWScalars& s);

// layout.cc
/** out (dense, `shape`) = x read with element `strides`: transposes and slices. */
void strided_copy(const float* x, float* out, const std::vector<int64_t>& shape, const std::vector<int64_t>& strides);
/** out[o, i] = scale * sum_m x[o, m, i] for x viewed as [outer, mid, inner]. */
void reduce_sum(const float* x, float* out, int64_t outer, int64_t mid, int64_t inner, float scale);
/** out[ids[r], i] += x[r, i] for x viewed as [rows, inner], in row order; ids outside [0, segments) are dropped. */
void segment_sum(const float* x, const int32_t* ids, float* out, int64_t rows, int64_t inner, int64_t segments);

}  // namespace wn

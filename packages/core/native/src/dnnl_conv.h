// Convolutions and batched matmuls through oneDNN (Debian's libdnnl, built with OpenMP), compiled only when the
// build found it (WUERSTCHEN_DNNL). The JS tensors (NHWC activations, HWIO filters) are handed to oneDNN as they
// are, except where its kernel wants its own layout: filters then, and the activations of dense forward and
// input-gradient convolutions (blocked kernels beat the NHWC ones on AVX2), are reordered around the call.
#pragma once
#include <cstdint>

#include "kernels.h"

namespace wn {
namespace dnnl_conv {

/** The addon's kernels oneDNN can run, in the order of kKernelNames. */
enum Kernel { kConv2d, kConv2dBackpropInput, kConv2dBackpropFilter, kDepthwise, kDepthwiseBackpropInput,
              kDepthwiseBackpropFilter, kBatchMatMul, kKernelCount };
extern const char* const kKernelNames[kKernelCount];

/** Whether oneDNN runs kernel k. WUERSTCHEN_DNNL picks: unset or 1, the kernels where oneDNN 2.6 beat the
 *  OpenBLAS / direct-loop ones on the project machine (AVX2; docs/perf.md); `all`, every convolution;
 *  0, none. */
bool routes(Kernel k);
/** e.g. "2.6.3". */
const char* version();

/** Primitives cached and the cache's bound; lookups that found / built their primitive; convolutions run. */
struct Stats {
  int64_t cached, capacity, hits, misses, runs;
};
Stats stats();

// Each returns false, having written nothing, when oneDNN does not take the case (the caller then runs the
// OpenBLAS kernel). conv2d applies the part of `e` that oneDNN can fuse and clears it from `e`.
bool conv2d(const float* x, const float* w, float* y, const ConvGeom& g, Epilogue& e);
bool conv2d_backprop_input(const float* dy, const float* w, float* dx, const ConvGeom& g);
bool conv2d_backprop_filter(const float* x, const float* dy, float* dw, const ConvGeom& g);
bool depthwise(const float* x, const float* w, float* y, const ConvGeom& g, Epilogue& e);
bool depthwise_backprop_input(const float* dy, const float* w, float* dx, const ConvGeom& g);
bool depthwise_backprop_filter(const float* x, const float* dy, float* dw, const ConvGeom& g);
/** As wn::batch_matmul, when each operand's batch is either 1 (broadcast) or the full batch. */
bool batch_matmul(const float* a, const float* b, float* out, int64_t batch, int64_t batch_a, int64_t batch_b,
                  int64_t m, int64_t n, int64_t k, bool ta, bool tb);

}  // namespace dnnl_conv
}  // namespace wn

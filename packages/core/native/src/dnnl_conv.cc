// oneDNN convolutions (see dnnl_conv.h). Primitives are built once per shape and kept in a small LRU cache,
// because building one (choosing and JIT-compiling a kernel) costs far more than a small convolution.
#include "dnnl_conv.h"
#include "parallel.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <oneapi/dnnl/dnnl.hpp>

static_assert(DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP, "match_threads sizes an OpenMP team (build-native.js checks)");

namespace wn {
namespace dnnl_conv {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
constexpr auto kF32 = memory::data_type::f32;

enum class Pass : int64_t { kForward, kBackwardData, kBackwardWeights };
/** First key field of a matmul in the primitive cache (convolutions have their Pass there). */
constexpr int64_t kMatMulKey = 3;

dnnl::engine& engine() {
  static dnnl::engine cpu(dnnl::engine::kind::cpu, 0);
  return cpu;
}

dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

/** oneDNN (OpenMP) runs on at most as many threads as OpenBLAS, so that the pools never ask for more cores than
 *  the user allowed, and on one thread for fewer than 2^24 multiply-adds per thread: waking OpenMP's team costs
 *  more than that saves once another process holds a core (the bundled tiny model: 2.7-4.2 s per image with a
 *  2^20 threshold, 1.5 s on OpenBLAS). The OpenMP setting is per calling thread, hence set before every call. */
void match_threads(int64_t macs) { omp_set_num_threads(static_cast<int>(threads_for(macs, int64_t{1} << 24))); }

/** Multiply-adds of a convolution. */
int64_t conv_macs(const ConvGeom& g, bool depthwise) {
  return g.n * g.oh * g.ow * g.oc * g.kh * g.kw * (depthwise ? 1 : g.c);
}

/** The memory descriptors of one convolution over the JS tensors, in oneDNN's terms. */
struct Shapes {
  memory::desc src, dst, weights;  // weights: the JS filter layout (HWIO, or depthwise [kh, kw, c, m])
  memory::dims weight_dims, strides, dilation, pad_l, pad_r;
  bool valid = false;
};

/** tfjs gives the top/left padding only. The bottom/right one is what makes oneDNN's output size formula,
 *  (in - extent + pad_l + pad_r) / stride + 1, give tfjs's output size; tfjs may leave the last input rows
 *  unread ('valid' with a stride), which a bottom padding of 0 reproduces through the floor division. */
bool far_padding(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t dilation, int64_t near, int64_t* far) {
  const int64_t extent = (k - 1) * dilation + 1;
  *far = std::max<int64_t>(0, (out - 1) * stride + extent - in - near);
  return (in - extent + near + *far) / stride + 1 == out;
}

Shapes shapes(const ConvGeom& g, bool depthwise) {
  Shapes s;
  int64_t pb = 0, pr = 0;
  if (!far_padding(g.h, g.oh, g.kh, g.sh, g.dh, g.pt, &pb) || !far_padding(g.w, g.ow, g.kw, g.sw, g.dw, g.pl, &pr)) {
    return s;
  }
  s.src = memory::desc({g.n, g.c, g.h, g.w}, kF32, Tag::nhwc);
  s.dst = memory::desc({g.n, g.oc, g.oh, g.ow}, kF32, Tag::nhwc);
  if (depthwise) {
    // groups = c; logical dims (group, out per group = multiplier, in per group = 1, kh, kw) over the
    // physical [kh, kw, c, m] filter.
    const int64_t m = g.oc / g.c;
    s.weight_dims = {g.c, m, 1, g.kh, g.kw};
    s.weights = memory::desc(s.weight_dims, kF32, memory::dims{m, 1, 1, g.kw * g.c * m, g.c * m});
  } else {
    s.weight_dims = {g.oc, g.c, g.kh, g.kw};
    s.weights = memory::desc(s.weight_dims, kF32, Tag::hwio);
  }
  s.strides = {g.sh, g.sw};
  s.dilation = {g.dh - 1, g.dw - 1};  // oneDNN counts the extra gap: 0 = no dilation
  s.pad_l = {g.pt, g.pl};
  s.pad_r = {pb, pr};
  s.valid = true;
  return s;
}

/** oneDNN's eltwise post-op for a tfjs activation; false for prelu (per-channel weights), which the caller
 *  applies afterwards. */
bool eltwise_of(Activation act, float leaky, dnnl::algorithm* alg, float* alpha, float* beta) {
  *alpha = 0.f;
  *beta = 0.f;
  switch (act) {
    case kRelu: *alg = dnnl::algorithm::eltwise_relu; return true;
    case kRelu6: *alg = dnnl::algorithm::eltwise_clip, *beta = 6.f; return true;
    case kElu: *alg = dnnl::algorithm::eltwise_elu, *alpha = 1.f; return true;
    case kSigmoid: *alg = dnnl::algorithm::eltwise_logistic; return true;
    case kLeakyRelu: *alg = dnnl::algorithm::eltwise_relu, *alpha = leaky; return true;
    default: return false;
  }
}

/** Which part of an epilogue oneDNN fuses: a per-channel bias, then any activation but prelu. A bias it
 *  cannot take (a broadcast scalar) must come before the activation, so then nothing is fused. */
struct Fusion {
  bool bias = false;
  Activation act = kLinear;
};

Fusion fusion_of(const Epilogue& e, int64_t channels) {
  Fusion f;
  if (e.bias && e.bias_len != channels) return f;
  f.bias = e.bias != nullptr;
  dnnl::algorithm alg;
  float a, b;
  if (eltwise_of(e.act, e.leaky_alpha, &alg, &a, &b)) f.act = e.act;
  return f;
}

/** One operand of a convolution in the layout its kernel wants, with the reorder from (inputs) or to (outputs)
 *  the JS layout when the two differ. */
struct Operand {
  memory::desc wanted;
  bool reorder = false;
  dnnl::reorder convert;
};

/** A built primitive. A convolution's `weights` is the filter (gradient); `src` and `dst` are the activations
 *  (their gradients in the backward passes). A matmul's operands are `a`, `b` and `out`. */
struct Entry {
  bool supported = false;
  dnnl::primitive primitive;
  Operand weights, src, dst;
  memory::desc a, b, out;
};

/** Whether the activations take the kernel's own (blocked, nChw8c on AVX2) layout, reordered on the way in and
 *  out, instead of the JS NHWC one. Measured on AVX2 (3x3x320x320 at 64x64): blocked forward and input-gradient
 *  kernels took 0.7-0.85x the NHWC ones' time, reorders included, as in torch, which reorders too. Depthwise
 *  kernels and the filter gradient are as fast or faster on NHWC. */
bool blocked_activations(Pass pass, bool depthwise) { return !depthwise && pass != Pass::kBackwardWeights; }

/** The descriptors a primitive is built from: the filter always `any`; the activations `any` when they may be
 *  blocked, else the JS NHWC layout. */
struct Wanted {
  memory::desc src, weights, dst;
};

Wanted wanted(const Shapes& s, Pass pass, bool depthwise) {
  const bool blocked = blocked_activations(pass, depthwise);
  const auto act = [blocked](const memory::desc& d) {
    return blocked ? memory::desc(d.dims(), kF32, Tag::any) : d;
  };
  return {act(s.src), memory::desc(s.weight_dims, kF32, Tag::any), act(s.dst)};
}

dnnl::convolution_forward::desc forward_desc(const Shapes& s, const Wanted& w, dnnl::prop_kind prop, bool bias) {
  const auto alg = dnnl::algorithm::convolution_direct;
  if (bias) {
    const memory::desc b({s.weight_dims[0] * (s.weight_dims.size() == 5 ? s.weight_dims[1] : 1)}, kF32, Tag::a);
    return {prop, alg, w.src, w.weights, b, w.dst, s.strides, s.dilation, s.pad_l, s.pad_r};
  }
  return {prop, alg, w.src, w.weights, w.dst, s.strides, s.dilation, s.pad_l, s.pad_r};
}

dnnl::primitive_attr attr_of(const Fusion& f, float leaky) {
  dnnl::primitive_attr attr;
  dnnl::algorithm alg;
  float alpha, beta;
  if (eltwise_of(f.act, leaky, &alg, &alpha, &beta)) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.f, alg, alpha, beta);
    attr.set_post_ops(ops);
  }
  return attr;
}

/** Records the layout a kernel chose for an operand whose JS layout is `user`: an input is reordered into it
 *  before the kernel runs, an output out of it afterwards. */
Operand operand(const memory::desc& wanted, const memory::desc& user, bool input) {
  Operand o;
  o.wanted = wanted;
  o.reorder = wanted != user;
  if (o.reorder) {
    o.convert = input ? dnnl::reorder(dnnl::reorder::primitive_desc(engine(), user, engine(), wanted))
                      : dnnl::reorder(dnnl::reorder::primitive_desc(engine(), wanted, engine(), user));
  }
  return o;
}

Entry build(const Shapes& s, Pass pass, bool depthwise, const Fusion& f, float leaky) {
  Entry e;
  const auto& eng = engine();
  const Wanted w = wanted(s, pass, depthwise);
  const auto fwd_pd = dnnl::convolution_forward::primitive_desc(
      forward_desc(s, w, pass == Pass::kForward ? dnnl::prop_kind::forward_inference
                                                : dnnl::prop_kind::forward_training,
                   f.bias),
      attr_of(f, leaky), eng);
  const auto alg = dnnl::algorithm::convolution_direct;
  if (pass == Pass::kForward) {
    e.primitive = dnnl::convolution_forward(fwd_pd);
    e.src = operand(fwd_pd.src_desc(), s.src, true);
    e.weights = operand(fwd_pd.weights_desc(), s.weights, true);
    e.dst = operand(fwd_pd.dst_desc(), s.dst, false);
  } else if (pass == Pass::kBackwardData) {
    const dnnl::convolution_backward_data::primitive_desc pd(
        {alg, w.src, w.weights, w.dst, s.strides, s.dilation, s.pad_l, s.pad_r}, eng, fwd_pd);
    e.primitive = dnnl::convolution_backward_data(pd);
    e.src = operand(pd.diff_src_desc(), s.src, false);
    e.weights = operand(pd.weights_desc(), s.weights, true);
    e.dst = operand(pd.diff_dst_desc(), s.dst, true);
  } else {
    const dnnl::convolution_backward_weights::primitive_desc pd(
        {alg, w.src, w.weights, w.dst, s.strides, s.dilation, s.pad_l, s.pad_r}, eng, fwd_pd);
    e.primitive = dnnl::convolution_backward_weights(pd);
    e.src = operand(pd.src_desc(), s.src, true);
    e.weights = operand(pd.diff_weights_desc(), s.weights, false);
    e.dst = operand(pd.diff_dst_desc(), s.dst, true);
  }
  e.supported = true;
  return e;
}

/** Built primitives (convolutions and matmuls) by key, least recently used evicted first. A case oneDNN has
 *  no implementation for is remembered too (`supported` false), so it is not retried. */
class Cache {
 public:
  using Key = std::array<int64_t, 19>;

  template <class Build>
  std::shared_ptr<const Entry> get(const Key& key, const Build& build) {
    std::lock_guard<std::mutex> guard(lock_);
    const auto found = index_.find(key);
    if (found != index_.end()) {
      hits_++;
      order_.splice(order_.begin(), order_, found->second);
      return found->second->second;
    }
    misses_++;
    auto entry = std::make_shared<Entry>();
    try {
      *entry = build();
    } catch (const dnnl::error&) {
      entry->supported = false;
    }
    order_.emplace_front(key, entry);
    index_[key] = order_.begin();
    if (order_.size() > kCapacity) {
      index_.erase(order_.back().first);
      order_.pop_back();
    }
    return entry;
  }

  Stats stats() {
    std::lock_guard<std::mutex> guard(lock_);
    return {static_cast<int64_t>(order_.size()), static_cast<int64_t>(kCapacity), hits_, misses_, 0};
  }

 private:
  static constexpr size_t kCapacity = 256;  // a Würstchen step uses a few dozen conv and matmul shapes
  std::mutex lock_;
  std::list<std::pair<Key, std::shared_ptr<const Entry>>> order_;
  std::map<Key, decltype(order_)::iterator> index_;
  int64_t hits_ = 0, misses_ = 0;
};

/** [batch, rows, cols] row-major, or its transpose in memory when `transposed` (a batch of 1 broadcasts). */
memory::desc matrices(int64_t batch, int64_t rows, int64_t cols, bool transposed) {
  const memory::dims strides = transposed ? memory::dims{rows * cols, 1, rows} : memory::dims{rows * cols, cols, 1};
  return memory::desc({batch, rows, cols}, kF32, strides);
}

Entry build_matmul(int64_t batch, int64_t batch_a, int64_t batch_b, int64_t m, int64_t n, int64_t k, bool ta,
                   bool tb) {
  Entry e;
  e.a = matrices(batch_a, m, k, ta);
  e.b = matrices(batch_b, k, n, tb);
  e.out = matrices(batch, m, n, false);
  e.primitive = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(e.a, e.b, e.out), engine()));
  e.supported = true;
  return e;
}

std::atomic<int64_t> runs{0};

Cache& cache() {
  static Cache c;
  return c;
}

/** Per-thread buffer for a filter in the kernel's layout, reused so that its pages are touched only once. */
void* filter_scratch(size_t bytes) {
  thread_local std::unique_ptr<void, decltype(&std::free)> buffer(nullptr, &std::free);
  thread_local size_t size = 0;
  if (bytes > size) {
    buffer.reset(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
    if (!buffer) throw std::bad_alloc();
    size = bytes;
  }
  return buffer.get();
}

std::shared_ptr<const Entry> lookup(const ConvGeom& g, Pass pass, bool depthwise, const Fusion& f, float leaky,
                                    Shapes* s) {
  *s = shapes(g, depthwise);
  if (!s->valid) return nullptr;
  float leaky_key = f.act == kLeakyRelu ? leaky : 0.f;
  int32_t leaky_bits = 0;
  std::memcpy(&leaky_bits, &leaky_key, sizeof leaky_bits);
  const Cache::Key key{static_cast<int64_t>(pass), depthwise, g.n, g.h, g.w, g.c, g.oh, g.ow, g.oc, g.kh, g.kw,
                       g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, f.bias * 16 + f.act, leaky_bits};
  auto entry = cache().get(key, [&] { return build(*s, pass, depthwise, f, leaky); });
  return entry->supported ? entry : nullptr;
}

memory wrap(const memory::desc& d, const float* data) {
  return memory(d, engine(), const_cast<float*>(data));  // oneDNN's memory takes a non-const handle
}

/** Which operand a converted copy is of: the filter's copy is kept in a per-thread buffer between calls;
 *  an activation's (up to hundreds of MB) is allocated for the call and freed after it. */
enum class Copy { kFilter, kActivation };

memory converted(const Operand& o, Copy copy) {
  if (copy == Copy::kFilter) return memory(o.wanted, engine(), filter_scratch(o.wanted.get_size()));
  return memory(o.wanted, engine());
}

/** An input in the kernel's layout: the JS memory itself, or a converted copy. */
memory input(const Operand& o, const memory::desc& user_desc, const float* data, Copy copy) {
  memory user = wrap(user_desc, data);
  if (!o.reorder) return user;
  memory c = converted(o, copy);
  o.convert.execute(stream(), user, c);
  return c;
}

/** Where the kernel writes an output: the JS memory itself, or a copy that `finish` converts into it. */
memory output(const Operand& o, const memory::desc& user_desc, float* data, Copy copy) {
  return o.reorder ? converted(o, copy) : wrap(user_desc, data);
}

void finish(const Operand& o, memory out, const memory::desc& user_desc, float* data) {
  if (o.reorder) {
    memory user = wrap(user_desc, data);
    o.convert.execute(stream(), out, user);
  }
  stream().wait();
  runs++;
}

bool forward(const float* x, const float* w, float* y, const ConvGeom& g, Epilogue& ep, bool depthwise) {
  if (!routes(depthwise ? kDepthwise : kConv2d)) return false;
  const Fusion f = fusion_of(ep, g.oc);
  Shapes s;
  const auto e = lookup(g, Pass::kForward, depthwise, f, ep.leaky_alpha, &s);
  if (!e) return false;
  match_threads(conv_macs(g, depthwise));
  const memory out = output(e->dst, s.dst, y, Copy::kActivation);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, input(e->src, s.src, x, Copy::kActivation)},
                                       {DNNL_ARG_WEIGHTS, input(e->weights, s.weights, w, Copy::kFilter)},
                                       {DNNL_ARG_DST, out}};
  if (f.bias) args.emplace(DNNL_ARG_BIAS, wrap(memory::desc({g.oc}, kF32, Tag::a), ep.bias));
  e->primitive.execute(stream(), args);
  finish(e->dst, out, s.dst, y);
  if (f.bias) ep.bias = nullptr;
  if (f.act != kLinear) ep.act = kLinear;
  return true;
}

bool backward_data(const float* dy, const float* w, float* dx, const ConvGeom& g, bool depthwise) {
  if (!routes(depthwise ? kDepthwiseBackpropInput : kConv2dBackpropInput)) return false;
  Shapes s;
  const auto e = lookup(g, Pass::kBackwardData, depthwise, Fusion{}, 0.f, &s);
  if (!e) return false;
  match_threads(conv_macs(g, depthwise));
  const memory out = output(e->src, s.src, dx, Copy::kActivation);
  e->primitive.execute(stream(), {{DNNL_ARG_DIFF_DST, input(e->dst, s.dst, dy, Copy::kActivation)},
                                  {DNNL_ARG_WEIGHTS, input(e->weights, s.weights, w, Copy::kFilter)},
                                  {DNNL_ARG_DIFF_SRC, out}});
  finish(e->src, out, s.src, dx);
  return true;
}

bool backward_weights(const float* x, const float* dy, float* dw, const ConvGeom& g, bool depthwise) {
  if (!routes(depthwise ? kDepthwiseBackpropFilter : kConv2dBackpropFilter)) return false;
  Shapes s;
  const auto e = lookup(g, Pass::kBackwardWeights, depthwise, Fusion{}, 0.f, &s);
  if (!e) return false;
  match_threads(conv_macs(g, depthwise));
  const memory out = output(e->weights, s.weights, dw, Copy::kFilter);
  e->primitive.execute(stream(), {{DNNL_ARG_SRC, input(e->src, s.src, x, Copy::kActivation)},
                                  {DNNL_ARG_DIFF_DST, input(e->dst, s.dst, dy, Copy::kActivation)},
                                  {DNNL_ARG_DIFF_WEIGHTS, out}});
  finish(e->weights, out, s.weights, dw);
  return true;
}

}  // namespace

const char* const kKernelNames[kKernelCount] = {"conv2d",    "conv2dBackpropInput",    "conv2dBackpropFilter",
                                                "depthwise", "depthwiseBackpropInput", "depthwiseBackpropFilter",
                                                "matmul"};

bool routes(Kernel k) {
  static const unsigned mask = [] {
    const char* v = std::getenv("WUERSTCHEN_DNNL");
    if (v && std::strcmp(v, "0") == 0) return 0u;
    if (v && std::strcmp(v, "all") == 0) return (1u << kKernelCount) - 1;
    // Measured on AVX2 (no AVX-512 in the VM), best of 8 on a 3x3x320x320 conv at 64x64 and on depthwise
    // 3x3 at 2x24x24x1536 and 1x64x64x96: oneDNN's filter gradient took 1.0-1.3x the im2col + sgemm time
    // (blocked; 1.6-2x on NHWC), so that one stays on OpenBLAS; its depthwise forward 0.25-0.6x and depthwise
    // gradients 0.7-0.95x the direct loops' time. Matmuls: 0.35-0.8x the time of a loop of sgemm calls on the
    // prior's attention shapes, and 0.8-0.98x of one sgemm on its linear layers (forward and both gradients).
    return (1u << kKernelCount) - 1 - (1u << kConv2dBackpropFilter);
  }();
  return mask >> k & 1u;
}

const char* version() {
  static std::string text = [] {
    const dnnl_version_t* v = dnnl_version();
    return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
  }();
  return text.c_str();
}

Stats stats() {
  Stats s = cache().stats();
  s.runs = runs.load();
  return s;
}

bool batch_matmul(const float* a, const float* b, float* out, int64_t batch, int64_t batch_a, int64_t batch_b,
                  int64_t m, int64_t n, int64_t k, bool ta, bool tb) {
  const auto broadcastable = [batch](int64_t bx) { return bx == 1 || bx == batch; };
  if (!routes(kBatchMatMul) || !broadcastable(batch_a) || !broadcastable(batch_b)) return false;
  const Cache::Key key{kMatMulKey, batch, batch_a, batch_b, m, n, k, ta, tb};
  const auto e = cache().get(key, [&] { return build_matmul(batch, batch_a, batch_b, m, n, k, ta, tb); });
  if (!e->supported) return false;
  match_threads(batch * m * n * k);
  e->primitive.execute(stream(), {{DNNL_ARG_SRC, wrap(e->a, a)}, {DNNL_ARG_WEIGHTS, wrap(e->b, b)},
                                  {DNNL_ARG_DST, wrap(e->out, out)}});
  stream().wait();
  runs++;
  return true;
}

bool conv2d(const float* x, const float* w, float* y, const ConvGeom& g, Epilogue& e) {
  return forward(x, w, y, g, e, false);
}
bool conv2d_backprop_input(const float* dy, const float* w, float* dx, const ConvGeom& g) {
  return backward_data(dy, w, dx, g, false);
}
bool conv2d_backprop_filter(const float* x, const float* dy, float* dw, const ConvGeom& g) {
  return backward_weights(x, dy, dw, g, false);
}
bool depthwise(const float* x, const float* w, float* y, const ConvGeom& g, Epilogue& e) {
  return forward(x, w, y, g, e, true);
}
bool depthwise_backprop_input(const float* dy, const float* w, float* dx, const ConvGeom& g) {
  return backward_data(dy, w, dx, g, true);
}
bool depthwise_backprop_filter(const float* x, const float* dy, float* dw, const ConvGeom& g) {
  return backward_weights(x, dy, dw, g, true);
}

}  // namespace dnnl_conv
}  // namespace wn

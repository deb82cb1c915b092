// N-API bindings: unpack Float32Arrays and integers, check sizes, call the kernels in kernels.h.
// Every function is synchronous and writes into an output array that JS allocated (zero-filled).
#include <node_api.h>
#include <sys/mman.h>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "kernels.h"
#include "parallel.h"
#ifdef WUERSTCHEN_DNNL
#include "dnnl_conv.h"
#endif

namespace {

using wn::ConvGeom;

/** Asks Linux to back the 2 MiB-aligned interior of a large output that JS has just allocated (and not
 *  yet touched) with transparent huge pages. First-touch page faults are expensive in this VM: 64 MiB
 *  take ~70 ms with 4 KiB pages and ~15 ms with huge pages. Advisory only; harmless where unsupported. */
void advise_huge_pages(float* data, int64_t length) {
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(data + length) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
}

/** Reads call arguments by position. The first bad argument throws a JS TypeError; later reads return
 *  neutral values, and the binding returns as soon as ok() is false. */
class Args {
 public:
  Args(napi_env env, napi_callback_info info) : env_(env) {
    napi_get_cb_info(env, info, &argc_, argv_, nullptr, nullptr);
  }
  bool ok() const { return ok_; }
  /** Whether argument i was passed and is not null or undefined. */
  bool present(size_t i) { return !is_nullish(i); }

  /** A Float32Array of at least `min_len` elements; null or undefined gives nullptr when `optional`. */
  float* f32(size_t i, int64_t min_len, bool optional = false, int64_t* len = nullptr) {
    return typed<float>(i, min_len, napi_float32_array, "must be a Float32Array", optional, len);
  }

  /** An Int32Array of at least `min_len` elements. */
  const int32_t* i32(size_t i, int64_t min_len) {
    return typed<int32_t>(i, min_len, napi_int32_array, "must be an Int32Array", false, nullptr);
  }

  /** A fresh output Float32Array of at least `min_len` elements. */
  float* output(size_t i, int64_t min_len) {
    int64_t length = 0;
    float* data = f32(i, min_len, false, &length);
    if (data) advise_huge_pages(data, length);
    return data;
  }

  int64_t i64(size_t i) {
    int64_t v = 0;
    if (i >= argc_ || napi_get_value_int64(env_, argv_[i], &v) != napi_ok) fail(i, "must be a number");
    return v;
  }

  double f64(size_t i) {
    double v = 0;
    if (i >= argc_ || napi_get_value_double(env_, argv_[i], &v) != napi_ok) fail(i, "must be a number");
    return v;
  }

  bool flag(size_t i) {
    bool v = false;
    if (i >= argc_ || napi_get_value_bool(env_, argv_[i], &v) != napi_ok) fail(i, "must be a boolean");
    return v;
  }

  /** An array of non-negative integers (shapes, strides). */
  std::vector<int64_t> dims(size_t i) {
    std::vector<int64_t> v;
    uint32_t length = 0;
    bool is_array = false;
    if (i < argc_) napi_is_array(env_, argv_[i], &is_array);
    if (!is_array || napi_get_array_length(env_, argv_[i], &length) != napi_ok) return fail(i, "must be an array"), v;
    for (uint32_t j = 0; j < length; j++) {
      napi_value e;
      int64_t d = -1;
      napi_get_element(env_, argv_[i], j, &e);
      if (napi_get_value_int64(env_, e, &d) != napi_ok || d < 0) return fail(i, "must hold integers >= 0"), v;
      v.push_back(d);
    }
    return v;
  }

  /** An array [n, h, w, c, oh, ow, oc, kh, kw, sh, sw, dh, dw, pt, pl] of positive sizes. */
  ConvGeom geom(size_t i) {
    int64_t v[15] = {0};
    uint32_t length = 0;
    bool is_array = false;
    if (i < argc_) napi_is_array(env_, argv_[i], &is_array);
    if (!is_array || napi_get_array_length(env_, argv_[i], &length) != napi_ok || length != 15) {
      fail(i, "must be an array of 15 conv sizes");
      return ConvGeom{};
    }
    for (uint32_t j = 0; j < 15; j++) {
      napi_value e;
      napi_get_element(env_, argv_[i], j, &e);
      if (napi_get_value_int64(env_, e, &v[j]) != napi_ok || (j < 13 && v[j] <= 0) || v[j] < 0) {
        fail(i, "must be an array of 15 conv sizes");
        return ConvGeom{};
      }
    }
    return ConvGeom{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14]};
  }

 private:
  template <typename T>
  T* typed(size_t i, int64_t min_len, napi_typedarray_type want, const char* what, bool optional, int64_t* len) {
    if (optional && is_nullish(i)) return nullptr;
    napi_typedarray_type type;
    size_t length = 0;
    void* data = nullptr;
    bool is_typed = false;
    if (i < argc_) napi_is_typedarray(env_, argv_[i], &is_typed);
    if (!is_typed || napi_get_typedarray_info(env_, argv_[i], &type, &length, &data, nullptr, nullptr) != napi_ok ||
        type != want) {
      return fail(i, what), nullptr;
    }
    if (static_cast<int64_t>(length) < min_len) return fail(i, "is too short"), nullptr;
    if (len) *len = static_cast<int64_t>(length);
    return static_cast<T*>(data);
  }

  bool is_nullish(size_t i) {
    napi_valuetype t = napi_undefined;
    if (i < argc_) napi_typeof(env_, argv_[i], &t);
    return t == napi_null || t == napi_undefined;
  }
  void fail(size_t i, const char* what) {
    if (ok_) napi_throw_type_error(env_, nullptr, ("argument " + std::to_string(i) + " " + what).c_str());
    ok_ = false;
  }

  static constexpr size_t kMaxArgs = 12;
  napi_env env_;
  size_t argc_ = kMaxArgs;
  napi_value argv_[kMaxArgs] = {};
  bool ok_ = true;
};

/** Runs a kernel; a C++ exception (out of memory, a oneDNN failure) becomes a JS Error. */
template <class Fn>
void guarded(napi_env env, const char* name, const Fn& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, (std::string(name) + ": " + e.what()).c_str());
  }
}

/** matmul(a, b, out, batch, batchA, batchB, m, n, k, transposeA, transposeB) */
napi_value MatMul(napi_env env, napi_callback_info info) {
  Args args(env, info);
  const int64_t batch = args.i64(3), batch_a = args.i64(4), batch_b = args.i64(5);
  const int64_t m = args.i64(6), n = args.i64(7), k = args.i64(8);
  const bool ta = args.flag(9), tb = args.flag(10);
  if (args.ok() && (batch_a <= 0 || batch_b <= 0 || batch % batch_a || batch % batch_b || m <= 0 || n <= 0 || k <= 0)) {
    napi_throw_range_error(env, nullptr, "matmul: bad sizes");
    return nullptr;
  }
  const float* a = args.f32(0, batch_a * m * k);
  const float* b = args.f32(1, batch_b * k * n);
  float* out = args.output(2, batch * m * n);
  if (!args.ok()) return nullptr;
  guarded(env, "matmul", [&] { wn::select::batch_matmul(a, b, out, batch, batch_a, batch_b, m, n, k, ta, tb); });
  return nullptr;
}

/** biasActivation(y, channels, bias | null, activation, alpha | null, leakyAlpha) */
napi_value BiasActivation(napi_env env, napi_callback_info info) {
  Args args(env, info);
  int64_t size = 0, bias_len = 0, alpha_len = 0;
  float* y = args.f32(0, 0, false, &size);
  const int64_t channels = args.i64(1);
  const float* bias = args.f32(2, 1, true, &bias_len);
  const int64_t act = args.i64(3);
  const float* alpha = args.f32(4, 1, true, &alpha_len);
  const float leaky = static_cast<float>(args.f64(5));
  if (!args.ok()) return nullptr;
  const auto fits = [channels](const float* p, int64_t len) { return !p || len == 1 || len == channels; };
  if (channels <= 0 || size % channels || !fits(bias, bias_len) || !fits(alpha, alpha_len) || act < wn::kLinear ||
      act > wn::kPrelu || (act == wn::kPrelu && !alpha)) {
    napi_throw_range_error(env, nullptr, "biasActivation: bad sizes");
    return nullptr;
  }
  wn::bias_activation(y, size, channels, bias, bias_len, static_cast<wn::Activation>(act), alpha, alpha_len, leaky);
  return nullptr;
}

/** Which tensor of a convolution an argument is, for the size check. */
enum class Role { kInput, kOutput, kFilter, kDepthwiseFilter };

int64_t size_of(Role role, const ConvGeom& g) {
  switch (role) {
    case Role::kInput: return g.n * g.h * g.w * g.c;
    case Role::kOutput: return g.n * g.oh * g.ow * g.oc;
    case Role::kFilter: return g.kh * g.kw * g.c * g.oc;
    case Role::kDepthwiseFilter: return g.kh * g.kw * g.oc;
  }
  return 0;
}

using ConvFn = void (*)(const float*, const float*, float*, const ConvGeom&);
using FusedConvFn = void (*)(const float*, const float*, float*, const ConvGeom&, wn::Epilogue);

/** fn(in0, in1, out, geom) for the four convolution gradients. */
template <ConvFn Fn, Role R0, Role R1, Role R2>
napi_value Conv(napi_env env, napi_callback_info info) {
  Args args(env, info);
  const ConvGeom g = args.geom(3);
  if (!args.ok()) return nullptr;
  const float* in0 = args.f32(0, size_of(R0, g));
  const float* in1 = args.f32(1, size_of(R1, g));
  float* out = args.output(2, size_of(R2, g));
  if (args.ok()) guarded(env, "conv", [&] { Fn(in0, in1, out, g); });
  return nullptr;
}

/** fn(x, filter, y, geom[, bias | null, activation, alpha | null, leakyAlpha]) for the two forward
 *  convolutions; the optional epilogue is y = activation(y + bias), as biasActivation. */
template <FusedConvFn Fn, Role RF>
napi_value FusedConv(napi_env env, napi_callback_info info) {
  Args args(env, info);
  const ConvGeom g = args.geom(3);
  if (!args.ok()) return nullptr;
  const float* x = args.f32(0, size_of(Role::kInput, g));
  const float* w = args.f32(1, size_of(RF, g));
  float* y = args.output(2, size_of(Role::kOutput, g));
  wn::Epilogue e;
  if (args.present(5)) {
    e.bias = args.f32(4, 1, true, &e.bias_len);
    const int64_t act = args.i64(5);
    e.alpha = args.f32(6, 1, true, &e.alpha_len);
    e.leaky_alpha = static_cast<float>(args.f64(7));
    const auto fits = [&g](const float* p, int64_t len) { return !p || len == 1 || len == g.oc; };
    if (args.ok() && (!fits(e.bias, e.bias_len) || !fits(e.alpha, e.alpha_len) || act < wn::kLinear ||
                      act > wn::kPrelu || (act == wn::kPrelu && !e.alpha))) {
      napi_throw_range_error(env, nullptr, "conv epilogue: bad bias, alpha or activation");
      return nullptr;
    }
    e.act = static_cast<wn::Activation>(act);
  }
  if (args.ok()) guarded(env, "conv", [&] { Fn(x, w, y, g, e); });
  return nullptr;
}

/** Elements spanned by a strided view: 1 + the largest offset, or 0 if empty. */
int64_t extent(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides) {
  int64_t last = 0;
  for (size_t d = 0; d < shape.size(); d++) {
    if (shape[d] == 0) return 0;
    last += (shape[d] - 1) * strides[d];
  }
  return last + 1;
}

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

/** binary(op, a, b, out, shape, aStrides, bStrides) */
napi_value Binary(napi_env env, napi_callback_info info) {
  Args args(env, info);
  const int64_t op = args.i64(0);
  const std::vector<int64_t> shape = args.dims(4), sa = args.dims(5), sb = args.dims(6);
  if (args.ok() && (op < wn::kAdd || op > wn::kDiv || shape.empty() || sa.size() != shape.size() ||
                    sb.size() != shape.size() || product(shape) == 0)) {
    napi_throw_range_error(env, nullptr, "binary: bad op or shapes");
    return nullptr;
  }
  const float* a = args.f32(1, extent(shape, sa));
  const float* b = args.f32(2, extent(shape, sb));
  float* out = args.output(3, product(shape));
  if (args.ok()) wn::binary(static_cast<wn::BinaryOp>(op), a, b, out, shape, sa, sb);
  return nullptr;
}

/** unary(op, x, out) */
napi_value Unary(napi_env env, napi_callback_info info) {
  Args args(env, info);
  int64_t n = 0;
  const int64_t op = args.i64(0);
  const float* x = args.f32(1, 0, false, &n);
  float* out = args.output(2, n);
  if (args.ok() && (op < wn::kErf || op > wn::kLogistic)) {
    napi_throw_range_error(env, nullptr, "unary: bad op");
    return nullptr;
  }
  if (args.ok()) wn::unary(static_cast<wn::UnaryOp>(op), x, out, n);
  return nullptr;
}

/** softmax(x, out, cols) */
napi_value Softmax(napi_env env, napi_callback_info info) {
  Args args(env, info);
  int64_t n = 0;
  const float* x = args.f32(0, 0, false, &n);
  float* out = args.output(1, n);
  const int64_t cols = args.i64(2);
  if (args.ok() && (cols <= 0 || n % cols)) {
    napi_throw_range_error(env, nullptr, "softmax: bad sizes");
    return nullptr;
  }
  if (args.ok()) wn::softmax(x, out, n / cols, cols);
  return nullptr;
}

/** softmaxGrad(dy, y, dx, cols) */
napi_value SoftmaxGrad(napi_env env, napi_callback_info info) {
  Args args(env, info);
  int64_t n = 0;
  const float* dy = args.f32(0, 0, false, &n);
  const float* y = args.f32(1, n);
  float* dx = args.output(2, n);
  const int64_t cols = args.i64(3);
  if (args.ok() && (cols <= 0 || n % cols)) {
    napi_throw_range_error(env, nullptr, "softmaxGrad: bad sizes");
    return nullptr;
  }
  if (args.ok()) wn::softmax_grad(dy, y, dx, n / cols, cols);
  return nullptr;
}

/** gelu(x, y) */
napi_value Gelu(napi_env env, napi_callback_info info) {
  Args args(env, info);
  int64_t n = 0;
  const float* x = args.f32(0, 0, false, &n);
  float* y = args.output(1, n);
  if (args.ok()) wn::gelu(x, y, n);
  return nullptr;
}

/** geluGrad(dy, x, dx) */
napi_value GeluGrad(napi_env env, napi_callback_info info) {
  Args args(env, info);
  int64_t n = 0;
  const float* dy = args.f32(0, 0, false, &n);
  const float* x = args.f32(1, n);
  float* dx = args.output(2, n);
  if (args.ok()) wn::gelu_grad(dy, x, dx, n);
  return nullptr;
}

/** layerNorm(x, y, cols, eps) */
napi_value LayerNorm(napi_env env, napi_callback_info info) {
  Args args(env, info);
  int64_t n = 0;
  const float* x = args.f32(0, 0, false, &n);
  float* y = args.output(1, n);
  const int64_t cols = args.i64(2);
  const float eps = static_cast<float>(args.f64(3));
  if (args.ok() && (cols <= 0 || n % cols)) {
    napi_throw_range_error(env, nullptr, "layerNorm: bad sizes");
    return nullptr;
  }
  if (args.ok()) wn::layer_norm(x, y, n / cols, cols, eps);
  return nullptr;
}

/** layerNormGrad(dy, x, dx, cols, eps) */
napi_value LayerNormGrad(napi_env env, napi_callback_info info) {
  Args args(env, info);
  int64_t n = 0;
  const float* dy = args.f32(0, 0, false, &n);
  const float* x = args.f32(1, n);
  float* dx = args.output(2, n);
  const int64_t cols = args.i64(3);
  const float eps = static_cast<float>(args.f64(4));
  if (args.ok() && (cols <= 0 || n % cols)) {
    napi_throw_range_error(env, nullptr, "layerNormGrad: bad sizes");
    return nullptr;
  }
  if (args.ok()) wn::layer_norm_grad(dy, x, dx, n / cols, cols, eps);
  return nullptr;
}

/** Sizes [batch, positions, channels] of a GlobalResponseNorm call, all positive. */
bool grn_sizes(napi_env env, Args& args, size_t i, int64_t* batch, int64_t* positions, int64_t* channels) {
  *batch = args.i64(i), *positions = args.i64(i + 1), *channels = args.i64(i + 2);
  if (args.ok() && (*batch <= 0 || *positions <= 0 || *channels <= 0)) {
    napi_throw_range_error(env, nullptr, "grn: bad sizes");
    return false;
  }
  return args.ok();
}

/** grn(x, gamma, beta, y, batch, positions, channels) */
napi_value Grn(napi_env env, napi_callback_info info) {
  Args args(env, info);
  int64_t b, p, c;
  if (!grn_sizes(env, args, 4, &b, &p, &c)) return nullptr;
  const float* x = args.f32(0, b * p * c);
  const float* gamma = args.f32(1, c);
  const float* beta = args.f32(2, c);
  float* y = args.output(3, b * p * c);
  if (args.ok()) guarded(env, "grn", [&] { wn::grn(x, gamma, beta, y, b, p, c); });
  return nullptr;
}

/** grnGrad(dy, x, gamma, dx, dgamma, batch, positions, channels) */
napi_value GrnGrad(napi_env env, napi_callback_info info) {
  Args args(env, info);
  int64_t b, p, c;
  if (!grn_sizes(env, args, 5, &b, &p, &c)) return nullptr;
  const float* dy = args.f32(0, b * p * c);
  const float* x = args.f32(1, b * p * c);
  const float* gamma = args.f32(2, c);
  float* dx = args.output(3, b * p * c);
  float* dgamma = args.output(4, c);
  if (args.ok()) guarded(env, "grnGrad", [&] { wn::grn_grad(dy, x, gamma, dx, dgamma, b, p, c); });
  return nullptr;
}

/** adamw(p, m, v, g, pOut, mOut, vOut, [β1, 1−β1, β2, 1−β2, decay, stepSize, √bc2, eps]) */
napi_value AdamW(napi_env env, napi_callback_info info) {
  Args args(env, info);
  int64_t n = 0;
  const float* p = args.f32(0, 0, false, &n);
  const float* m = args.f32(1, n);
  const float* v = args.f32(2, n);
  const float* g = args.f32(3, n);
  float* p_out = args.output(4, n);
  float* m_out = args.output(5, n);
  float* v_out = args.output(6, n);
  const float* k = args.f32(7, 8);
  if (!args.ok()) return nullptr;
  const wn::AdamWScalars s{k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]};
  wn::adamw(p, m, v, g, p_out, m_out, v_out, n, s);
  return nullptr;
}

/** stridedCopy(x, out, offset, shape, strides) */
napi_value StridedCopy(napi_env env, napi_callback_info info) {
  Args args(env, info);
  const int64_t offset = args.i64(2);
  const std::vector<int64_t> shape = args.dims(3), strides = args.dims(4);
  if (args.ok() && (offset < 0 || shape.empty() || strides.size() != shape.size() || product(shape) == 0)) {
    napi_throw_range_error(env, nullptr, "stridedCopy: bad shapes");
    return nullptr;
  }
  const float* x = args.f32(0, offset + extent(shape, strides));
  float* out = args.output(1, product(shape));
  if (args.ok()) wn::strided_copy(x + offset, out, shape, strides);
  return nullptr;
}

/** reduceSum(x, out, outer, mid, inner, scale) */
napi_value ReduceSum(napi_env env, napi_callback_info info) {
  Args args(env, info);
  const int64_t outer = args.i64(2), mid = args.i64(3), inner = args.i64(4);
  const float scale = static_cast<float>(args.f64(5));
  if (args.ok() && (outer <= 0 || mid <= 0 || inner <= 0)) {
    napi_throw_range_error(env, nullptr, "reduceSum: bad sizes");
    return nullptr;
  }
  const float* x = args.f32(0, outer * mid * inner);
  float* out = args.output(1, outer * inner);
  if (args.ok()) wn::reduce_sum(x, out, outer, mid, inner, scale);
  return nullptr;
}

/** segmentSum(x, ids, out, rows, inner, segments): out[ids[r], :] += x[r, :]; ids outside [0, segments) are dropped. */
napi_value SegmentSum(napi_env env, napi_callback_info info) {
  Args args(env, info);
  const int64_t rows = args.i64(3), inner = args.i64(4), segments = args.i64(5);
  if (args.ok() && (rows < 0 || inner <= 0 || segments <= 0)) {
    napi_throw_range_error(env, nullptr, "segmentSum: bad sizes");
    return nullptr;
  }
  const float* x = args.f32(0, rows * inner);
  const int32_t* ids = args.i32(1, rows);
  float* out = args.output(2, segments * inner);
  if (args.ok()) wn::segment_sum(x, ids, out, rows, inner, segments);
  return nullptr;
}

/** info() -> { threads, config, coreName } of the OpenBLAS library in use. */
napi_value Info(napi_env env, napi_callback_info) {
  napi_value result, threads, config, core;
  napi_create_object(env, &result);
  napi_create_int32(env, openblas_get_num_threads(), &threads);
  napi_create_string_utf8(env, openblas_get_config(), NAPI_AUTO_LENGTH, &config);
  napi_create_string_utf8(env, openblas_get_corename(), NAPI_AUTO_LENGTH, &core);
  napi_set_named_property(env, result, "threads", threads);
  napi_set_named_property(env, result, "config", config);
  napi_set_named_property(env, result, "coreName", core);
  return result;
}

napi_value Int(napi_env env, int64_t v) {
  napi_value r;
  napi_create_int64(env, v, &r);
  return r;
}

/** features() -> { blas: 'OpenBLAS', dnnl: version | null, dnnlLinked, dnnlKernels: names, dnnlStats: { cached,
 *  capacity, hits, misses, runs } | null }. dnnl is null when the build lacks oneDNN or WUERSTCHEN_DNNL=0 switched
 *  it off; dnnlKernels are the addon functions oneDNN runs. */
napi_value Features(napi_env env, napi_callback_info) {
  napi_value result, blas, dnnl, linked, stats, kernels;
  napi_create_object(env, &result);
  napi_create_array(env, &kernels);
  napi_create_string_utf8(env, "OpenBLAS", NAPI_AUTO_LENGTH, &blas);
  napi_get_null(env, &dnnl);
  napi_get_null(env, &stats);
#ifdef WUERSTCHEN_DNNL
  napi_get_boolean(env, true, &linked);
  for (int k = 0, i = 0; k < wn::dnnl_conv::kKernelCount; k++) {
    if (!wn::dnnl_conv::routes(static_cast<wn::dnnl_conv::Kernel>(k))) continue;
    napi_value name;
    napi_create_string_utf8(env, wn::dnnl_conv::kKernelNames[k], NAPI_AUTO_LENGTH, &name);
    napi_set_element(env, kernels, i++, name);
  }
  uint32_t routed = 0;
  napi_get_array_length(env, kernels, &routed);
  if (routed > 0) {
    napi_create_string_utf8(env, wn::dnnl_conv::version(), NAPI_AUTO_LENGTH, &dnnl);
    const auto s = wn::dnnl_conv::stats();
    napi_create_object(env, &stats);
    napi_set_named_property(env, stats, "cached", Int(env, s.cached));
    napi_set_named_property(env, stats, "capacity", Int(env, s.capacity));
    napi_set_named_property(env, stats, "hits", Int(env, s.hits));
    napi_set_named_property(env, stats, "misses", Int(env, s.misses));
    napi_set_named_property(env, stats, "runs", Int(env, s.runs));
  }
#else
  napi_get_boolean(env, false, &linked);
#endif
  napi_set_named_property(env, result, "blas", blas);
  napi_set_named_property(env, result, "dnnl", dnnl);
  napi_set_named_property(env, result, "dnnlLinked", linked);
  napi_set_named_property(env, result, "dnnlKernels", kernels);
  napi_set_named_property(env, result, "dnnlStats", stats);
  return result;
}

}  // namespace

NAPI_MODULE_INIT() {
  constexpr Role I = Role::kInput, O = Role::kOutput, F = Role::kFilter, D = Role::kDepthwiseFilter;
  // Ordinary writable properties, so that tests can spy on the calls.
  const napi_property_descriptor props[] = {
      {"matmul", nullptr, MatMul, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"biasActivation", nullptr, BiasActivation, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"conv2d", nullptr, FusedConv<wn::select::conv2d, F>, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"conv2dBackpropInput", nullptr, Conv<wn::select::conv2d_backprop_input, O, F, I>, nullptr, nullptr, nullptr,
       napi_default_jsproperty, nullptr},
      {"conv2dBackpropFilter", nullptr, Conv<wn::select::conv2d_backprop_filter, I, O, F>, nullptr, nullptr, nullptr,
       napi_default_jsproperty, nullptr},
      {"depthwise", nullptr, FusedConv<wn::select::depthwise, D>, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"depthwiseBackpropInput", nullptr, Conv<wn::select::depthwise_backprop_input, O, D, I>, nullptr, nullptr, nullptr,
       napi_default_jsproperty, nullptr},
      {"depthwiseBackpropFilter", nullptr, Conv<wn::select::depthwise_backprop_filter, I, O, D>, nullptr, nullptr, nullptr,
       napi_default_jsproperty, nullptr},
      {"binary", nullptr, Binary, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"unary", nullptr, Unary, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"softmax", nullptr, Softmax, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"softmaxGrad", nullptr, SoftmaxGrad, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"gelu", nullptr, Gelu, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"geluGrad", nullptr, GeluGrad, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"layerNorm", nullptr, LayerNorm, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"layerNormGrad", nullptr, LayerNormGrad, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"grn", nullptr, Grn, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"grnGrad", nullptr, GrnGrad, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"adamw", nullptr, AdamW, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"stridedCopy", nullptr, StridedCopy, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"reduceSum", nullptr, ReduceSum, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"segmentSum", nullptr, SegmentSum, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"features", nullptr, Features, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
      {"info", nullptr, Info, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

// Float math that the compiler can vectorise (no libm calls in the loops): e^x and tfjs's erf. The build passes
// -fno-trapping-math, without which GCC keeps the range checks below as branches and vectorises nothing.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace wn {

/** e^x within 1.2e-7 relative (1 ulp) for x in [-87.3, 88.72]; subnormal results below that, 0 under -103.9,
 *  inf above 88.72, NaN stays NaN. x = n·ln2 + r with |r| ≤ ln2/2; e^r by Cephes' degree-6 polynomial;
 *  2^n = 2^(n/2)·2^(n−n/2) from exponent bits, so that subnormal results and n = 128 need no special case. */
inline __attribute__((always_inline)) float exp_vec(float x) {
  float xc = x < -103.9f ? -103.9f : x;
  xc = xc > 88.72283f ? 88.72283f : xc;
  const float n = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest via 1.5·2²³
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;           // ln2 split in two for precision
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t ni = static_cast<int32_t>(n), n1 = ni >> 1;
  const int32_t b1 = (n1 + 127) << 23, b2 = (ni - n1 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, sizeof s1);
  std::memcpy(&s2, &b2, sizeof s2);
  float y = p * s1 * s2;
  y = x < -103.9f ? 0.f : y;
  y = x > 88.72283f ? __builtin_inff() : y;
  return x != x ? x : y;
}

/** Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as tfjs's cpu and wasm backends compute erf. */
inline __attribute__((always_inline)) float erf_as(float x) {
  constexpr float p = 0.3275911f, a1 = 0.254829592f, a2 = -0.284496736f, a3 = 1.421413741f, a4 = -1.453152027f,
                  a5 = 1.061405429f;
  const float v = std::fabs(x), t = 1.f / (1.f + p * v);
  const float y = 1.f - ((((a5 * t + a4) * t + a3) * t + a2) * t + a1) * t * exp_vec(-v * v);
  return x > 0.f ? y : (x < 0.f ? -y : x);
}

}  // namespace wn

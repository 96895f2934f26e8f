// Shifted sums over a plane, shared by the BatchNorm statistics (csrc/batchnorm.cc) and the
// depthwise forward that gives the next BatchNorm its statistics (csrc/depthwise.cc).
#pragma once
#include <algorithm>
#include <cstdint>

namespace mnv2 {

// Float partial sums of the BatchNorm statistics and gradient sums run over at most this many values
// before going into a double.
constexpr int64_t kFloatSumBlock = 2048;

// sum(p - shift) and sum((p - shift)^2) over n values: float partial sums over blocks of
// kFloatSumBlock values, added into doubles. The shift, a value near the mean, keeps E[d^2] - E[d]^2
// accurate when the mean is large against the spread.
inline void shifted_moments(const float *__restrict p, int64_t n, float shift, double &sum, double &sq) {
  sum = 0.0;
  sq = 0.0;
  for (int64_t b = 0; b < n; b += kFloatSumBlock) {
    const int64_t e = std::min(n, b + kFloatSumBlock);
    float a = 0.0f, q = 0.0f;
#pragma omp simd reduction(+ : a, q)
    for (int64_t i = b; i < e; ++i) {
      const float d = p[i] - shift;
      a += d;
      q += d * d;
    }
    sum += a;
    sq += q;
  }
}

}  // namespace mnv2

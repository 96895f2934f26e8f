// The sums a training BatchNorm needs over a plane, shared by its kernels (csrc/batchnorm.cc) and
// the depthwise kernels that compute them for it while the plane is in cache (csrc/depthwise.cc):
// the shifted moments of the forward's statistics and the gradient sums of the backward; and the
// backward's output from those sums, which a depthwise backward computes for the BatchNorm after it.
#pragma once
#include <algorithm>
#include <cstdint>
#include <utility>

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

// ReLU6Grad's rule on the BatchNorm's output v: g where 0 < v < 6, else 0 (g as it is without ReLU6).
template <bool RELU6>
inline float pass(float v, float g) {
  return RELU6 ? ((v > 0.0f && v < 6.0f) ? g : 0.0f) : g;
}

// Over one plane of n values: sg = sum(g) and sgx = sum(g * xhat), g = dy masked by the activation,
// xhat = (x - mean) * invstd; float partial sums over blocks, added into doubles.
template <bool RELU6>
inline void plane_grad_sums(const float *__restrict dy, const float *__restrict x, int64_t n, float mean,
                            float invstd, float gamma, float beta, double &sg, double &sgx) {
  sg = 0.0;
  sgx = 0.0;
  for (int64_t b = 0; b < n; b += kFloatSumBlock) {
    const int64_t e = std::min(n, b + kFloatSumBlock);
    float a = 0.0f, q = 0.0f;
#pragma omp simd reduction(+ : a, q)
    for (int64_t i = b; i < e; ++i) {
      const float xh = (x[i] - mean) * invstd;
      const float gi = pass<RELU6>(xh * gamma + beta, dy[i]);
      a += gi;
      q += gi * xh;
    }
    sg += a;
    sgx += q;
  }
}

// The backward's output over one plane of n values given the channel's two means: dx = k * (g - mg -
// xhat * mgx), k = gamma * invstd, mg = mean(g), mgx = mean(g * xhat), g and xhat as above.
template <bool RELU6>
inline void grad_apply_plane(const float *__restrict g, const float *__restrict x, float *__restrict dx,
                             int64_t n, float mean, float invstd, float gamma, float beta, float mg, float mgx) {
  const float k = gamma * invstd;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float xh = (x[i] - mean) * invstd;
    const float gi = pass<RELU6>(xh * gamma + beta, g[i]);
    dx[i] = k * (gi - mg - xh * mgx);
  }
}

// Channel ch's two per-plane sums (part[2 * plane], plane = sample * c + ch) added up in sample order,
// so that the result does not depend on which thread summed which plane.
inline std::pair<double, double> sum_over_samples(const double *part, int64_t n, int64_t c, int64_t ch) {
  double a = 0.0, b = 0.0;
  for (int64_t s = 0; s < n; ++s) {
    a += part[2 * (s * c + ch)];
    b += part[2 * (s * c + ch) + 1];
  }
  return {a, b};
}

// Per channel, from per-plane (sg, sgx) at part[2 * (n * C + c)], added up in sample order: dbeta =
// sum(g), dgamma = sum(g * xhat), and their means over the channel's m values.
inline void combine_grad_sums(const double *part, int64_t n, int64_t c, int64_t m, float *dbeta, float *dgamma,
                              float *mg, float *mgx) {
  for (int64_t ch = 0; ch < c; ++ch) {
    const auto [sg, sgx] = sum_over_samples(part, n, c, ch);
    dbeta[ch] = static_cast<float>(sg);
    dgamma[ch] = static_cast<float>(sgx);
    mg[ch] = static_cast<float>(sg / m);
    mgx[ch] = static_cast<float>(sgx / m);
  }
}

}  // namespace mnv2

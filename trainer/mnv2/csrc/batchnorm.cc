// BatchNorm over (N, H, W) per channel, optionally followed by ReLU6, fused into one pass for
// MindSpore's CPU backend through ops.Custom(func_type="aot"). NCHW, float32.
//
// Why: in MindSpore 2.10's CPU profile of MobileNetV2 training, BatchNorm and BatchNormGrad take
// 43 % of the step and ReLU6 with its gradient another 12 % (bench/RESULTS.md). All of it is
// memory traffic over the same activations: these kernels read x once for the statistics and once
// to write the clipped output, and in backward recompute the ReLU6 mask from x instead of
// reading a stored output, so BatchNorm + ReLU6 costs what BatchNorm alone cost.
//
// Semantics follow nn.BatchNorm2d (checked against it in tests/perf/test_batchnorm.py):
//   training: y = gamma * (x - mean) / sqrt(var + eps) + beta with the batch mean and biased
//             variance; moving = momentum * moving + (1 - momentum) * batch, where the moving
//             variance takes the unbiased batch variance (M / (M - 1), M = N * H * W; with
//             M = 1 the biased one, 0, where MindSpore stores NaN).
//   inference: the same with the moving statistics.
//   ReLU6 (R = 1): y = min(max(y, 0), 6), gradient passed where 0 < y < 6 (ReLU6Grad's rule).
//
// Entry points (inputs first, outputs last in `params`; hp = [eps, momentum], float32):
//   mnv2_bn_train_fwd_r{R}(x, gamma, beta, mmean, mvar, hp) -> y[N,C,H,W], save_mean[C], save_invstd[C]
//       (mmean and mvar updated in place with the batch statistics: the moving averages)
//   mnv2_bn_train_fwd_moments_r1(x, moments[2C], gamma, beta, mmean, mvar, hp) -> y, save_mean,
//       save_invstd (the same with the batch mean and biased variance given: moments[0, C), [C, 2C))
//   mnv2_bn_train_bwd_r{R}(dy, x, gamma, beta, save_mean, save_invstd) -> dx, dgamma, dbeta
//   mnv2_bn_train_bwd_apply_r1(dy, x, gamma, beta, save_mean, save_invstd, sums[4C]) -> dx, dgamma, dbeta
//   mnv2_bn_train_bwd_reduce_r1(dy, x, gamma, beta, save_mean, save_invstd) -> dgamma, dbeta, means[2C]
//       (the backward's sums only; dx is computed by the depthwise kernel before it)
//   mnv2_bn_infer_fwd_r{R}(x, gamma, beta, mmean, mvar, hp) -> y
//   mnv2_bn_infer_bwd_r{R}(dy, x, gamma, beta, mmean, mvar, hp) -> dx, dgamma, dbeta
//   mnv2_bn_train_coef(x, gamma, beta, mmean, mvar, hp) -> scale[C], bias[C], save_mean, save_invstd
//       (training, y not written; mmean and mvar updated in place)
//   mnv2_bn_infer_coef(gamma, beta, mmean, mvar, hp) -> scale[C], bias[C]  (inference)
// The coef entries give y = x * scale + bias (before ReLU6) to a kernel that applies it as it reads x
// (csrc/depthwise.cc, Act).
// Return value 0 is success, non-zero a shape or dtype mismatch.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "aot.h"
#include "moments.h"
#include "parallel.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

// Below this many elements a call runs on one thread (waking the pool costs more).
constexpr int64_t kParallelMin = 1 << 15;

struct Shape {
  int64_t n = 0, c = 0, hw = 0;
  int64_t count() const { return n * hw; }  // elements per channel
};

// x is 4-D (N, C, H, W); every vector parameter is 1-D of length C.
bool shape_of(int *ndims, int64_t **shapes, int tensor, Shape &s) {
  if (ndims[tensor] != 4) return false;
  s.n = shapes[tensor][0];
  s.c = shapes[tensor][1];
  s.hw = shapes[tensor][2] * shapes[tensor][3];
  return true;
}

bool same4(int *ndims, int64_t **shapes, int a, int b) {
  if (ndims[a] != 4 || ndims[b] != 4) return false;
  for (int i = 0; i < 4; ++i) {
    if (shapes[a][i] != shapes[b][i]) return false;
  }
  return true;
}

bool vec(int *ndims, int64_t **shapes, int t, int64_t c) { return ndims[t] == 1 && shapes[t][0] == c; }

template <bool RELU6>
inline float act(float v) {
  return RELU6 ? std::min(std::max(v, 0.0f), 6.0f) : v;
}

using mnv2::pass;
using mnv2::grad_apply_plane;
using mnv2::plane_grad_sums;

// y = act(x * scale + bias) over one channel's N planes.
template <bool RELU6>
void affine(const float *__restrict x, float *__restrict y, const Shape &s, int64_t c, float scale,
            float bias) {
  for (int64_t n = 0; n < s.n; ++n) {
    const float *p = x + (n * s.c + c) * s.hw;
    float *q = y + (n * s.c + c) * s.hw;
#pragma omp simd
    for (int64_t i = 0; i < s.hw; ++i) q[i] = act<RELU6>(p[i] * scale + bias);
  }
}

// Planes of up to 64x64 go through memory in order, plane after plane, instead of channel by
// channel: a channel's planes are C * H * W apart and short (7x7: 196 bytes), and the hardware
// prefetcher does not follow such a sweep, so it waits on memory; blocks of adjacent channels
// (sequential runs of a few KB, reused from L2) measured slower still. The plane-wise sweep reads
// the tensor twice from memory but as long sequential streams, keeps per-plane partial sums and
// combines them per channel in sample order, so the result does not depend on the thread count.
// Larger planes (112x112) stay channel-wise: each plane is a long stream already.
constexpr int64_t kPlaneWiseMaxHW = 4096;

// Per-call scratch for the per-plane partial sums, owned by the calling thread.
inline double *partials(size_t n) { return mnv2::thread_buffer<double, 0>(n); }

// y = act(x * scale + bias) over one plane.
template <bool RELU6>
inline void affine_plane(const float *__restrict p, float *__restrict q, int64_t hw, float scale, float bias) {
#pragma omp simd
  for (int64_t i = 0; i < hw; ++i) q[i] = act<RELU6>(p[i] * scale + bias);
}

// The plane-wise passes write their output with non-temporal (streaming) stores when the output
// is larger than kStreamMinBytes: an ordinary store first reads the line it writes (the output
// would be read from memory only to be overwritten), which for a tensor far larger than the
// caches is a quarter of the forward pass's memory traffic. Smaller outputs are written through
// the cache, where the next layer finds them. The threshold is per instruction set, each measured
// on its machine (bench/kernel_breakdown.py --detail, batch 32). AVX-512 (Xeon): 16 MiB. AVX2 (Zen 2
// EPYC, 16 MiB L3): 32 MiB; streaming made the 112x112 and 56x56 layers up to 12 % faster there, but
// the 19 MiB ones (192 channels of 28x28) twice as slow.
#ifndef MNV2_BN_STREAM_MIN_BYTES
#if defined(__AVX512F__)
#define MNV2_BN_STREAM_MIN_BYTES (16 << 20)
#else
#define MNV2_BN_STREAM_MIN_BYTES (32 << 20)
#endif
#endif
constexpr int64_t kStreamMinBytes = MNV2_BN_STREAM_MIN_BYTES;

#if defined(__AVX2__)
constexpr bool kCanStream = true;

// The vector the streaming passes use: 16 lanes with AVX-512, else 8.
struct Vec {
#if defined(__AVX512F__)
  using T = __m512;
  static constexpr int kLanes = 16;
  static T set1(float v) { return _mm512_set1_ps(v); }
  static T load(const float *p) { return _mm512_loadu_ps(p); }
  static void stream(float *p, T v) { _mm512_stream_ps(p, v); }
  static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T fnmadd(T a, T b, T c) { return _mm512_fnmadd_ps(a, b, c); }
  static T clip6(T v) { return _mm512_min_ps(_mm512_max_ps(v, set1(0.0f)), set1(6.0f)); }
  // g where 0 < y < 6, else 0 (ReLU6Grad's rule).
  static T pass6(T y, T g) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, set1(0.0f), _CMP_GT_OQ) &
                                   _mm512_cmp_ps_mask(y, set1(6.0f), _CMP_LT_OQ),
                               g);
  }
#else
  using T = __m256;
  static constexpr int kLanes = 8;
  static T set1(float v) { return _mm256_set1_ps(v); }
  static T load(const float *p) { return _mm256_loadu_ps(p); }
  static void stream(float *p, T v) { _mm256_stream_ps(p, v); }
  static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T fnmadd(T a, T b, T c) { return _mm256_fnmadd_ps(a, b, c); }
  static T clip6(T v) { return _mm256_min_ps(_mm256_max_ps(v, set1(0.0f)), set1(6.0f)); }
  static T pass6(T y, T g) {
    return _mm256_and_ps(g, _mm256_and_ps(_mm256_cmp_ps(y, set1(0.0f), _CMP_GT_OQ),
                                          _mm256_cmp_ps(y, set1(6.0f), _CMP_LT_OQ)));
  }
#endif
};

// Values before q reaches a vector boundary (streaming stores write whole aligned vectors).
inline int64_t head_of(const float *q, int64_t hw) {
  constexpr uintptr_t bytes = Vec::kLanes * sizeof(float);
  const uintptr_t gap = (bytes - reinterpret_cast<uintptr_t>(q) % bytes) % bytes;
  return std::min<int64_t>(hw, static_cast<int64_t>(gap / sizeof(float)));
}

template <bool RELU6>
inline void affine_plane_stream(const float *__restrict p, float *__restrict q, int64_t hw, float scale,
                                float bias) {
  int64_t i = 0;
  for (const int64_t head = head_of(q, hw); i < head; ++i) q[i] = act<RELU6>(p[i] * scale + bias);
  const Vec::T vs = Vec::set1(scale), vb = Vec::set1(bias);
  for (; i + Vec::kLanes <= hw; i += Vec::kLanes) {
    const Vec::T v = Vec::fmadd(Vec::load(p + i), vs, vb);
    Vec::stream(q + i, RELU6 ? Vec::clip6(v) : v);
  }
  for (; i < hw; ++i) q[i] = act<RELU6>(p[i] * scale + bias);
}

template <bool RELU6>
inline void grad_apply_plane_stream(const float *__restrict g, const float *__restrict p, float *__restrict q,
                                    int64_t hw, float mean, float invstd, float gm, float bt, float mg, float mgx) {
  const float k = gm * invstd;
  int64_t i = 0;
  auto one = [&](int64_t j) {
    const float xh = (p[j] - mean) * invstd;
    q[j] = k * (pass<RELU6>(xh * gm + bt, g[j]) - mg - xh * mgx);
  };
  for (const int64_t head = head_of(q, hw); i < head; ++i) one(i);
  const Vec::T vmean = Vec::set1(mean), vinv = Vec::set1(invstd), vgm = Vec::set1(gm), vbt = Vec::set1(bt),
               vk = Vec::set1(k), vmg = Vec::set1(mg), vmgx = Vec::set1(mgx);
  for (; i + Vec::kLanes <= hw; i += Vec::kLanes) {
    const Vec::T xh = Vec::mul(Vec::sub(Vec::load(p + i), vmean), vinv);
    Vec::T gi = Vec::load(g + i);
    if (RELU6) gi = Vec::pass6(Vec::fmadd(xh, vgm, vbt), gi);
    Vec::stream(q + i, Vec::mul(vk, Vec::fnmadd(xh, vmgx, Vec::sub(gi, vmg))));
  }
  for (; i < hw; ++i) one(i);
}

inline void stream_fence() { _mm_sfence(); }
#else
constexpr bool kCanStream = false;
template <bool RELU6>
inline void affine_plane_stream(const float *p, float *q, int64_t hw, float scale, float bias) {
  affine_plane<RELU6>(p, q, hw, scale, bias);
}
template <bool RELU6>
inline void grad_apply_plane_stream(const float *g, const float *p, float *q, int64_t hw, float mean,
                                    float invstd, float gm, float bt, float mg, float mgx) {
  grad_apply_plane<RELU6>(g, p, q, hw, mean, invstd, gm, bt, mg, mgx);
}
inline void stream_fence() {}
#endif

// Whether a pass over x writes its output (x's size) with streaming stores.
inline bool should_stream(const Shape &s) { return kCanStream && s.n * s.c * s.hw * 4 >= kStreamMinBytes; }

// body(pl) for every plane, then a store fence on each thread (streaming stores are weakly
// ordered: they must be visible before the pool reports the work done).
template <class F>
void for_planes_streaming(int64_t planes, bool parallel, F &&body) {
  mnv2::Pool &pool = mnv2::Pool::instance();
  const int64_t grain = std::max<int64_t>(1, planes / (8 * pool.size()));
  pool.parallel_for(planes, grain, parallel, [&](int64_t begin, int64_t end) {
    for (int64_t pl = begin; pl < end; ++pl) body(pl);
    stream_fence();
  });
}

// From channel c's batch mean and biased variance over m values: save_mean, save_invstd, the
// moving-average update (mmean and mvar in place), and the affine map y = x * scale + bias (before
// the activation) in coef as a (scale, bias) pair.
inline void finish_channel(int64_t c, double mean, double var, int64_t m, const float *gamma, const float *beta,
                           const float *hp, float *mmean, float *mvar, float *save_mean, float *save_invstd,
                           float *coef) {
  const double eps = hp[0], momentum = hp[1];
  const double invstd = 1.0 / std::sqrt(var + eps);
  const double scale = gamma[c] * invstd;
  save_mean[c] = static_cast<float>(mean);
  save_invstd[c] = static_cast<float>(invstd);
  const double unbiased = m > 1 ? var * m / (m - 1) : var;
  mmean[c] = static_cast<float>(momentum * mmean[c] + (1.0 - momentum) * mean);
  mvar[c] = static_cast<float>(momentum * mvar[c] + (1.0 - momentum) * unbiased);
  coef[2 * c] = static_cast<float>(scale);
  coef[2 * c + 1] = static_cast<float>(beta[c] - mean * scale);
}

// Batch statistics of x per channel, the moving-average update (mmean and mvar in place), and the
// channel's affine map y = x * scale + bias (before the activation), in `coef` as (scale, bias) pairs.
void train_statistics(const float *x, const float *gamma, const float *beta, float *mmean, float *mvar,
                      const float *hp, const Shape &s, float *save_mean, float *save_invstd, float *coef) {
  const int64_t m = s.count();
  const bool parallel = s.c * m >= kParallelMin;
  // Sums of (x - shift): the shift (the channel's first value) keeps E[d^2] - E[d]^2 accurate
  // when the mean is large against the spread.
  auto finish = [&](int64_t c, double sum, double sq) {
    const double dmean = sum / m;
    finish_channel(c, x[c * s.hw] + dmean, std::max(0.0, sq / m - dmean * dmean), m, gamma, beta, hp, mmean,
                   mvar, save_mean, save_invstd, coef);
  };
  if (s.hw > kPlaneWiseMaxHW) {
    mnv2::parallel_for_each(s.c, parallel, [&](int64_t c) {
      double sum = 0.0, sq = 0.0;
      for (int64_t n = 0; n < s.n; ++n) {
        double a, q;
        mnv2::shifted_moments(x + (n * s.c + c) * s.hw, s.hw, x[c * s.hw], a, q);
        sum += a;
        sq += q;
      }
      finish(c, sum, sq);
    });
    return;
  }
  const int64_t planes = s.n * s.c;
  double *part = partials(2 * planes);
  mnv2::parallel_for_each(planes, parallel, [&](int64_t pl) {
    mnv2::shifted_moments(x + pl * s.hw, s.hw, x[(pl % s.c) * s.hw], part[2 * pl], part[2 * pl + 1]);
  });
  for (int64_t c = 0; c < s.c; ++c) {
    const auto [sum, sq] = mnv2::sum_over_samples(part, s.n, s.c, c);
    finish(c, sum, sq);
  }
}

// y = act(x * scale + bias) per channel with coef's (scale, bias) pairs: the training forward's
// output pass.
template <bool RELU6>
void apply_coefficients(const float *x, float *y, const Shape &s, const float *coef) {
  const bool parallel = s.c * s.count() >= kParallelMin;
  const bool stream = should_stream(s);
  if (s.hw > kPlaneWiseMaxHW) {
    mnv2::parallel_for_each(s.c, parallel, [&](int64_t c) {
      const float scale = coef[2 * c], bias = coef[2 * c + 1];
      if (stream) {
        for (int64_t n = 0; n < s.n; ++n) {
          const int64_t off = (n * s.c + c) * s.hw;
          affine_plane_stream<RELU6>(x + off, y + off, s.hw, scale, bias);
        }
        stream_fence();
      } else {
        affine<RELU6>(x, y, s, c, scale, bias);
      }
    });
    return;
  }
  const int64_t planes = s.n * s.c;
  if (stream) {
    for_planes_streaming(planes, parallel, [&](int64_t pl) {
      const int64_t c = pl % s.c;
      affine_plane_stream<RELU6>(x + pl * s.hw, y + pl * s.hw, s.hw, coef[2 * c], coef[2 * c + 1]);
    });
    return;
  }
  mnv2::parallel_for_each(planes, parallel, [&](int64_t pl) {
    const int64_t c = pl % s.c;
    affine_plane<RELU6>(x + pl * s.hw, y + pl * s.hw, s.hw, coef[2 * c], coef[2 * c + 1]);
  });
}

// (x, gamma, beta, mmean, mvar, hp) -> y, save_mean, save_invstd; mmean and mvar written.
template <bool RELU6>
int train_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 9 || !mnv2::all_float32(nparam, dtypes)) return 1;
  Shape s;
  if (!shape_of(ndims, shapes, 0, s) || !same4(ndims, shapes, 0, 6)) return 2;
  for (int t : {1, 2, 3, 4, 7, 8}) {
    if (!vec(ndims, shapes, t, s.c)) return 2;
  }
  if (ndims[5] != 1 || shapes[5][0] != 2) return 2;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[6]);
  if (s.count() == 0) return 3;
  float *coef = mnv2::thread_buffer<float, 1>(static_cast<size_t>(2 * s.c));
  train_statistics(x, static_cast<const float *>(params[1]), static_cast<const float *>(params[2]),
                   static_cast<float *>(params[3]), static_cast<float *>(params[4]),
                   static_cast<const float *>(params[5]), s, static_cast<float *>(params[7]),
                   static_cast<float *>(params[8]), coef);
  apply_coefficients<RELU6>(x, y, s, coef);
  return 0;
}

// As train_forward with the batch statistics given (moments[2C]: mean, then biased variance; the
// depthwise kernels' actfwd_moments): (x, moments, gamma, beta, mmean, mvar, hp) -> y, save_mean,
// save_invstd; mmean and mvar written.
template <bool RELU6>
int train_forward_moments(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 10 || !mnv2::all_float32(nparam, dtypes)) return 1;
  Shape s;
  if (!shape_of(ndims, shapes, 0, s) || !same4(ndims, shapes, 0, 7)) return 2;
  for (int t : {2, 3, 4, 5, 8, 9}) {
    if (!vec(ndims, shapes, t, s.c)) return 2;
  }
  if (!vec(ndims, shapes, 1, 2 * s.c) || ndims[6] != 1 || shapes[6][0] != 2) return 2;
  if (s.count() == 0) return 3;
  const float *x = static_cast<const float *>(params[0]);
  const float *moments = static_cast<const float *>(params[1]);
  float *coef = mnv2::thread_buffer<float, 1>(static_cast<size_t>(2 * s.c));
  for (int64_t c = 0; c < s.c; ++c) {
    finish_channel(c, moments[c], moments[s.c + c], s.count(), static_cast<const float *>(params[2]),
                   static_cast<const float *>(params[3]), static_cast<const float *>(params[6]),
                   static_cast<float *>(params[4]), static_cast<float *>(params[5]), static_cast<float *>(params[8]),
                   static_cast<float *>(params[9]), coef);
  }
  apply_coefficients<RELU6>(x, static_cast<float *>(params[7]), s, coef);
  return 0;
}

// The training forward without writing y, for a consumer that applies the BatchNorm as it reads x
// (the depthwise kernels' Act): (x, gamma, beta, mmean, mvar, hp) -> scale, bias, save_mean,
// save_invstd, with y = x * scale + bias before the activation; mmean and mvar written.
int train_coefficients(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 10 || !mnv2::all_float32(nparam, dtypes)) return 1;
  Shape s;
  if (!shape_of(ndims, shapes, 0, s)) return 2;
  for (int t : {1, 2, 3, 4, 6, 7, 8, 9}) {
    if (!vec(ndims, shapes, t, s.c)) return 2;
  }
  if (ndims[5] != 1 || shapes[5][0] != 2) return 2;
  if (s.count() == 0) return 3;
  float *coef = mnv2::thread_buffer<float, 1>(static_cast<size_t>(2 * s.c));
  train_statistics(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                   static_cast<const float *>(params[2]), static_cast<float *>(params[3]),
                   static_cast<float *>(params[4]), static_cast<const float *>(params[5]), s,
                   static_cast<float *>(params[8]), static_cast<float *>(params[9]), coef);
  float *scale = static_cast<float *>(params[6]);
  float *bias = static_cast<float *>(params[7]);
  for (int64_t c = 0; c < s.c; ++c) {
    scale[c] = coef[2 * c];
    bias[c] = coef[2 * c + 1];
  }
  return 0;
}

// Sums over one channel (all N planes) of g and g * xhat.
template <bool RELU6>
void grad_sums(const float *__restrict dy, const float *__restrict x, const Shape &s, int64_t c, float mean,
               float invstd, float gamma, float beta, double &sg, double &sgx) {
  sg = 0.0;
  sgx = 0.0;
  for (int64_t n = 0; n < s.n; ++n) {
    double a, q;
    const int64_t off = (n * s.c + c) * s.hw;
    plane_grad_sums<RELU6>(dy + off, x + off, s.hw, mean, invstd, gamma, beta, a, q);
    sg += a;
    sgx += q;
  }
}

// dx = k * (g - mg - xhat * mgx), k = gamma * invstd, over every plane in memory order, mg and mgx per
// channel.
template <bool RELU6>
void grad_apply(const float *dy, const float *x, float *dx, const Shape &s, const float *gamma, const float *beta,
                const float *save_mean, const float *save_invstd, const float *mg, const float *mgx,
                bool parallel, bool stream) {
  auto plane = [&](int64_t pl, auto apply) {
    const int64_t c = pl % s.c, off = pl * s.hw;
    apply(dy + off, x + off, dx + off, s.hw, save_mean[c], save_invstd[c], gamma[c], beta[c], mg[c], mgx[c]);
  };
  if (stream) {
    for_planes_streaming(s.n * s.c, parallel, [&](int64_t pl) { plane(pl, grad_apply_plane_stream<RELU6>); });
  } else {
    mnv2::parallel_for_each(s.n * s.c, parallel, [&](int64_t pl) { plane(pl, grad_apply_plane<RELU6>); });
  }
}

// The backward's sums over every plane, added up per channel in sample order (the values and order
// of grad_sums): dgamma, dbeta, and means = mean(g), then mean(g * xhat), C values each.
template <bool RELU6>
void grad_reduce(const float *dy, const float *x, const Shape &s, const float *gamma, const float *beta,
                 const float *save_mean, const float *save_invstd, bool parallel, float *dgamma, float *dbeta,
                 float *means) {
  const int64_t planes = s.n * s.c;
  double *part = partials(2 * planes);
  mnv2::parallel_for_each(planes, parallel, [&](int64_t pl) {
    const int64_t c = pl % s.c;
    plane_grad_sums<RELU6>(dy + pl * s.hw, x + pl * s.hw, s.hw, save_mean[c], save_invstd[c], gamma[c],
                           beta[c], part[2 * pl], part[2 * pl + 1]);
  });
  mnv2::combine_grad_sums(part, s.n, s.c, s.count(), dbeta, dgamma, means, means + s.c);
}

// The backward's shapes: dy and x 4-D and equal, gamma, beta, save_mean and save_invstd (2..5) of
// length C, dx like x at `dx_at`, dgamma and dbeta (after it) of length C.
bool backward_shapes_ok(int *ndims, int64_t **shapes, int dx_at, Shape &s) {
  if (!shape_of(ndims, shapes, 1, s) || !same4(ndims, shapes, 0, 1) || !same4(ndims, shapes, 1, dx_at)) {
    return false;
  }
  for (int t : {2, 3, 4, 5, dx_at + 1, dx_at + 2}) {
    if (!vec(ndims, shapes, t, s.c)) return false;
  }
  return true;
}

// The training backward's first six inputs: dy, x, gamma, beta, save_mean, save_invstd.
std::array<const float *, 6> backward_inputs(void **params) {
  std::array<const float *, 6> in;
  for (int i = 0; i < 6; ++i) in[i] = static_cast<const float *>(params[i]);
  return in;
}

template <bool RELU6>
int train_backward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 9 || !mnv2::all_float32(nparam, dtypes)) return 1;
  Shape s;
  if (!backward_shapes_ok(ndims, shapes, 6, s)) return 2;
  const auto [dy, x, gamma, beta, save_mean, save_invstd] = backward_inputs(params);
  float *dx = static_cast<float *>(params[6]);
  float *dgamma = static_cast<float *>(params[7]);
  float *dbeta = static_cast<float *>(params[8]);
  const int64_t m = s.count();
  if (m == 0) return 3;
  const bool parallel = s.c * m >= kParallelMin;
  // dx = gamma * invstd * (g - mean(g) - xhat * mean(g * xhat))
  const bool stream = should_stream(s);
  if (s.hw > kPlaneWiseMaxHW) {
    mnv2::parallel_for_each(s.c, parallel, [&](int64_t c) {
      const float mean = save_mean[c], invstd = save_invstd[c], gm = gamma[c], bt = beta[c];
      double sg, sgx;
      grad_sums<RELU6>(dy, x, s, c, mean, invstd, gm, bt, sg, sgx);
      dbeta[c] = static_cast<float>(sg);
      dgamma[c] = static_cast<float>(sgx);
      const float mg = static_cast<float>(sg / m), mgx = static_cast<float>(sgx / m);
      for (int64_t n = 0; n < s.n; ++n) {
        const int64_t off = (n * s.c + c) * s.hw;
        if (stream) {
          grad_apply_plane_stream<RELU6>(dy + off, x + off, dx + off, s.hw, mean, invstd, gm, bt, mg, mgx);
        } else {
          grad_apply_plane<RELU6>(dy + off, x + off, dx + off, s.hw, mean, invstd, gm, bt, mg, mgx);
        }
      }
      if (stream) stream_fence();
    });
    return 0;
  }
  float *means = mnv2::thread_buffer<float, 1>(static_cast<size_t>(2 * s.c));
  grad_reduce<RELU6>(dy, x, s, gamma, beta, save_mean, save_invstd, parallel, dgamma, dbeta, means);
  grad_apply<RELU6>(dy, x, dx, s, gamma, beta, save_mean, save_invstd, means, means + s.c, parallel, stream);
  return 0;
}

// The training backward's reduction alone: (dy, x, gamma, beta, save_mean, save_invstd) -> dgamma,
// dbeta, means[2C] (mean(g), then mean(g * xhat)), for a depthwise backward before this BatchNorm
// that computes dx from them as it reads dy (csrc/depthwise.cc, the actbwd_outbn entries), where a
// pass of train_backward would write dx and the depthwise backward read it back.
template <bool RELU6>
int train_backward_reduce(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 9 || !mnv2::all_float32(nparam, dtypes)) return 1;
  Shape s;
  if (!shape_of(ndims, shapes, 1, s) || !same4(ndims, shapes, 0, 1)) return 2;
  for (int t : {2, 3, 4, 5, 6, 7}) {
    if (!vec(ndims, shapes, t, s.c)) return 2;
  }
  if (!vec(ndims, shapes, 8, 2 * s.c)) return 2;
  const auto [dy, x, gamma, beta, save_mean, save_invstd] = backward_inputs(params);
  float *dgamma = static_cast<float *>(params[6]);
  float *dbeta = static_cast<float *>(params[7]);
  float *means = static_cast<float *>(params[8]);
  if (s.count() == 0) return 3;
  grad_reduce<RELU6>(dy, x, s, gamma, beta, save_mean, save_invstd, s.c * s.count() >= kParallelMin, dgamma,
                     dbeta, means);
  return 0;
}

// The backward given its sums (dy, x, gamma, beta, save_mean, save_invstd, sums[4C]) -> dx, dgamma,
// dbeta: the depthwise kernel that computed dy summed them while dy was in cache (csrc/depthwise.cc,
// the actbwd_sums entries), so one pass over the tensors is left. sums = dbeta, dgamma, mean(g),
// mean(g * xhat), C values each.
template <bool RELU6>
int train_backward_apply(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 10 || !mnv2::all_float32(nparam, dtypes)) return 1;
  Shape s;
  if (!backward_shapes_ok(ndims, shapes, 7, s) || !vec(ndims, shapes, 6, 4 * s.c)) return 2;
  const auto [dy, x, gamma, beta, save_mean, save_invstd] = backward_inputs(params);
  const float *sums = static_cast<const float *>(params[6]);
  float *dx = static_cast<float *>(params[7]);
  float *dgamma = static_cast<float *>(params[8]);
  float *dbeta = static_cast<float *>(params[9]);
  if (s.count() == 0) return 3;
  std::copy(sums, sums + s.c, dbeta);
  std::copy(sums + s.c, sums + 2 * s.c, dgamma);
  grad_apply<RELU6>(dy, x, dx, s, gamma, beta, save_mean, save_invstd, sums + 2 * s.c, sums + 3 * s.c,
                    s.c * s.count() >= kParallelMin, should_stream(s));
  return 0;
}

// Inference's per-channel map y = x * scale + bias (before ReLU6).
struct Affine {
  float scale, bias;
};

// What the inference entries read: gamma, beta, moving mean, moving variance (all [C]) and hp = [eps,
// ...], params[first] to params[first + 4].
struct MovingStats {
  const float *gamma, *beta, *mmean, *mvar;
  float eps;

  MovingStats(void **params, int first)
      : gamma(static_cast<const float *>(params[first])),
        beta(static_cast<const float *>(params[first + 1])),
        mmean(static_cast<const float *>(params[first + 2])),
        mvar(static_cast<const float *>(params[first + 3])),
        eps(static_cast<const float *>(params[first + 4])[0]) {}

  float invstd(int64_t c) const { return 1.0f / std::sqrt(mvar[c] + eps); }
  Affine affine(int64_t c) const {
    const float scale = gamma[c] * invstd(c);
    return {scale, beta[c] - mmean[c] * scale};
  }
};

template <bool RELU6>
int infer_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 7 || !mnv2::all_float32(nparam, dtypes)) return 1;
  Shape s;
  if (!shape_of(ndims, shapes, 0, s) || !same4(ndims, shapes, 0, 6)) return 2;
  for (int t : {1, 2, 3, 4}) {
    if (!vec(ndims, shapes, t, s.c)) return 2;
  }
  if (ndims[5] != 1 || shapes[5][0] != 2) return 2;
  const float *x = static_cast<const float *>(params[0]);
  const MovingStats stats(params, 1);
  float *y = static_cast<float *>(params[6]);
  mnv2::parallel_for_each(s.c, s.c * s.count() >= kParallelMin, [&](int64_t c) {
    const Affine a = stats.affine(c);
    affine<RELU6>(x, y, s, c, a.scale, a.bias);
  });
  return 0;
}

int infer_coefficients(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 7 || !mnv2::all_float32(nparam, dtypes) || ndims[0] != 1) return 1;
  const int64_t channels = shapes[0][0];
  for (int t : {1, 2, 3, 5, 6}) {
    if (!vec(ndims, shapes, t, channels)) return 2;
  }
  if (ndims[4] != 1 || shapes[4][0] != 2) return 2;
  const MovingStats stats(params, 0);
  float *scale = static_cast<float *>(params[5]);
  float *bias = static_cast<float *>(params[6]);
  for (int64_t c = 0; c < channels; ++c) {
    const Affine a = stats.affine(c);
    scale[c] = a.scale;
    bias[c] = a.bias;
  }
  return 0;
}

template <bool RELU6>
int infer_backward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 10 || !mnv2::all_float32(nparam, dtypes)) return 1;
  Shape s;
  if (!shape_of(ndims, shapes, 1, s) || !same4(ndims, shapes, 0, 1) || !same4(ndims, shapes, 1, 7)) return 2;
  for (int t : {2, 3, 4, 5, 8, 9}) {
    if (!vec(ndims, shapes, t, s.c)) return 2;
  }
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  const MovingStats stats(params, 2);
  float *dx = static_cast<float *>(params[7]);
  float *dgamma = static_cast<float *>(params[8]);
  float *dbeta = static_cast<float *>(params[9]);
  mnv2::parallel_for_each(s.c, s.c * s.count() >= kParallelMin, [&](int64_t c) {
    const float mean = stats.mmean[c], invstd = stats.invstd(c), gm = stats.gamma[c], bt = stats.beta[c];
    double sg, sgx;
    grad_sums<RELU6>(dy, x, s, c, mean, invstd, gm, bt, sg, sgx);
    dbeta[c] = static_cast<float>(sg);
    dgamma[c] = static_cast<float>(sgx);
    const float k = gm * invstd;
    for (int64_t n = 0; n < s.n; ++n) {
      const float *p = x + (n * s.c + c) * s.hw;
      const float *g = dy + (n * s.c + c) * s.hw;
      float *q = dx + (n * s.c + c) * s.hw;
#pragma omp simd
      for (int64_t i = 0; i < s.hw; ++i) q[i] = k * pass<RELU6>((p[i] - mean) * invstd * gm + bt, g[i]);
    }
  });
  return 0;
}

}  // namespace

#define MNV2_BN_EXPORT(NAME, FN, R)                                                                 \
  extern "C" int mnv2_bn_##NAME##_r##R(int nparam, void **params, int *ndims, int64_t **shapes,    \
                                       const char **dtypes, void *, void *) {                     \
    return FN<R == 1>(nparam, params, ndims, shapes, dtypes);                                       \
  }

MNV2_BN_EXPORT(train_fwd, train_forward, 0)
MNV2_BN_EXPORT(train_fwd, train_forward, 1)
MNV2_BN_EXPORT(train_fwd_moments, train_forward_moments, 1)
MNV2_BN_EXPORT(train_bwd, train_backward, 0)
MNV2_BN_EXPORT(train_bwd, train_backward, 1)
MNV2_BN_EXPORT(train_bwd_apply, train_backward_apply, 1)
MNV2_BN_EXPORT(train_bwd_reduce, train_backward_reduce, 1)
MNV2_BN_EXPORT(infer_fwd, infer_forward, 0)
MNV2_BN_EXPORT(infer_fwd, infer_forward, 1)
MNV2_BN_EXPORT(infer_bwd, infer_backward, 0)
MNV2_BN_EXPORT(infer_bwd, infer_backward, 1)

extern "C" int mnv2_bn_train_coef(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                  void *, void *) {
  return train_coefficients(nparam, params, ndims, shapes, dtypes);
}

extern "C" int mnv2_bn_infer_coef(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                  void *, void *) {
  return infer_coefficients(nparam, params, ndims, shapes, dtypes);
}

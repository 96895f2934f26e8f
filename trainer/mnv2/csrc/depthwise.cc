// Depthwise 3x3 convolution (NCHW, fp32) for MindSpore's CPU backend, called through
// ops.Custom(func_type="aot").
//
// Why: MindSpore 2.10's CPU depthwise convolution is 5-14x slower than PyTorch's and dominates
// MobileNetV2 training time (REFERENCE.md section 5). Two layouts, chosen per (stride, width) by
// measurement: (1) one (n, c) plane at a time copied into a zero-padded thread-local buffer (split
// into even and odd columns for stride 2), so every inner loop runs over contiguous memory without
// bounds checks and the compiler vectorises it; (2) with AVX-512, blocks of 16 channels of one
// sample transposed to [row][column][16], one channel per vector lane ("lanes" below); with AVX2
// (and no AVX-512), blocks of 8 the same way, at every width and stride. The thread
// pool of parallel.h splits the work over planes or channel blocks; the backward keeps weight-
// gradient partial sums per plane and adds them up in sample order, so results do not depend on
// the thread count.
//
// Exported entry points, one per (stride, padding), following MindSpore's aot signature
// (inputs first, outputs last in `params`):
//   mnv2_dw3x3_fwd_s{S}_p{P}(x[N,C,H,W], w[C,1,3,3]) -> y[N,C,OH,OW]
//   mnv2_dw3x3_bwd_s{S}_p{P}(dy[N,C,OH,OW], x[N,C,H,W], w[C,1,3,3]) -> dx[N,C,H,W], dw[C,1,3,3]
//   mnv2_dw3x3_actfwd_s{S}_p{P}(x, w, scale[C], bias[C]) -> y
//   mnv2_dw3x3_actbwd_s{S}_p{P}(dy, x, w, scale[C], bias[C]) -> dx, dw
//   mnv2_dw3x3_actbwd_sums_s{S}_p{P}(dy, x, w, scale, bias, gamma, beta, save_mean, save_invstd)
//     -> dx, dw, sums[4C]
//   mnv2_dw3x3_actbwd_outbn_s{S}_p{P}(dy, x, w, scale, bias, gamma, beta, save_mean, save_invstd, conv,
//     gamma2, beta2, save_mean2, save_invstd2, means2[2C]) -> dx, dw, sums[4C]
//   mnv2_dw3x3_actfwd_bn_s{S}_p{P}(x, w, scale[C], bias[C], out_scale[C], out_bias[C]) -> y
//   mnv2_dw3x3_actfwd_moments_s{S}_p{P}(x, w, scale[C], bias[C]) -> y, moments[2C]
// where the act variants convolve min(max(x * scale + bias, 0), 6) (see Act) and dx is its gradient;
// actfwd_bn also gives min(max(y * out_scale + out_bias, 0), 6), the inference BatchNorm + ReLU6
// after the convolution, applied to each block of planes while it is still in cache; actfwd_moments
// also gives y's batch mean (moments[0, C)) and biased variance (moments[C, 2C)) per channel, the
// statistics of the training BatchNorm after the convolution; actbwd_sums also gives the sums the
// backward of the training BatchNorm + ReLU6 that act is needs (GradSums); actbwd_outbn is actbwd_sums
// where dy is the gradient of the training BatchNorm + ReLU6 after the convolution (OutGrad).
// with OH = (H + 2P - 3) / S + 1. Return value 0 is success, non-zero a shape/dtype mismatch.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "aot.h"
#include "moments.h"
#include "parallel.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

constexpr int K = 3;

// Below this many output values a call runs on one thread: waking the pool's workers costs more
// than it saves on MobileNetV2's small late layers, and far more on a machine whose cores are busy.
constexpr int64_t kParallelMin = 1 << 15;

// The calling thread's scratch buffers (mnv2::thread_buffer), three of them in use at once at most.
inline float *scratch(size_t n) { return mnv2::thread_buffer<float, 0>(n); }
inline float *scratch2(size_t n) { return mnv2::thread_buffer<float, 1>(n); }
inline float *scratch3(size_t n) { return mnv2::thread_buffer<float, 2>(n); }

struct Dims {
  int64_t n, c, h, w, oh, ow;
};

// A BatchNorm + ReLU6 applied to the input as it is read ("prologue"): the kernels then take the
// BatchNorm's input, and the BatchNorm's output (MobileNetV2's largest tensors) is never written
// to memory nor kept for the backward pass. Null when the input is used as it is. The forward's
// optional "epilogue" is one too, applied to its output.
struct Act {
  const float *scale, *bias;  // per channel: v -> min(max(v * scale + bias, 0), 6)
};

// One channel's Act, or none (`on` false): how the copy routines below read the input.
struct ChannelAct {
  bool on = false;
  float scale = 1.0f, bias = 0.0f;
  float operator()(float v) const { return std::min(std::max(std::fma(v, scale, bias), 0.0f), 6.0f); }
};

inline ChannelAct channel_act(const Act *act, int64_t c) {
  return act == nullptr ? ChannelAct{} : ChannelAct{true, act->scale[c], act->bias[c]};
}

#if defined(__AVX512F__)
// Act on 16 values of one channel (scale and bias broadcast).
inline __m512 act16(__m512 v, __m512 scale, __m512 bias) {
  const __m512 y = _mm512_fmadd_ps(v, scale, bias);
  return _mm512_min_ps(_mm512_max_ps(y, _mm512_setzero_ps()), _mm512_set1_ps(6.0f));
}
#endif

// dst[j] = a(src[j]), j in [0, n); dst may be src. MobileNetV2's late rows are 7 or 14 values:
// masked vectors, as row_copy does, not a loop remainder.
inline void act_copy(float *dst, const float *src, int64_t n, const ChannelAct &a) {
#if defined(__AVX512F__)
  const __m512 scale = _mm512_set1_ps(a.scale), bias = _mm512_set1_ps(a.bias);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << (n - j)) - 1);
    _mm512_mask_storeu_ps(dst + j, m, act16(_mm512_maskz_loadu_ps(m, src + j), scale, bias));
  }
#else
  for (int64_t j = 0; j < n; ++j) dst[j] = a(src[j]);
#endif
}

// Row `src` of n values as the kernel reads it: src itself, or its activation in `buf` (n values).
inline const float *act_row(const float *src, int64_t n, const ChannelAct &a, float *buf) {
  if (!a.on) return src;
  act_copy(buf, src, n, a);
  return buf;
}

// The epilogue: `lanes` planes of n values, channels c0, c0 + 1, ..., in place. Nothing if act is null.
inline void act_planes(float *y, int64_t lanes, int64_t n, const Act *act, int64_t c0) {
  if (act == nullptr) return;
  for (int64_t l = 0; l < lanes; ++l) act_copy(y + l * n, y + l * n, n, channel_act(act, c0 + l));
}

// The sums the backward of the training BatchNorm + ReLU6 behind an act prologue needs (the actbwd_sums
// entries): per plane of dx (the gradient of that BatchNorm's output) sum(g) and sum(g * xhat), g = dx
// masked by the ReLU6, xhat = (x - mean) * invstd, taken while the plane and its x are in cache, so
// that BatchNorm's backward (mnv2_bn_train_bwd_apply_r1) need not read both tensors once more for
// them. Null: no sums.
struct GradSums {
  const float *gamma, *beta, *mean, *invstd;  // the BatchNorm's, per channel
  double *part;                               // (sg, sgx) per plane

  // Planes p .. p + lanes - 1 (channels c0 ..) of dx and x, hw values each.
  void add(const float *dx, const float *x, int64_t p, int64_t lanes, int64_t hw, int64_t c0) const {
    for (int64_t j = 0; j < lanes; ++j) {
      const int64_t c = c0 + j, pl = p + j;
      mnv2::plane_grad_sums<true>(dx + pl * hw, x + pl * hw, hw, mean[c], invstd[c], gamma[c], beta[c],
                                  part[2 * pl], part[2 * pl + 1]);
    }
  }
};

inline void add_grad_sums(const GradSums *gs, const float *dx, const float *x, int64_t p, int64_t lanes,
                          int64_t hw, int64_t c0) {
  if (gs != nullptr) gs->add(dx, x, p, lanes, hw, c0);
}

// The training BatchNorm + ReLU6 after the convolution, for the actbwd_outbn entries: dy is the
// gradient of that BatchNorm's output, and the gradient of the convolution's output is computed from
// it a block of planes at a time as the backward reads dy (mnv2::grad_apply_plane, with the two means
// of that BatchNorm's backward reduction, mnv2_bn_train_bwd_reduce_r1), instead of by a pass of the
// BatchNorm's backward writing it and another reading it back. Null: dy is that gradient.
struct OutGrad {
  const float *conv, *gamma, *beta, *mean, *invstd, *mg, *mgx;  // conv: the convolution's output

  // Planes p .. p + lanes - 1 (channels c0 ..) of the convolution's output gradient, n values each,
  // in the calling thread's buffer.
  const float *planes(const float *dy, int64_t p, int64_t lanes, int64_t n, int64_t c0) const {
    float *g = mnv2::thread_buffer<float, 4>(static_cast<size_t>(lanes * n));
    for (int64_t j = 0; j < lanes; ++j) {
      const int64_t c = c0 + j, off = (p + j) * n;
      mnv2::grad_apply_plane<true>(dy + off, conv + off, g + j * n, n, mean[c], invstd[c], gamma[c], beta[c],
                                   mg[c], mgx[c]);
    }
    return g;
  }
};

// The convolution's output gradient for planes p .. p + lanes - 1 (n values each) from dy.
inline const float *grad_planes(const OutGrad *og, const float *dy, int64_t p, int64_t lanes, int64_t n,
                                int64_t c0) {
  return og != nullptr ? og->planes(dy, p, lanes, n, c0) : dy + p * n;
}

// The first `count` tensors all 4-D but `vecs` 1-D ones (scales and biases) from `vec_at` on.
inline bool act_dims_ok(int vecs, int count, int vec_at, const int *ndims) {
  for (int i = 0; i < count; ++i) {
    const bool is_vec = i >= vec_at && i < vec_at + vecs;
    if (ndims[i] != (is_vec ? 1 : 4)) return false;
  }
  return true;
}

// dst[0, n) = src[0, n). Rows of MobileNetV2's late layers are 7 or 14 values: one masked vector
// move each instead of a call to memcpy.
inline void row_copy(float *__restrict dst, const float *__restrict src, int64_t n) {
#if defined(__AVX512F__) && !defined(MNV2_DW_NO_MASKED_COPY)
  if (n <= 16) {
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
    _mm512_mask_storeu_ps(dst, m, _mm512_maskz_loadu_ps(m, src));
    return;
  }
#endif
  std::memcpy(dst, src, sizeof(float) * n);
}

// Copies plane `src` (h x w) into `dst` (rows x cols), placing src[0][0] at dst[top][left]; the
// rest of dst is zero.
void pad_plane(const float *__restrict src, int64_t h, int64_t w, float *__restrict dst, int64_t rows,
               int64_t cols, int64_t top, int64_t left, const ChannelAct &a = {}) {
  std::memset(dst, 0, sizeof(float) * rows * cols);
  for (int64_t i = 0; i < h; ++i) {
    const int64_t r = i + top;
    if (r < 0 || r >= rows) continue;
    const int64_t c0 = std::max<int64_t>(0, -left);
    const int64_t c1 = std::min<int64_t>(w, cols - left);
    if (c1 <= c0) continue;
    if (a.on) {
      act_copy(dst + r * cols + left + c0, src + i * w + c0, c1 - c0, a);
    } else {
      row_copy(dst + r * cols + left + c0, src + i * w + c0, c1 - c0);
    }
  }
}

// As pad_plane, but splits the padded columns into even (E) and odd (O) planes of `half` columns
// each: E[r][j] = padded[r][2j], O[r][j] = padded[r][2j + 1]. Used for stride 2.
void pad_plane_split(const float *__restrict src, int64_t h, int64_t w, float *__restrict ev,
                     float *__restrict od, int64_t rows, int64_t half, int64_t top, int64_t left,
                     const ChannelAct &a = {}) {
  float *row = a.on ? mnv2::thread_buffer<float, 3>(static_cast<size_t>(w)) : nullptr;
  std::memset(ev, 0, sizeof(float) * rows * half);
  std::memset(od, 0, sizeof(float) * rows * half);
  for (int64_t i = 0; i < h; ++i) {
    const int64_t r = i + top;
    if (r < 0 || r >= rows) continue;
    const float *s = act_row(src + i * w, w, a, row);
    float *e = ev + r * half;
    float *o = od + r * half;
    // Padded column c holds src[c - left]; even columns go to e[c / 2], odd ones to o[c / 2].
    // Only the columns that hold input are written (the rest stay zero), in branch-free loops so
    // the strided loads vectorise. Ranges: 0 <= 2j - left <= w - 1 and 0 <= 2j + 1 - left <= w - 1.
    const int64_t e_lo = std::max<int64_t>(0, (left + 1) / 2);
    const int64_t e_hi = std::min<int64_t>(half, (w - 1 + left) / 2 + 1);
    const int64_t ebase = -left;
#pragma omp simd
    for (int64_t j = e_lo; j < e_hi; ++j) e[j] = s[2 * j + ebase];
    const int64_t o_lo = std::max<int64_t>(0, left / 2);
    const int64_t o_hi = w - 2 + left >= 0 ? std::min<int64_t>(half, (w - 2 + left) / 2 + 1) : 0;
    const int64_t obase = 1 - left;
#pragma omp simd
    for (int64_t j = o_lo; j < o_hi; ++j) o[j] = s[2 * j + obase];
  }
}

// Block `item` of a channel-blocked pass (blocks of Width channels, one per vector lane) over
// `blocks` blocks per sample: sample n, channels c0 .. c0 + lanes - 1.
struct LaneBlock {
  int64_t n, c0, lanes;
  int64_t first_plane(int64_t c) const { return n * c + c0; }
};
template <int Width>
[[maybe_unused]] inline LaneBlock lane_block(int64_t item, int64_t blocks, int64_t c) {
  const int64_t c0 = (item % blocks) * Width;
  return {item / blocks, c0, std::min<int64_t>(Width, c - c0)};
}

// Zeroes what h x w planes placed at row `top`, column `left` do not cover of dst, rows x cols
// positions of `lanes` floats each (the channel-blocked buffers below).
[[maybe_unused]] void zero_borders(float *dst, int64_t rows, int64_t cols, int64_t lanes, int64_t top, int64_t left, int64_t h,
                  int64_t w) {
  const int64_t row = cols * lanes;
  const int64_t r1 = std::min(rows, top + h), c1 = std::min(cols, left + w);
  std::memset(dst, 0, sizeof(float) * top * row);
  std::memset(dst + r1 * row, 0, sizeof(float) * (rows - r1) * row);
  for (int64_t r = top; r < r1; ++r) {
    std::memset(dst + r * row, 0, sizeof(float) * left * lanes);
    std::memset(dst + r * row + c1 * lanes, 0, sizeof(float) * (cols - c1) * lanes);
  }
}

// y (oh x ow) = correlation of padded plane p (rows x cols) with the 3x3 kernel k, stride 1
// (y += ... when ACC).
template <bool ACC = false>
void corr_s1(const float *__restrict p, int64_t cols, const float *__restrict k, float *__restrict y,
             int64_t oh, int64_t ow) {
  const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7],
              k8 = k[8];
  for (int64_t i = 0; i < oh; ++i) {
    const float *r0 = p + i * cols;
    const float *r1 = r0 + cols;
    const float *r2 = r1 + cols;
    float *out = y + i * ow;
#pragma omp simd
    for (int64_t j = 0; j < ow; ++j) {
      const float v = r0[j] * k0 + r0[j + 1] * k1 + r0[j + 2] * k2 + r1[j] * k3 + r1[j + 1] * k4 +
                      r1[j + 2] * k5 + r2[j] * k6 + r2[j + 1] * k7 + r2[j + 2] * k8;
      out[j] = ACC ? out[j] + v : v;
    }
  }
}

// Stride-2 correlation from the even/odd split planes (half columns each).
template <bool ACC = false>
void corr_s2(const float *__restrict ev, const float *__restrict od, int64_t half, const float *__restrict k,
             float *__restrict y, int64_t oh, int64_t ow) {
  const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7],
              k8 = k[8];
  for (int64_t i = 0; i < oh; ++i) {
    const float *e0 = ev + (2 * i) * half, *e1 = e0 + half, *e2 = e1 + half;
    const float *o0 = od + (2 * i) * half, *o1 = o0 + half, *o2 = o1 + half;
    float *out = y + i * ow;
#pragma omp simd
    for (int64_t j = 0; j < ow; ++j) {
      const float v = e0[j] * k0 + o0[j] * k1 + e0[j + 1] * k2 + e1[j] * k3 + o1[j] * k4 + e1[j + 1] * k5 +
                      e2[j] * k6 + o2[j] * k7 + e2[j + 1] * k8;
      out[j] = ACC ? out[j] + v : v;
    }
  }
}

// Input gradient of one plane, stride 2, in the even/odd split form of the padded input.
// dyp is dy padded by one zero row/column before and one zero row after:
// dyp[(m+1)*cols + (j+1)] = dy[m][j], cols = ow + 2. Padded-input row r = 2m (+1 when odd)
// gathers from dy rows m and m-1. For padded rows r = pad .. pad + h - 1 this writes (or adds, when
// ACC) the even columns to ev[(r - pad) * half + j] and the odd ones to od[...], half = ow + 1.
template <bool ACC = false>
void igrad_s2_split(const float *__restrict dyp, int64_t cols, const float *__restrict k, int64_t h,
                    int64_t pad, float *__restrict ev, float *__restrict od) {
  const int64_t half = cols - 1;
  for (int64_t ih = 0; ih < h; ++ih) {
    const int64_t r = ih + pad;
    const int64_t m = r >> 1;
    const float *cur = dyp + (m + 1) * cols + 1;  // dy row m, with cur[-1] == 0
    const float *prev = dyp + m * cols + 1;       // dy row m - 1
    float *erow = ev + ih * half;
    float *orow = od + ih * half;
    if ((r & 1) == 0) {
      const float a = k[0], b = k[1], c = k[2], d = k[6], e = k[7], f = k[8];
#pragma omp simd
      for (int64_t j = 0; j < half; ++j) {
        const float ve = cur[j] * a + cur[j - 1] * c + prev[j] * d + prev[j - 1] * f;
        const float vo = cur[j] * b + prev[j] * e;
        erow[j] = ACC ? erow[j] + ve : ve;
        orow[j] = ACC ? orow[j] + vo : vo;
      }
    } else {
      const float a = k[3], b = k[4], c = k[5];
#pragma omp simd
      for (int64_t j = 0; j < half; ++j) {
        const float ve = cur[j] * a + cur[j - 1] * c;
        const float vo = cur[j] * b;
        erow[j] = ACC ? erow[j] + ve : ve;
        orow[j] = ACC ? orow[j] + vo : vo;
      }
    }
  }
}

// dx[ih][iw] = padded[ih + pad][iw + pad], read back from the even/odd split rows.
void interleave(const float *__restrict ev, const float *__restrict od, int64_t half, float *__restrict dx,
                int64_t h, int64_t w, int64_t pad) {
  // Column iw + pad is odd (from od) when iw + pad is odd, else even (from ev).
  const float *first = pad ? od : ev;   // source of even iw
  const float *second = pad ? ev : od;  // source of odd iw
  const int64_t shift = pad;            // odd iw = 2t + 1 reads second[t + shift]
  for (int64_t ih = 0; ih < h; ++ih) {
    const float *a = first + ih * half;
    const float *b = second + ih * half + shift;
    float *out = dx + ih * w;
    const int64_t pairs = w / 2;
#pragma omp simd
    for (int64_t t = 0; t < pairs; ++t) {
      out[2 * t] = a[t];
      out[2 * t + 1] = b[t];
    }
    if (w & 1) out[w - 1] = a[pairs];
  }
}

// ---------------------------------------------------------------------------------------------
// Flat ("padded-width") loops. A plane stored `cols` wide with zero columns on the right lets a
// 3x3 correlation, or a weight-gradient dot product, run as ONE loop over rows * cols values: the
// 2 or 1 extra columns per row produce values that are thrown away (outputs) or multiply zeros
// (gradients). On MobileNetV2's small planes (7x7, 14x14) row-by-row loops spend their time in
// loop remainders and in one horizontal reduction per row and tap; these do one per plane.
// Every flat buffer ends in kTail zeros, since the taps read up to cols + 1 values past a row.

constexpr int64_t kTail = 16;
// The forward pass goes row by row from this output width up (the flat loop's discarded columns
// and the copy out of its buffer then cost more than the row loops' remainders).
constexpr int64_t kFlatMaxWidth = 48;
// Float sums of products run over at most this many values before going into a double.
constexpr int64_t kBlock = 4096;

// Per-call partial sums, owned by the calling thread.
inline double *partials(size_t n) { return mnv2::thread_buffer<double, 0>(n); }

// The moments of a forward's output per plane, for the BatchNorm that follows it in training (the
// moments entries): m[0] = shift (the plane's first value), m[1] = sum(v - shift), m[2] = sum((v -
// shift)^2). Shifted sums keep E[d^2] - E[d]^2 accurate when the mean is large against the spread.
void plane_output_moments(const float *__restrict p, int64_t hw, double *m) {
  m[0] = p[0];
  mnv2::shifted_moments(p, hw, p[0], m[1], m[2]);
}

// Per channel, the batch mean and (biased) variance from the planes' moments (part[3 * plane]),
// merged in sample order (Chan et al.'s pairwise update; every plane has hw values): moments[c] =
// mean, moments[C + c] = variance.
void combine_moments(const double *part, const Dims &d, float *moments) {
  const double hw = static_cast<double>(d.oh * d.ow);
  for (int64_t c = 0; c < d.c; ++c) {
    double sum_means = 0.0;
    for (int64_t n = 0; n < d.n; ++n) {
      const double *m = part + 3 * (n * d.c + c);
      sum_means += m[0] + m[1] / hw;
    }
    const double mean = sum_means / d.n;
    double m2 = 0.0;
    for (int64_t n = 0; n < d.n; ++n) {
      const double *m = part + 3 * (n * d.c + c);
      const double plane_mean = m[0] + m[1] / hw;
      m2 += std::max(0.0, m[2] - m[1] * m[1] / hw) + hw * (plane_mean - mean) * (plane_mean - mean);
    }
    moments[c] = static_cast<float>(mean);
    moments[d.c + c] = static_cast<float>(m2 / (hw * d.n));
  }
}

// y[t] = sum_{a,b} k[3a+b] * p[t + a*cols + b], t in [0, n).
void corr_flat_s1(const float *__restrict p, int64_t cols, const float *__restrict k, float *__restrict y,
                  int64_t n) {
  const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7],
              k8 = k[8];
  const float *r1 = p + cols, *r2 = p + 2 * cols;
#pragma omp simd
  for (int64_t t = 0; t < n; ++t) {
    y[t] = p[t] * k0 + p[t + 1] * k1 + p[t + 2] * k2 + r1[t] * k3 + r1[t + 1] * k4 + r1[t + 2] * k5 +
           r2[t] * k6 + r2[t + 1] * k7 + r2[t + 2] * k8;
  }
}

// acc[3a+b] += sum_t g[t] * p[t + a*cols + b], t in [0, n) (g is zero where it has no value).
void wgrad_flat_s1(const float *__restrict p, int64_t cols, const float *__restrict g, int64_t n,
                   double *acc) {
  const float *r1 = p + cols, *r2 = p + 2 * cols;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f, a4 = 0.f, a5 = 0.f, a6 = 0.f, a7 = 0.f, a8 = 0.f;
#pragma omp simd reduction(+ : a0, a1, a2, a3, a4, a5, a6, a7, a8)
    for (int64_t t = b; t < e; ++t) {
      const float v = g[t];
      a0 += v * p[t];
      a1 += v * p[t + 1];
      a2 += v * p[t + 2];
      a3 += v * r1[t];
      a4 += v * r1[t + 1];
      a5 += v * r1[t + 2];
      a6 += v * r2[t];
      a7 += v * r2[t + 1];
      a8 += v * r2[t + 2];
    }
    acc[0] += a0; acc[1] += a1; acc[2] += a2; acc[3] += a3; acc[4] += a4;
    acc[5] += a5; acc[6] += a6; acc[7] += a7; acc[8] += a8;
  }
}

// Stride 2 in four phases: phase 2 * (r & 1) + (c & 1) holds padded[r][c] at (r / 2) * g + c / 2,
// each phase (oh + 1) rows of g = ow + 1 columns (then a zero tail). Tap (a, b) of output (i, j)
// is then phase 2 * (a & 1) + (b & 1) at t + (a / 2) * g + b / 2 with t = i * g + j: flat again.
struct Phases {
  int64_t g, size;  // row stride, floats per phase (with tail)
  Phases(int64_t oh, int64_t ow) : g(ow + 1), size((oh + 1) * (ow + 1) + kTail) {}
};

// Pads plane src (h x w) by `pad` and splits it into the four phases at dst (4 * ph.size floats).
void split4(const float *__restrict src, int64_t h, int64_t w, float *__restrict dst, const Phases &ph,
            int64_t pad, const ChannelAct &a = {}) {
  float *row = a.on ? mnv2::thread_buffer<float, 3>(static_cast<size_t>(w)) : nullptr;
  std::memset(dst, 0, sizeof(float) * 4 * ph.size);
  const int64_t rows = ph.size / ph.g;  // >= oh + 1
  for (int64_t i = 0; i < h; ++i) {
    const int64_t r = i + pad;
    if ((r >> 1) >= rows) continue;
    const float *s = act_row(src + i * w, w, a, row);
    float *e = dst + (2 * (r & 1)) * ph.size + (r >> 1) * ph.g;
    float *o = e + ph.size;
    // Padded column c = iw + pad: even c to e[c / 2], odd c to o[c / 2], only where c / 2 < g.
    const int64_t e_lo = (pad + 1) / 2, e_hi = std::min<int64_t>(ph.g, (w - 1 + pad) / 2 + 1);
#pragma omp simd
    for (int64_t j = e_lo; j < e_hi; ++j) e[j] = s[2 * j - pad];
    const int64_t o_lo = pad / 2;
    const int64_t o_hi = w - 2 + pad >= 0 ? std::min<int64_t>(ph.g, (w - 2 + pad) / 2 + 1) : 0;
#pragma omp simd
    for (int64_t j = o_lo; j < o_hi; ++j) o[j] = s[2 * j + 1 - pad];
  }
}

// y[t] = sum_{a,b} k[3a+b] * padded[2i + a][2j + b] over flat t in [0, n), from the phases at x.
void corr_flat_s2(const float *__restrict x, const Phases &ph, const float *__restrict k, float *__restrict y,
                  int64_t n) {
  const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7],
              k8 = k[8];
  const float *ee = x, *eo = x + ph.size, *oe = x + 2 * ph.size, *oo = x + 3 * ph.size;
  const float *ee1 = ee + ph.g, *eo1 = eo + ph.g;
#pragma omp simd
  for (int64_t t = 0; t < n; ++t) {
    y[t] = ee[t] * k0 + eo[t] * k1 + ee[t + 1] * k2 + oe[t] * k3 + oo[t] * k4 + oe[t + 1] * k5 +
           ee1[t] * k6 + eo1[t] * k7 + ee1[t + 1] * k8;
  }
}

void wgrad_flat_s2(const float *__restrict x, const Phases &ph, const float *__restrict g, int64_t n,
                   double *acc) {
  const float *ee = x, *eo = x + ph.size, *oe = x + 2 * ph.size, *oo = x + 3 * ph.size;
  const float *ee1 = ee + ph.g, *eo1 = eo + ph.g;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f, a4 = 0.f, a5 = 0.f, a6 = 0.f, a7 = 0.f, a8 = 0.f;
#pragma omp simd reduction(+ : a0, a1, a2, a3, a4, a5, a6, a7, a8)
    for (int64_t t = b; t < e; ++t) {
      const float v = g[t];
      a0 += v * ee[t];
      a1 += v * eo[t];
      a2 += v * ee[t + 1];
      a3 += v * oe[t];
      a4 += v * oo[t];
      a5 += v * oe[t + 1];
      a6 += v * ee1[t];
      a7 += v * eo1[t];
      a8 += v * ee1[t + 1];
    }
    acc[0] += a0; acc[1] += a1; acc[2] += a2; acc[3] += a3; acc[4] += a4;
    acc[5] += a5; acc[6] += a6; acc[7] += a7; acc[8] += a8;
  }
}

// One row ih of the stride-2 input gradient, written straight into dx: padded row r = ih + P
// (parity ODD) gathers dy row m = r / 2 (`c`, tap row r & 1) and, for even r, row m - 1 (`u`, tap
// row 2); padded column 2n (even) takes taps 0 and 2 from dy columns n and n - 1, column 2n + 1
// (odd) tap 1 from column n. c[-1] and u[-1] must read as zero (see the padded dy buffer).
template <bool ODD, int P>
void igrad_row_s2(const float *__restrict c, const float *__restrict u, const float *__restrict k,
                  float *__restrict out, int64_t w) {
  const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7],
              k8 = k[8];
  auto even = [&](int64_t n) {
    return ODD ? k3 * c[n] + k5 * c[n - 1] : k0 * c[n] + k2 * c[n - 1] + k6 * u[n] + k8 * u[n - 1];
  };
  auto odd = [&](int64_t n) { return ODD ? k4 * c[n] : k1 * c[n] + k7 * u[n]; };
  const int64_t pairs = w / 2;
  // dx column iw is padded column iw + P: P = 0 pairs (even n, odd n), P = 1 pairs (odd n, even n + 1).
#pragma omp simd
  for (int64_t t = 0; t < pairs; ++t) {
    out[2 * t] = P ? odd(t) : even(t);
    out[2 * t + 1] = P ? even(t + 1) : odd(t);
  }
  if (w & 1) out[w - 1] = P ? odd(pairs) : even(pairs);
}

// Copies h rows of w values from a plane `cols` wide into a dense h x w plane.
void compact(const float *__restrict src, int64_t cols, float *__restrict dst, int64_t h, int64_t w) {
  for (int64_t i = 0; i < h; ++i) row_copy(dst + i * w, src + i * cols, w);
}

#if defined(__AVX512F__)
// ---------------------------------------------------------------------------------------------
// Channel-blocked kernels (stride-1 backward, stride-2 forward and backward, at the widths where each
// measured faster: see use_lanes and the calls in forward and backward): the planes of 16 channels of
// one sample are transposed into [row][column][16] buffers, one channel per vector lane. Why: per
// (n, c) plane of 7x7 the flat loops spent most of their time on fixed costs (padding copies, nine
// horizontal reductions per plane, the copy out), and on wide planes every tap was an unaligned
// load. With a channel per lane the weights are per-lane vectors, the weight-gradient sums stay per lane (no horizontal reduction), every load is a whole vector, and
// a 3x3 window slides along a row in registers (3 new loads per input per output, not 9).
constexpr int kLanes = 16;

// Transposes the 16 x 16 matrix whose rows are r[0..15] in place (r[j] becomes column j).
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 2; ++i) {
    for (int k = 0; k < 4; ++k) {
      t[8 * i + k] = _mm512_shuffle_f32x4(r[8 * i + k], r[8 * i + 4 + k], 0x88);
      t[8 * i + 4 + k] = _mm512_shuffle_f32x4(r[8 * i + k], r[8 * i + 4 + k], 0xdd);
    }
  }
  for (int k = 0; k < 8; ++k) {
    r[k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0x88);
    r[k + 8] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0xdd);
  }
}

// Three regions (two inputs, one output) to prefetch in parts: part i of `parts`.
struct Prefetch {
  const float *a[3] = {nullptr, nullptr, nullptr};
  int64_t n[3] = {0, 0, 0};
  void part(int64_t i, int64_t parts) const {
    for (int r = 0; r < 3; ++r) {
      const int64_t lines = (n[r] * static_cast<int64_t>(sizeof(float)) + 63) / 64;
      const int64_t l0 = lines * i / parts, l1 = lines * (i + 1) / parts;
      const char *p = reinterpret_cast<const char *>(a[r]);
      for (int64_t l = l0; l < l1; ++l) {
        if (r == 2) {
          __builtin_prefetch(p + 64 * l, 1, 3);
        } else {
          __builtin_prefetch(p + 64 * l, 0, 3);
        }
      }
    }
  }
};

inline __mmask16 first_lanes(int64_t m) { return static_cast<__mmask16>((1u << m) - 1); }

// A thread's scratch of n floats starting on a cache line (the lane buffers are read a vector
// at a time; a vector split over two lines costs two loads).
template <int Slot>
inline float *lane_buffer(size_t n) {
  float *p = mnv2::thread_buffer<float, Slot>(n + kLanes);
  return reinterpret_cast<float *>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63});
}

// dst (rows x cols x 16) = the planes of `lanes` channels at src (h x w each, one after the
// other), element (i, j) of channel c at dst[((i + top) * cols + j + left) * 16 + c]; everything
// else, lanes >= `lanes` included, zero.
void to_lanes(const float *__restrict src, int64_t lanes, int64_t h, int64_t w, float *__restrict dst,
              int64_t rows, int64_t cols, int64_t top, int64_t left, const Act *act = nullptr, int64_t c0 = 0) {
  // Zero only what the planes do not cover (the borders): the interior is written below, lanes
  // beyond `lanes` included (their rows of the transposition are zero).
  zero_borders(dst, rows, cols, kLanes, top, left, h, w);
  const int64_t hw = h * w;
  __m512 r[kLanes], scale[kLanes] = {}, bias[kLanes] = {};
  const __m512 zero = _mm512_setzero_ps();
  for (int c = 0; act != nullptr && c < lanes; ++c) {
    scale[c] = _mm512_set1_ps(act->scale[c0 + c]);
    bias[c] = _mm512_set1_ps(act->bias[c0 + c]);
  }
  for (int64_t e = 0; e < hw; e += kLanes) {
    const int64_t m = std::min<int64_t>(kLanes, hw - e);
    const __mmask16 mask = first_lanes(m);
    for (int c = 0; c < kLanes; ++c) {
      r[c] = c < lanes ? _mm512_maskz_loadu_ps(mask, src + c * hw + e) : zero;
      // Values past the plane's end (lanes >= m) come out of the activation non-zero; they are
      // never stored below.
      if (act != nullptr && c < lanes) r[c] = act16(r[c], scale[c], bias[c]);
    }
    transpose16(r);
    int64_t i = e / w, j = e % w;
    for (int64_t v = 0; v < m; ++v) {
      _mm512_store_ps(dst + ((i + top) * cols + j + left) * kLanes, r[v]);
      if (++j == w) j = 0, ++i;
    }
  }
}

// The inverse for a dense buffer: planes (hw values each) of `lanes` channels at dst from src (hw x 16).
void from_lanes(const float *__restrict src, int64_t lanes, int64_t hw, float *__restrict dst) {
  __m512 r[kLanes];
  for (int64_t e = 0; e < hw; e += kLanes) {
    const int64_t m = std::min<int64_t>(kLanes, hw - e);
    for (int64_t v = 0; v < kLanes; ++v) r[v] = v < m ? _mm512_load_ps(src + (e + v) * kLanes) : _mm512_setzero_ps();
    transpose16(r);
    const __mmask16 mask = first_lanes(m);
    for (int64_t c = 0; c < lanes; ++c) _mm512_mask_storeu_ps(dst + c * hw + e, mask, r[c]);
  }
}

// The inverse of to_lanes: the h x w planes of `lanes` channels at dst from src (rows of `cols`
// x 16, element (i, j) at row i + top, column j + left).
void from_lanes_padded(const float *__restrict src, int64_t lanes, int64_t h, int64_t w, int64_t cols,
                       int64_t top, int64_t left, float *__restrict dst) {
  const int64_t hw = h * w;
  __m512 r[kLanes];
  for (int64_t e = 0; e < hw; e += kLanes) {
    const int64_t m = std::min<int64_t>(kLanes, hw - e);
    int64_t i = e / w, j = e % w;
    for (int64_t v = 0; v < kLanes; ++v) {
      r[v] = v < m ? _mm512_load_ps(src + ((i + top) * cols + j + left) * kLanes) : _mm512_setzero_ps();
      if (++j == w) j = 0, ++i;
    }
    transpose16(r);
    const __mmask16 mask = first_lanes(m);
    for (int64_t c = 0; c < lanes; ++c) _mm512_mask_storeu_ps(dst + c * hw + e, mask, r[c]);
  }
}


// The next block's planes of a, b (inputs; b may be null) and out, `an`, `bn`, `on` values each.
// A block reads 16 planes at once, 16 streams the hardware prefetcher does not follow: the kernels
// fetch the next block's (contiguous) planes while this one computes, spread over the rows of the
// computation (a burst of prefetches stalls once the miss queue is full).
inline Prefetch next_block(int64_t item, int64_t blocks, const Dims &d, const float *a, int64_t an,
                           const float *b, int64_t bn, const float *out, int64_t on) {
  if (item + 1 >= d.n * blocks) return {};
  const LaneBlock next = lane_block<kLanes>(item + 1, blocks, d.c);
  const int64_t p = next.first_plane(d.c);
  return Prefetch{{a + p * an, b ? b + p * bn : nullptr, out + p * on},
                  {next.lanes * an, b ? next.lanes * bn : 0, next.lanes * on}};
}

// k[t], lane c = w[c0 + c][t] (w[c0 + c][8 - t], the flipped kernel, when FLIP); lanes beyond the
// block's channels zero.
template <bool FLIP>
void lane_kernels(const float *wt, const LaneBlock &b, __m512 *k) {
  alignas(64) float kt[K * K][kLanes] = {};
  for (int64_t c = 0; c < b.lanes; ++c) {
    for (int t = 0; t < K * K; ++t) kt[t][c] = wt[(b.c0 + c) * K * K + (FLIP ? K * K - 1 - t : t)];
  }
  for (int t = 0; t < K * K; ++t) k[t] = _mm512_load_ps(kt[t]);
}

// The block's weight-gradient sums per plane: part[plane][t] = lane c of acc[t] (part as in backward).
void store_lane_sums(const __m512 *acc, const LaneBlock &b, const Dims &d, double *part) {
  alignas(64) float kt[K * K][kLanes];
  for (int t = 0; t < K * K; ++t) _mm512_store_ps(kt[t], acc[t]);
  for (int64_t c = 0; c < b.lanes; ++c) {
    double *a = part + (b.first_plane(d.c) + c) * K * K;
    for (int t = 0; t < K * K; ++t) a[t] = kt[t][c];
  }
}

// sum_ab k[3a + b] * v_ab over a 3x3 window of 16-lane vectors (rows a, b, c; columns 0, 1, 2), in
// three row sums added last.
inline __m512 window3x3(const __m512 *k, __m512 a0, __m512 a1, __m512 a2, __m512 b0, __m512 b1, __m512 b2,
                        __m512 c0, __m512 c1, __m512 c2) {
  __m512 a = _mm512_mul_ps(k[0], a0), b = _mm512_mul_ps(k[3], b0), c = _mm512_mul_ps(k[6], c0);
  a = _mm512_fmadd_ps(k[1], a1, a);
  b = _mm512_fmadd_ps(k[4], b1, b);
  c = _mm512_fmadd_ps(k[7], c1, c);
  a = _mm512_fmadd_ps(k[2], a2, a);
  b = _mm512_fmadd_ps(k[5], b2, b);
  c = _mm512_fmadd_ps(k[8], c2, c);
  return _mm512_add_ps(_mm512_add_ps(a, b), c);
}

// s[3a + b] += g * v_ab for a 3x3 window of 16-lane vectors (rows a, b, c): weight-gradient sums.
inline void add_products(__m512 (&s)[K * K], __m512 g, __m512 a0, __m512 a1, __m512 a2, __m512 b0, __m512 b1,
                         __m512 b2, __m512 c0, __m512 c1, __m512 c2) {
  s[0] = _mm512_fmadd_ps(g, a0, s[0]);
  s[1] = _mm512_fmadd_ps(g, a1, s[1]);
  s[2] = _mm512_fmadd_ps(g, a2, s[2]);
  s[3] = _mm512_fmadd_ps(g, b0, s[3]);
  s[4] = _mm512_fmadd_ps(g, b1, s[4]);
  s[5] = _mm512_fmadd_ps(g, b2, s[5]);
  s[6] = _mm512_fmadd_ps(g, c0, s[6]);
  s[7] = _mm512_fmadd_ps(g, c1, s[7]);
  s[8] = _mm512_fmadd_ps(g, c2, s[8]);
}

// One block of 16 channels: gp = dy padded by Q = 2 - P and xp = x padded by P, both (h + 2) x
// (w + 2) x 16 and zero outside the planes. Writes dxl[i][j] = sum_ab kf[ab] gp[i + a][j + b]
// (kf: the flipped kernels, h x w x 16) and adds g[i][j] * xp[i + a][j + b] to acc[ab] with
// g[i][j] = gp[i + Q][j + Q] (zero outside dy, so the rows and columns beyond oh, ow add nothing).
template <int Q>
void bwd_s1_lanes(const float *__restrict gp, const float *__restrict xp, int64_t h, int64_t w,
                  const __m512 *kf, float *__restrict dxl, __m512 *acc, const Prefetch &pf) {
  const int64_t cols = w + 2, row = cols * kLanes;
  const __m512 f[9] = {kf[0], kf[1], kf[2], kf[3], kf[4], kf[5], kf[6], kf[7], kf[8]};
  __m512 s[K * K] = {acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7], acc[8]};
  for (int64_t i = 0; i < h; ++i) {
    pf.part(i, h);
    const float *g0 = gp + i * row, *g1 = g0 + row, *g2 = g1 + row;
    const float *x0 = xp + i * row, *x1 = x0 + row, *x2 = x1 + row;
    // Columns j, j + 1 of the window (rows a, b, c); column j + 2 is loaded per output.
    __m512 ga0 = _mm512_load_ps(g0), ga1 = _mm512_load_ps(g0 + kLanes);
    __m512 gb0 = _mm512_load_ps(g1), gb1 = _mm512_load_ps(g1 + kLanes);
    __m512 gc0 = _mm512_load_ps(g2), gc1 = _mm512_load_ps(g2 + kLanes);
    __m512 xa0 = _mm512_load_ps(x0), xa1 = _mm512_load_ps(x0 + kLanes);
    __m512 xb0 = _mm512_load_ps(x1), xb1 = _mm512_load_ps(x1 + kLanes);
    __m512 xc0 = _mm512_load_ps(x2), xc1 = _mm512_load_ps(x2 + kLanes);
    float *out = dxl + i * w * kLanes;
    for (int64_t j = 0; j < w; ++j) {
      const int64_t o = (j + 2) * kLanes;
      const __m512 ga2 = _mm512_load_ps(g0 + o), gb2 = _mm512_load_ps(g1 + o), gc2 = _mm512_load_ps(g2 + o);
      const __m512 xa2 = _mm512_load_ps(x0 + o), xb2 = _mm512_load_ps(x1 + o), xc2 = _mm512_load_ps(x2 + o);
      _mm512_store_ps(out + j * kLanes, window3x3(f, ga0, ga1, ga2, gb0, gb1, gb2, gc0, gc1, gc2));
      add_products(s, Q == 1 ? gb1 : gc2, xa0, xa1, xa2, xb0, xb1, xb2, xc0, xc1, xc2);
      ga0 = ga1, ga1 = ga2, gb0 = gb1, gb1 = gb2, gc0 = gc1, gc1 = gc2;
      xa0 = xa1, xa1 = xa2, xb0 = xb1, xb1 = xb2, xc0 = xc1, xc1 = xc2;
    }
  }
  for (int t = 0; t < K * K; ++t) acc[t] = s[t];
}

// Stride-2 backward of one block of 16 channels: gl = dy (oh x ow x 16, dense), xp = x padded by
// P (rows x cols x 16, zero outside x). Adds k[ab] * g[m][n] into dxp[2m + a][2n + b] (dxp: rows x
// cols x 16, zero on entry: the padded input gradient) and g[m][n] * xp[2m + a][2n + b] to acc[ab].
void bwd_s2_lanes(const float *__restrict gl, const float *__restrict xp, int64_t oh, int64_t ow, int64_t cols,
                  const __m512 *k, float *__restrict dxp, __m512 *acc, const Prefetch &pf) {
  const int64_t row = cols * kLanes;
  const __m512 k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7],
               k8 = k[8];
  __m512 s[K * K] = {acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7], acc[8]};
  for (int64_t m = 0; m < oh; ++m) {
    pf.part(m, oh);
    const float *x0 = xp + 2 * m * row, *x1 = x0 + row, *x2 = x1 + row;
    float *d0 = dxp + 2 * m * row, *d1 = d0 + row, *d2 = d1 + row;
    const float *g = gl + m * ow * kLanes;
    // Column 2n of rows a = 0, 1, 2 carries over from the previous n (as column 2n + 2).
    __m512 c0 = _mm512_load_ps(d0), c1 = _mm512_load_ps(d1), c2 = _mm512_load_ps(d2);
    for (int64_t n = 0; n < ow; ++n) {
      const __m512 v = _mm512_load_ps(g + n * kLanes);
      const int64_t o = 2 * n * kLanes;
      const __m512 xa0 = _mm512_load_ps(x0 + o), xa1 = _mm512_load_ps(x0 + o + kLanes),
                   xa2 = _mm512_load_ps(x0 + o + 2 * kLanes);
      const __m512 xb0 = _mm512_load_ps(x1 + o), xb1 = _mm512_load_ps(x1 + o + kLanes),
                   xb2 = _mm512_load_ps(x1 + o + 2 * kLanes);
      const __m512 xc0 = _mm512_load_ps(x2 + o), xc1 = _mm512_load_ps(x2 + o + kLanes),
                   xc2 = _mm512_load_ps(x2 + o + 2 * kLanes);
      add_products(s, v, xa0, xa1, xa2, xb0, xb1, xb2, xc0, xc1, xc2);
      _mm512_store_ps(d0 + o, _mm512_fmadd_ps(k0, v, c0));
      _mm512_store_ps(d1 + o, _mm512_fmadd_ps(k3, v, c1));
      _mm512_store_ps(d2 + o, _mm512_fmadd_ps(k6, v, c2));
      _mm512_store_ps(d0 + o + kLanes, _mm512_fmadd_ps(k1, v, _mm512_load_ps(d0 + o + kLanes)));
      _mm512_store_ps(d1 + o + kLanes, _mm512_fmadd_ps(k4, v, _mm512_load_ps(d1 + o + kLanes)));
      _mm512_store_ps(d2 + o + kLanes, _mm512_fmadd_ps(k7, v, _mm512_load_ps(d2 + o + kLanes)));
      c0 = _mm512_fmadd_ps(k2, v, _mm512_load_ps(d0 + o + 2 * kLanes));
      c1 = _mm512_fmadd_ps(k5, v, _mm512_load_ps(d1 + o + 2 * kLanes));
      c2 = _mm512_fmadd_ps(k8, v, _mm512_load_ps(d2 + o + 2 * kLanes));
    }
    const int64_t o = 2 * ow * kLanes;
    _mm512_store_ps(d0 + o, c0);
    _mm512_store_ps(d1 + o, c1);
    _mm512_store_ps(d2 + o, c2);
  }
  for (int t = 0; t < K * K; ++t) acc[t] = s[t];
}

// The stride-2 backward of all planes in blocks of 16 channels of one sample; part as in backward.
template <int P>
void backward_s2_lanes(const float *dy, const float *x, const float *wt, float *dx, double *part, const Dims &d,
                       const Act *act, const GradSums *gs, const OutGrad *og) {
  const int64_t blocks = (d.c + kLanes - 1) / kLanes;
  // Padded input: every row and column a tap of an output reaches, and all of x.
  const int64_t rows = std::max(2 * d.oh + 1, d.h + P), cols = std::max(2 * d.ow + 1, d.w + P);
  const int64_t psz = rows * cols * kLanes, in = d.h * d.w, out = d.oh * d.ow;
  mnv2::parallel_for_each(d.n * blocks, d.n * d.c * in >= kParallelMin, [&](int64_t item) {
    const LaneBlock b = lane_block<kLanes>(item, blocks, d.c);
    const int64_t p = b.first_plane(d.c);
    const Prefetch pf = next_block(item, blocks, d, dy, out, x, in, dx, in);
    float *gl = lane_buffer<0>(out * kLanes), *xp = lane_buffer<1>(psz), *dxp = lane_buffer<2>(psz);
    to_lanes(grad_planes(og, dy, p, b.lanes, out, b.c0), b.lanes, d.oh, d.ow, gl, d.oh, d.ow, 0, 0);
    to_lanes(x + p * in, b.lanes, d.h, d.w, xp, rows, cols, P, P, act, b.c0);
    std::memset(dxp, 0, sizeof(float) * psz);
    __m512 k[K * K], acc[K * K];
    lane_kernels<false>(wt, b, k);
    for (int t = 0; t < K * K; ++t) acc[t] = _mm512_setzero_ps();
    bwd_s2_lanes(gl, xp, d.oh, d.ow, cols, k, dxp, acc, pf);
    from_lanes_padded(dxp, b.lanes, d.h, d.w, cols, P, P, dx + p * in);
    add_grad_sums(gs, dx, x, p, b.lanes, in, b.c0);
    store_lane_sums(acc, b, d, part);
  });
}

// Stride-2 forward of one block of 16 channels: yl[m][n] = sum_ab k[ab] xp[2m + a][2n + b] (dense
// oh x ow x 16) from xp = x padded by P (rows of `cols` x 16).
void fwd_s2_lanes(const float *__restrict xp, int64_t oh, int64_t ow, int64_t cols, const __m512 *k,
                  float *__restrict yl, const Prefetch &pf) {
  const int64_t row = cols * kLanes;
  const __m512 kv[9] = {k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8]};
  for (int64_t m = 0; m < oh; ++m) {
    pf.part(m, oh);
    const float *x0 = xp + 2 * m * row, *x1 = x0 + row, *x2 = x1 + row;
    float *out = yl + m * ow * kLanes;
    // Column 2n of each row is column 2n + 2 of the previous output.
    __m512 xa0 = _mm512_load_ps(x0), xb0 = _mm512_load_ps(x1), xc0 = _mm512_load_ps(x2);
    for (int64_t n = 0; n < ow; ++n) {
      const int64_t o = (2 * n + 1) * kLanes;
      const __m512 xa1 = _mm512_load_ps(x0 + o), xa2 = _mm512_load_ps(x0 + o + kLanes);
      const __m512 xb1 = _mm512_load_ps(x1 + o), xb2 = _mm512_load_ps(x1 + o + kLanes);
      const __m512 xc1 = _mm512_load_ps(x2 + o), xc2 = _mm512_load_ps(x2 + o + kLanes);
      _mm512_store_ps(out + n * kLanes, window3x3(kv, xa0, xa1, xa2, xb0, xb1, xb2, xc0, xc1, xc2));
      xa0 = xa2, xb0 = xb2, xc0 = xc2;
    }
  }
}

// The stride-2 forward of all planes in blocks of 16 channels of one sample.
template <int P>
void forward_s2_lanes(const float *x, const float *wt, float *y, const Dims &d, const Act *act,
                      const Act *out_act) {
  const int64_t blocks = (d.c + kLanes - 1) / kLanes;
  const int64_t rows = std::max(2 * d.oh + 1, d.h + P), cols = std::max(2 * d.ow + 1, d.w + P);
  const int64_t in = d.h * d.w, out = d.oh * d.ow;
  mnv2::parallel_for_each(d.n * blocks, d.n * d.c * out >= kParallelMin, [&](int64_t item) {
    const LaneBlock b = lane_block<kLanes>(item, blocks, d.c);
    const int64_t p = b.first_plane(d.c);
    const Prefetch pf = next_block(item, blocks, d, x, in, nullptr, 0, y, out);
    float *xp = lane_buffer<0>(rows * cols * kLanes), *yl = lane_buffer<1>(out * kLanes);
    to_lanes(x + p * in, b.lanes, d.h, d.w, xp, rows, cols, P, P, act, b.c0);
    __m512 k[K * K];
    lane_kernels<false>(wt, b, k);
    fwd_s2_lanes(xp, d.oh, d.ow, cols, k, yl, pf);
    from_lanes(yl, b.lanes, out, y + p * out);
    act_planes(y + p * out, b.lanes, out, out_act, b.c0);
  });
}

// Whether the stride-1 backward takes the channel-blocked path for planes w wide. Measured at
// batch 32 on the 2-core EPYC (bench/kernel_breakdown.py, cold operands), as ms of the per-plane
// path -> this one: 7 wide 5.6 -> 3.9, 28 wide 10 -> 6.3, 56 wide 22 -> 19, 112 wide 17 -> 13; but
// 10 to 20 wide it was slower (14 wide: 3.1 -> 4.4, 20 wide 3.2 -> 3.7), for reasons not found:
// hot in cache it is faster there too, so it is how it meets DRAM. Those widths keep the old path.
inline bool use_lanes(int64_t w) { return w <= 8 || w >= 24; }

// The stride-1 backward of all planes in blocks of 16 channels of one sample; part as in backward.
template <int P>
void backward_s1_lanes(const float *dy, const float *x, const float *wt, float *dx, double *part, const Dims &d,
                       const Act *act, const GradSums *gs, const OutGrad *og) {
  constexpr int Q = K - 1 - P;
  const int64_t blocks = (d.c + kLanes - 1) / kLanes;
  const int64_t rows = d.h + 2, cols = d.w + 2, psz = rows * cols * kLanes, in = d.h * d.w, out = d.oh * d.ow;
  mnv2::parallel_for_each(d.n * blocks, d.n * d.c * in >= kParallelMin, [&](int64_t item) {
    const LaneBlock b = lane_block<kLanes>(item, blocks, d.c);
    const int64_t p = b.first_plane(d.c);
    const Prefetch pf = next_block(item, blocks, d, dy, out, x, in, dx, in);
    float *gp = lane_buffer<0>(psz), *xp = lane_buffer<1>(psz), *dxl = lane_buffer<2>(in * kLanes);
    to_lanes(grad_planes(og, dy, p, b.lanes, out, b.c0), b.lanes, d.oh, d.ow, gp, rows, cols, Q, Q);
    to_lanes(x + p * in, b.lanes, d.h, d.w, xp, rows, cols, P, P, act, b.c0);
    __m512 kf[K * K], acc[K * K];
    lane_kernels<true>(wt, b, kf);
    for (int t = 0; t < K * K; ++t) acc[t] = _mm512_setzero_ps();
    bwd_s1_lanes<Q>(gp, xp, d.h, d.w, kf, dxl, acc, pf);
    from_lanes(dxl, b.lanes, in, dx + p * in);
    add_grad_sums(gs, dx, x, p, b.lanes, in, b.c0);
    store_lane_sums(acc, b, d, part);
  });
}
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
// ---------------------------------------------------------------------------------------------
// The channel-blocked kernels for CPUs with AVX2 but not AVX-512, both strides: 8 channels of one
// sample per block, one per lane of a 256-bit vector, as the AVX-512 section above does with 16.
// Faster than the per-plane path at every MobileNetV2 width on a 2-core Zen 2 EPYC, most on the
// small planes, whose per-plane fixed costs they do not pay (bench/kernel_breakdown.py, batch 32, ms
// per step, per-plane path -> this: the four kinds a training step runs, 185 -> 127 on the idle
// machine. Per layer, backward / forward with the BatchNorm + ReLU6 applied as read, measured while
// a test run loaded the machine (all four: 325 -> 220 then): stride 1, 7x7 7.3 / 4.5 -> 2.9 / 1.2,
// 14x14 (384) 4.2 / 2.9 -> 3.4 / 2.0, 112x112 9.4 / 7.8 -> 7.2 / 6.7; stride 2, 14x14 10.0 / 8.6
// -> 6.1 / 3.7, 112x112 24.7 / 21.9 -> 22.4 / 13.3). AVX2 has no cheap masked store (Zen 2 microcodes it: the per-plane
// path's row copies with masked moves were 1.4x slower), so plane tails go through a buffer.
constexpr int kLanes8 = 8;

// Transposes the 8 x 8 matrix whose rows are r[0..7] in place (r[j] becomes column j).
inline void transpose8(__m256 r[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    s[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int k = 0; k < 4; ++k) {
    r[k] = _mm256_permute2f128_ps(s[k], s[4 + k], 0x20);
    r[k + 4] = _mm256_permute2f128_ps(s[k], s[4 + k], 0x31);
  }
}

// Values e .. e + m - 1 (m <= 8) of a plane; the lanes past m are zero and nothing past the plane is read.
inline __m256 load_first8(const float *p, int64_t m) {
  if (m == kLanes8) return _mm256_loadu_ps(p);
  alignas(32) float v[kLanes8] = {};
  std::memcpy(v, p, sizeof(float) * m);
  return _mm256_load_ps(v);
}

// Stores the first m (<= 8) lanes of v at p.
inline void store_first8(float *p, __m256 v, int64_t m) {
  if (m == kLanes8) return _mm256_storeu_ps(p, v);
  alignas(32) float t[kLanes8];
  _mm256_store_ps(t, v);
  std::memcpy(p, t, sizeof(float) * m);
}

template <int Slot>
inline float *lane_buffer8(size_t n) {
  float *p = mnv2::thread_buffer<float, Slot>(n + kLanes8);
  return reinterpret_cast<float *>((reinterpret_cast<uintptr_t>(p) + 31) & ~uintptr_t{31});
}

// As to_lanes, 8 lanes: dst (rows x cols x 8) holds element (i, j) of channel c of the `lanes`
// planes at src at ((i + top) * cols + j + left) * 8 + c, act applied; everything else zero.
void to_lanes8(const float *__restrict src, int64_t lanes, int64_t h, int64_t w, float *__restrict dst,
               int64_t rows, int64_t cols, int64_t top, int64_t left, const Act *act, int64_t c0) {
  zero_borders(dst, rows, cols, kLanes8, top, left, h, w);
  // After the transposition the lanes are the channels: one scale and one bias vector (zero for
  // lanes past `lanes`, which must stay zero).
  alignas(32) float sc[kLanes8] = {}, bi[kLanes8] = {};
  for (int64_t c = 0; act != nullptr && c < lanes; ++c) sc[c] = act->scale[c0 + c], bi[c] = act->bias[c0 + c];
  const __m256 scale = _mm256_load_ps(sc), bias = _mm256_load_ps(bi);
  const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
  const int64_t hw = h * w;
  __m256 r[kLanes8];
  for (int64_t e = 0; e < hw; e += kLanes8) {
    const int64_t m = std::min<int64_t>(kLanes8, hw - e);
    for (int c = 0; c < kLanes8; ++c) r[c] = c < lanes ? load_first8(src + c * hw + e, m) : zero;
    transpose8(r);
    int64_t i = e / w, j = e % w;
    for (int64_t v = 0; v < m; ++v) {
      __m256 x = r[v];
      if (act != nullptr) x = _mm256_min_ps(_mm256_max_ps(_mm256_fmadd_ps(x, scale, bias), zero), six);
      _mm256_store_ps(dst + ((i + top) * cols + j + left) * kLanes8, x);
      if (++j == w) j = 0, ++i;
    }
  }
}

// The inverse for a dense buffer: planes (hw values each) of `lanes` channels at dst from src (hw x 8).
void from_lanes8(const float *__restrict src, int64_t lanes, int64_t hw, float *__restrict dst) {
  __m256 r[kLanes8];
  for (int64_t e = 0; e < hw; e += kLanes8) {
    const int64_t m = std::min<int64_t>(kLanes8, hw - e);
    for (int64_t v = 0; v < kLanes8; ++v) r[v] = v < m ? _mm256_load_ps(src + (e + v) * kLanes8) : _mm256_setzero_ps();
    transpose8(r);
    for (int64_t c = 0; c < lanes; ++c) store_first8(dst + c * hw + e, r[c], m);
  }
}

// k[t], lane c = w[c0 + c][t] (flipped: w[c0 + c][8 - t]); lanes past the block's channels zero.
template <bool FLIP>
void lane_kernels8(const float *wt, const LaneBlock &b, __m256 *k) {
  alignas(32) float kt[K * K][kLanes8] = {};
  for (int64_t c = 0; c < b.lanes; ++c) {
    for (int t = 0; t < K * K; ++t) kt[t][c] = wt[(b.c0 + c) * K * K + (FLIP ? K * K - 1 - t : t)];
  }
  for (int t = 0; t < K * K; ++t) k[t] = _mm256_load_ps(kt[t]);
}

// The block's weight-gradient sums per plane: part[plane][t] = lane c of acc[t] (part as in backward).
void store_lane_sums8(const __m256 *acc, const LaneBlock &b, const Dims &d, double *part) {
  alignas(32) float sums[K * K][kLanes8];
  for (int t = 0; t < K * K; ++t) _mm256_store_ps(sums[t], acc[t]);
  for (int64_t c = 0; c < b.lanes; ++c) {
    for (int t = 0; t < K * K; ++t) part[(b.first_plane(d.c) + c) * K * K + t] = sums[t][c];
  }
}

// As window3x3, 8 lanes: sum_ab k[3a + b] * v_ab over a 3x3 window (rows a, b, c), in three row sums.
inline __m256 window3x3_8(const __m256 *k, __m256 a0, __m256 a1, __m256 a2, __m256 b0, __m256 b1, __m256 b2,
                          __m256 c0, __m256 c1, __m256 c2) {
  __m256 a = _mm256_mul_ps(k[0], a0), b = _mm256_mul_ps(k[3], b0), c = _mm256_mul_ps(k[6], c0);
  a = _mm256_fmadd_ps(k[1], a1, a);
  b = _mm256_fmadd_ps(k[4], b1, b);
  c = _mm256_fmadd_ps(k[7], c1, c);
  a = _mm256_fmadd_ps(k[2], a2, a);
  b = _mm256_fmadd_ps(k[5], b2, b);
  c = _mm256_fmadd_ps(k[8], c2, c);
  return _mm256_add_ps(_mm256_add_ps(a, b), c);
}

// plane_output_moments for the 8 planes of a block, taken from the outputs while they are in
// registers: each row's (v - shift) and (v - shift)^2 summed in float, the rows in double.
struct LaneMoments8 {
  __m256 shift = _mm256_setzero_ps(), row1 = _mm256_setzero_ps(), row2 = _mm256_setzero_ps();
  __m256d sum1[2] = {_mm256_setzero_pd(), _mm256_setzero_pd()};
  __m256d sum2[2] = {_mm256_setzero_pd(), _mm256_setzero_pd()};

  void add(__m256 v) {
    const __m256 dv = _mm256_sub_ps(v, shift);
    row1 = _mm256_add_ps(row1, dv);
    row2 = _mm256_fmadd_ps(dv, dv, row2);
  }
  void end_row() {
    sum1[0] = _mm256_add_pd(sum1[0], _mm256_cvtps_pd(_mm256_castps256_ps128(row1)));
    sum1[1] = _mm256_add_pd(sum1[1], _mm256_cvtps_pd(_mm256_extractf128_ps(row1, 1)));
    sum2[0] = _mm256_add_pd(sum2[0], _mm256_cvtps_pd(_mm256_castps256_ps128(row2)));
    sum2[1] = _mm256_add_pd(sum2[1], _mm256_cvtps_pd(_mm256_extractf128_ps(row2, 1)));
    row1 = row2 = _mm256_setzero_ps();
  }
  // part[3 * plane] as plane_output_moments writes it, for the block's planes.
  void store(const LaneBlock &b, const Dims &d, double *part) const {
    alignas(32) float sh[kLanes8];
    alignas(32) double s1[kLanes8], s2[kLanes8];
    _mm256_store_ps(sh, shift);
    _mm256_store_pd(s1, sum1[0]);
    _mm256_store_pd(s1 + 4, sum1[1]);
    _mm256_store_pd(s2, sum2[0]);
    _mm256_store_pd(s2 + 4, sum2[1]);
    for (int64_t c = 0; c < b.lanes; ++c) {
      double *m = part + 3 * (b.first_plane(d.c) + c);
      m[0] = sh[c], m[1] = s1[c], m[2] = s2[c];
    }
  }
};

// out[i][j] = sum_ab k[3a + b] * p[i + a][j + b] for an oh x ow output, p (oh + 2) x cols x 8.
// Three row sums added last, and the window slides along the row in registers.
// With moments, each output also goes into them (the shift: the first output).
template <bool MOMENTS = false>
void corr_s1_lanes8(const float *__restrict p, int64_t cols, int64_t oh, int64_t ow, const __m256 *k,
                    float *__restrict out, LaneMoments8 *moments = nullptr) {
  const int64_t row = cols * kLanes8;
  for (int64_t i = 0; i < oh; ++i) {
    const float *a = p + i * row, *b = a + row, *c = b + row;
    __m256 a0 = _mm256_load_ps(a), a1 = _mm256_load_ps(a + kLanes8);
    __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + kLanes8);
    __m256 c0 = _mm256_load_ps(c), c1 = _mm256_load_ps(c + kLanes8);
    for (int64_t j = 0; j < ow; ++j) {
      const int64_t o = (j + 2) * kLanes8;
      const __m256 a2 = _mm256_load_ps(a + o), b2 = _mm256_load_ps(b + o), c2 = _mm256_load_ps(c + o);
      const __m256 v = window3x3_8(k, a0, a1, a2, b0, b1, b2, c0, c1, c2);
      if (MOMENTS && i == 0 && j == 0) moments->shift = v;
      _mm256_store_ps(out + (i * ow + j) * kLanes8, v);
      if (MOMENTS) moments->add(v);
      a0 = a1, a1 = a2, b0 = b1, b1 = b2, c0 = c1, c1 = c2;
    }
    if (MOMENTS) moments->end_row();
  }
}

// acc[3a + b] = sum of dy[i][j] * xp[i + a][j + b] over dy's oh x ow values, dy[i][j] = gp[i + Q][j + Q]
// (gp, xp: rows of `cols` x 8).
template <int Q>
void wgrad_s1_lanes8(const float *__restrict gp, const float *__restrict xp, int64_t cols, int64_t oh,
                     int64_t ow, __m256 *acc) {
  const int64_t row = cols * kLanes8;
  __m256 s[K * K];
  for (int t = 0; t < K * K; ++t) s[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < oh; ++i) {
    const float *g = gp + (i + Q) * row + Q * kLanes8;
    const float *x0 = xp + i * row, *x1 = x0 + row, *x2 = x1 + row;
    for (int64_t j = 0; j < ow; ++j) {
      const __m256 v = _mm256_load_ps(g + j * kLanes8);
      const float *a = x0 + j * kLanes8, *b = x1 + j * kLanes8, *c = x2 + j * kLanes8;
      s[0] = _mm256_fmadd_ps(v, _mm256_load_ps(a), s[0]);
      s[1] = _mm256_fmadd_ps(v, _mm256_load_ps(a + kLanes8), s[1]);
      s[2] = _mm256_fmadd_ps(v, _mm256_load_ps(a + 2 * kLanes8), s[2]);
      s[3] = _mm256_fmadd_ps(v, _mm256_load_ps(b), s[3]);
      s[4] = _mm256_fmadd_ps(v, _mm256_load_ps(b + kLanes8), s[4]);
      s[5] = _mm256_fmadd_ps(v, _mm256_load_ps(b + 2 * kLanes8), s[5]);
      s[6] = _mm256_fmadd_ps(v, _mm256_load_ps(c), s[6]);
      s[7] = _mm256_fmadd_ps(v, _mm256_load_ps(c + kLanes8), s[7]);
      s[8] = _mm256_fmadd_ps(v, _mm256_load_ps(c + 2 * kLanes8), s[8]);
    }
  }
  for (int t = 0; t < K * K; ++t) acc[t] = s[t];
}

// The stride-1 forward of all planes in blocks of 8 channels of one sample.
// With `part`, the planes' output moments go there (part[3 * plane], as plane_output_moments).
template <int P>
void forward_s1_lanes8(const float *x, const float *wt, float *y, const Dims &d, const Act *act,
                       const Act *out_act, double *part) {
  const int64_t blocks = (d.c + kLanes8 - 1) / kLanes8;
  const int64_t rows = d.oh + 2, cols = d.ow + 2, in = d.h * d.w, out = d.oh * d.ow;
  mnv2::parallel_for_each(d.n * blocks, d.n * d.c * out >= kParallelMin, [&](int64_t item) {
    const LaneBlock b = lane_block<kLanes8>(item, blocks, d.c);
    const int64_t p = b.first_plane(d.c);
    float *xp = lane_buffer8<0>(rows * cols * kLanes8), *yl = lane_buffer8<1>(out * kLanes8);
    to_lanes8(x + p * in, b.lanes, d.h, d.w, xp, rows, cols, P, P, act, b.c0);
    __m256 k[K * K];
    lane_kernels8<false>(wt, b, k);
    if (part != nullptr) {
      LaneMoments8 moments;
      corr_s1_lanes8<true>(xp, cols, d.oh, d.ow, k, yl, &moments);
      moments.store(b, d, part);
    } else {
      corr_s1_lanes8(xp, cols, d.oh, d.ow, k, yl);
    }
    from_lanes8(yl, b.lanes, out, y + p * out);
    act_planes(y + p * out, b.lanes, out, out_act, b.c0);
  });
}

// The stride-1 backward of all planes in blocks of 8 channels of one sample; part as in backward.
template <int P>
void backward_s1_lanes8(const float *dy, const float *x, const float *wt, float *dx, double *part, const Dims &d,
                        const Act *act, const GradSums *gs, const OutGrad *og) {
  constexpr int Q = K - 1 - P;
  const int64_t blocks = (d.c + kLanes8 - 1) / kLanes8;
  const int64_t rows = d.h + 2, cols = d.w + 2, psz = rows * cols * kLanes8, in = d.h * d.w, out = d.oh * d.ow;
  mnv2::parallel_for_each(d.n * blocks, d.n * d.c * in >= kParallelMin, [&](int64_t item) {
    const LaneBlock b = lane_block<kLanes8>(item, blocks, d.c);
    const int64_t p = b.first_plane(d.c);
    float *gp = lane_buffer8<0>(psz), *xp = lane_buffer8<1>(psz), *dxl = lane_buffer8<2>(in * kLanes8);
    to_lanes8(grad_planes(og, dy, p, b.lanes, out, b.c0), b.lanes, d.oh, d.ow, gp, rows, cols, Q, Q,
              nullptr, 0);
    to_lanes8(x + p * in, b.lanes, d.h, d.w, xp, rows, cols, P, P, act, b.c0);
    __m256 kf[K * K], acc[K * K];
    lane_kernels8<true>(wt, b, kf);
    corr_s1_lanes8(gp, cols, d.h, d.w, kf, dxl);
    from_lanes8(dxl, b.lanes, in, dx + p * in);
    wgrad_s1_lanes8<Q>(gp, xp, cols, d.oh, d.ow, acc);
    add_grad_sums(gs, dx, x, p, b.lanes, in, b.c0);
    store_lane_sums8(acc, b, d, part);
  });
}

// As from_lanes_padded, 8 lanes: the h x w planes of `lanes` channels at dst from src (rows of
// `cols` x 8, element (i, j) at row i + top, column j + left).
void from_lanes_padded8(const float *__restrict src, int64_t lanes, int64_t h, int64_t w, int64_t cols,
                        int64_t top, int64_t left, float *__restrict dst) {
  const int64_t hw = h * w;
  __m256 r[kLanes8];
  for (int64_t e = 0; e < hw; e += kLanes8) {
    const int64_t m = std::min<int64_t>(kLanes8, hw - e);
    int64_t i = e / w, j = e % w;
    for (int64_t v = 0; v < kLanes8; ++v) {
      r[v] = v < m ? _mm256_load_ps(src + ((i + top) * cols + j + left) * kLanes8) : _mm256_setzero_ps();
      if (++j == w) j = 0, ++i;
    }
    transpose8(r);
    for (int64_t c = 0; c < lanes; ++c) store_first8(dst + c * hw + e, r[c], m);
  }
}

// As bwd_s2_lanes, 8 lanes: adds k[ab] * g[m][n] into dxp[2m + a][2n + b] (zero on entry) and
// g[m][n] * xp[2m + a][2n + b] to acc[ab] (zero on entry), gl = dy dense (oh x ow x 8).
void bwd_s2_lanes8(const float *__restrict gl, const float *__restrict xp, int64_t oh, int64_t ow, int64_t cols,
                   const __m256 *k, float *__restrict dxp, __m256 *acc) {
  const int64_t row = cols * kLanes8;
  __m256 s[K * K];
  for (int t = 0; t < K * K; ++t) s[t] = _mm256_setzero_ps();
  for (int64_t m = 0; m < oh; ++m) {
    const float *x0 = xp + 2 * m * row, *x1 = x0 + row, *x2 = x1 + row;
    float *d0 = dxp + 2 * m * row, *d1 = d0 + row, *d2 = d1 + row;
    const float *g = gl + m * ow * kLanes8;
    // Column 2n of rows a = 0, 1, 2 carries over from the previous n (as column 2n + 2).
    __m256 c0 = _mm256_load_ps(d0), c1 = _mm256_load_ps(d1), c2 = _mm256_load_ps(d2);
    for (int64_t n = 0; n < ow; ++n) {
      const __m256 v = _mm256_load_ps(g + n * kLanes8);
      const int64_t o = 2 * n * kLanes8;
      const float *xs[3] = {x0 + o, x1 + o, x2 + o};
      for (int a = 0; a < K; ++a) {
        for (int b = 0; b < K; ++b) s[K * a + b] = _mm256_fmadd_ps(v, _mm256_load_ps(xs[a] + b * kLanes8), s[K * a + b]);
      }
      _mm256_store_ps(d0 + o, _mm256_fmadd_ps(k[0], v, c0));
      _mm256_store_ps(d1 + o, _mm256_fmadd_ps(k[3], v, c1));
      _mm256_store_ps(d2 + o, _mm256_fmadd_ps(k[6], v, c2));
      _mm256_store_ps(d0 + o + kLanes8, _mm256_fmadd_ps(k[1], v, _mm256_load_ps(d0 + o + kLanes8)));
      _mm256_store_ps(d1 + o + kLanes8, _mm256_fmadd_ps(k[4], v, _mm256_load_ps(d1 + o + kLanes8)));
      _mm256_store_ps(d2 + o + kLanes8, _mm256_fmadd_ps(k[7], v, _mm256_load_ps(d2 + o + kLanes8)));
      c0 = _mm256_fmadd_ps(k[2], v, _mm256_load_ps(d0 + o + 2 * kLanes8));
      c1 = _mm256_fmadd_ps(k[5], v, _mm256_load_ps(d1 + o + 2 * kLanes8));
      c2 = _mm256_fmadd_ps(k[8], v, _mm256_load_ps(d2 + o + 2 * kLanes8));
    }
    const int64_t o = 2 * ow * kLanes8;
    _mm256_store_ps(d0 + o, c0);
    _mm256_store_ps(d1 + o, c1);
    _mm256_store_ps(d2 + o, c2);
  }
  for (int t = 0; t < K * K; ++t) acc[t] = s[t];
}

// As fwd_s2_lanes, 8 lanes: yl[m][n] = sum_ab k[ab] xp[2m + a][2n + b] (dense oh x ow x 8).
template <bool MOMENTS = false>
void fwd_s2_lanes8(const float *__restrict xp, int64_t oh, int64_t ow, int64_t cols, const __m256 *k,
                   float *__restrict yl, LaneMoments8 *moments = nullptr) {
  const int64_t row = cols * kLanes8;
  for (int64_t m = 0; m < oh; ++m) {
    const float *x0 = xp + 2 * m * row, *x1 = x0 + row, *x2 = x1 + row;
    float *out = yl + m * ow * kLanes8;
    // Column 2n of each row is column 2n + 2 of the previous output.
    __m256 a0 = _mm256_load_ps(x0), b0 = _mm256_load_ps(x1), c0 = _mm256_load_ps(x2);
    for (int64_t n = 0; n < ow; ++n) {
      const int64_t o = (2 * n + 1) * kLanes8;
      const __m256 a1 = _mm256_load_ps(x0 + o), a2 = _mm256_load_ps(x0 + o + kLanes8);
      const __m256 b1 = _mm256_load_ps(x1 + o), b2 = _mm256_load_ps(x1 + o + kLanes8);
      const __m256 c1 = _mm256_load_ps(x2 + o), c2 = _mm256_load_ps(x2 + o + kLanes8);
      const __m256 v = window3x3_8(k, a0, a1, a2, b0, b1, b2, c0, c1, c2);
      if (MOMENTS && m == 0 && n == 0) moments->shift = v;
      _mm256_store_ps(out + n * kLanes8, v);
      if (MOMENTS) moments->add(v);
      a0 = a2, b0 = b2, c0 = c2;
    }
    if (MOMENTS) moments->end_row();
  }
}

// The stride-2 forward of all planes in blocks of 8 channels of one sample.
template <int P>
void forward_s2_lanes8(const float *x, const float *wt, float *y, const Dims &d, const Act *act,
                       const Act *out_act, double *part) {
  const int64_t blocks = (d.c + kLanes8 - 1) / kLanes8;
  const int64_t rows = std::max(2 * d.oh + 1, d.h + P), cols = std::max(2 * d.ow + 1, d.w + P);
  const int64_t in = d.h * d.w, out = d.oh * d.ow;
  mnv2::parallel_for_each(d.n * blocks, d.n * d.c * out >= kParallelMin, [&](int64_t item) {
    const LaneBlock b = lane_block<kLanes8>(item, blocks, d.c);
    const int64_t p = b.first_plane(d.c);
    float *xp = lane_buffer8<0>(rows * cols * kLanes8), *yl = lane_buffer8<1>(out * kLanes8);
    to_lanes8(x + p * in, b.lanes, d.h, d.w, xp, rows, cols, P, P, act, b.c0);
    __m256 k[K * K];
    lane_kernels8<false>(wt, b, k);
    if (part != nullptr) {
      LaneMoments8 moments;
      fwd_s2_lanes8<true>(xp, d.oh, d.ow, cols, k, yl, &moments);
      moments.store(b, d, part);
    } else {
      fwd_s2_lanes8(xp, d.oh, d.ow, cols, k, yl);
    }
    from_lanes8(yl, b.lanes, out, y + p * out);
    act_planes(y + p * out, b.lanes, out, out_act, b.c0);
  });
}

// The stride-2 backward of all planes in blocks of 8 channels of one sample; part as in backward.
template <int P>
void backward_s2_lanes8(const float *dy, const float *x, const float *wt, float *dx, double *part, const Dims &d,
                        const Act *act, const GradSums *gs, const OutGrad *og) {
  const int64_t blocks = (d.c + kLanes8 - 1) / kLanes8;
  // Padded input: every row and column a tap of an output reaches, and all of x.
  const int64_t rows = std::max(2 * d.oh + 1, d.h + P), cols = std::max(2 * d.ow + 1, d.w + P);
  const int64_t psz = rows * cols * kLanes8, in = d.h * d.w, out = d.oh * d.ow;
  mnv2::parallel_for_each(d.n * blocks, d.n * d.c * in >= kParallelMin, [&](int64_t item) {
    const LaneBlock b = lane_block<kLanes8>(item, blocks, d.c);
    const int64_t p = b.first_plane(d.c);
    float *gl = lane_buffer8<0>(out * kLanes8), *xp = lane_buffer8<1>(psz), *dxp = lane_buffer8<2>(psz);
    to_lanes8(grad_planes(og, dy, p, b.lanes, out, b.c0), b.lanes, d.oh, d.ow, gl, d.oh, d.ow, 0, 0,
              nullptr, 0);
    to_lanes8(x + p * in, b.lanes, d.h, d.w, xp, rows, cols, P, P, act, b.c0);
    std::memset(dxp, 0, sizeof(float) * psz);
    __m256 k[K * K], acc[K * K];
    lane_kernels8<false>(wt, b, k);
    bwd_s2_lanes8(gl, xp, d.oh, d.ow, cols, k, dxp, acc);
    from_lanes_padded8(dxp, b.lanes, d.h, d.w, cols, P, P, dx + p * in);
    add_grad_sums(gs, dx, x, p, b.lanes, in, b.c0);
    store_lane_sums8(acc, b, d, part);
  });
}
#endif

// (x, w[, scale, bias][, out_scale, out_bias]) -> y[, moments]; with ACT the input is act(x) (see
// Act), with BN the output is the epilogue's act of the convolution, with MOMENTS the output's batch
// mean and variance per channel follow (moments[2C], combine_moments) for the training BatchNorm after
// it: taken from the registers in the 8-lane kernels, from a pass over y elsewhere.
template <int S, int P, bool ACT = false, bool BN = false, bool MOMENTS = false>
int forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  constexpr int kVecs = (ACT ? 2 : 0) + (BN ? 2 : 0);
  constexpr int kIn = 2 + kVecs;
  if (nparam != kIn + 1 + MOMENTS || !mnv2::all_float32(nparam, dtypes)) return 1;
  if (!act_dims_ok(kVecs, kIn + 1, 2, ndims)) return 1;
  if (MOMENTS && (ndims[kIn + 1] != 1 || shapes[kIn + 1][0] != 2 * shapes[0][1])) return 2;
  const float *x = static_cast<const float *>(params[0]);
  const float *wt = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[kIn]);
  const Dims d{shapes[0][0], shapes[0][1], shapes[0][2], shapes[0][3], shapes[kIn][2], shapes[kIn][3]};
  if (shapes[1][0] != d.c || shapes[1][2] != K || shapes[1][3] != K) return 2;
  for (int v = 2; v < kIn; ++v) {
    if (shapes[v][0] != d.c) return 2;
  }
  const auto vec = [&](int i) { return static_cast<const float *>(params[i]); };
  const Act act_value{ACT ? vec(2) : nullptr, ACT ? vec(3) : nullptr};
  const Act *act = ACT ? &act_value : nullptr;
  const Act out_value{BN ? vec(kIn - 2) : nullptr, BN ? vec(kIn - 1) : nullptr};
  const Act *out_act = BN ? &out_value : nullptr;
  if (d.oh != (d.h + 2 * P - K) / S + 1 || d.ow != (d.w + 2 * P - K) / S + 1) return 3;
  const int64_t planes = d.n * d.c;
  double *part = MOMENTS ? partials(static_cast<size_t>(3 * planes)) : nullptr;
  float *moments = MOMENTS ? static_cast<float *>(params[kIn + 1]) : nullptr;
  const auto moments_from_y = [&] {
    if (!MOMENTS) return;
    const int64_t out = d.oh * d.ow;
    mnv2::parallel_for_each(planes, planes * out >= kParallelMin,
                            [&](int64_t pl) { plane_output_moments(y + pl * out, out, part + 3 * pl); });
    combine_moments(part, d, moments);
  };
#if defined(__AVX512F__)
  // Measured (batch 32): 112 wide 19.0 -> 11.2 ms per step, 56 wide 7.7 -> 4.4, 28 wide 2.1 -> 2.0;
  // but 14 wide 2.5 -> 2.6, where the per-plane path stays.
  if (S == 2 && d.w >= 24) {
    forward_s2_lanes<P>(x, wt, y, d, act, out_act);
    moments_from_y();
    return 0;
  }
#elif defined(__AVX2__)
  if (S == 1) {
    forward_s1_lanes8<P>(x, wt, y, d, act, out_act, part);
  } else {
    forward_s2_lanes8<P>(x, wt, y, d, act, out_act, part);
  }
  if (MOMENTS) combine_moments(part, d, moments);
  return 0;
#endif
  // Padded plane: rows 0 .. S*(oh-1)+2, columns 0 .. S*(ow-1)+2.
  const int64_t rows = S * (d.oh - 1) + K;
  const int64_t cols = S == 1 ? d.ow + 2 : d.ow + 1;  // for S == 2: columns per even/odd half
  mnv2::parallel_for_each(planes, planes * d.oh * d.ow >= kParallelMin, [&](int64_t pl) {
    const float *src = x + pl * d.h * d.w;
    const ChannelAct a = channel_act(act, pl % d.c);
    const float *k = wt + (pl % d.c) * K * K;
    float *dst = y + pl * d.oh * d.ow;
    if (S == 1 && d.ow >= kFlatMaxWidth) {
      float *p = scratch(rows * cols);
      pad_plane(src, d.h, d.w, p, rows, cols, P, P, a);
      corr_s1(p, cols, k, dst, d.oh, d.ow);
    } else if (S == 2 && d.ow >= kFlatMaxWidth) {
      float *ev = scratch(2 * rows * cols);
      float *od = ev + rows * cols;
      pad_plane_split(src, d.h, d.w, ev, od, rows, cols, P, P, a);
      corr_s2(ev, od, cols, k, dst, d.oh, d.ow);
    } else if (S == 1) {
      // Padded plane (oh + 2) x (ow + 2); for P == 0 that is x itself, copied to get the tail.
      float *p = scratch(rows * cols + kTail);
      pad_plane(src, d.h, d.w, p, rows, cols, P, P, a);
      std::memset(p + rows * cols, 0, sizeof(float) * kTail);
      float *out = scratch3(d.oh * cols);
      corr_flat_s1(p, cols, k, out, d.oh * cols);
      compact(out, cols, dst, d.oh, d.ow);
    } else {
      const Phases ph(d.oh, d.ow);
      float *xp = scratch(4 * ph.size);
      split4(src, d.h, d.w, xp, ph, P, a);
      float *out = scratch3(d.oh * ph.g);
      corr_flat_s2(xp, ph, k, out, d.oh * ph.g);
      compact(out, ph.g, dst, d.oh, d.ow);
    }
    act_planes(dst, 1, d.oh * d.ow, out_act, pl % d.c);
  });
  moments_from_y();
  return 0;
}

// (dy, x, w[, scale, bias][, gamma, beta, save_mean, save_invstd][, conv, gamma2, beta2, save_mean2,
// save_invstd2, means2[2C]]) -> dx, dw[, sums[4C]]; with ACT the input is act(x) and dx its gradient
// (the gradient of act(x), not of x: the BatchNorm's backward takes it from there); with SUMS (and
// ACT) also the gradient sums of the training BatchNorm + ReLU6 that act is (GradSums), as
// mnv2_bn_train_bwd_apply_r1 takes them: sum(g), sum(g * xhat), then each over the channel's N * H * W
// values; with OUTBN dy is the gradient of the training BatchNorm + ReLU6 after the convolution, whose
// input conv is and whose reduction gave means2 (OutGrad).
template <int S, int P, bool ACT = false, bool SUMS = false, bool OUTBN = false>
int backward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  static_assert(ACT || !SUMS, "the gradient sums belong to the act prologue's BatchNorm");
  constexpr int kVecs = (ACT ? 2 : 0) + (SUMS ? 4 : 0);
  constexpr int kOutBn = 3 + kVecs;              // conv's index, with OUTBN
  constexpr int kIn = kOutBn + (OUTBN ? 6 : 0);  // dx's
  if (nparam != kIn + 2 + SUMS || !mnv2::all_float32(nparam, dtypes)) return 1;
  if (!act_dims_ok(kVecs, kOutBn, 3, ndims) || ndims[kIn] != 4 || ndims[kIn + 1] != 4) return 1;
  if (OUTBN && !act_dims_ok(5, 6, 1, ndims + kOutBn)) return 1;
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  const float *wt = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[kIn]);
  float *dw = static_cast<float *>(params[kIn + 1]);
  const Dims d{shapes[1][0], shapes[1][1], shapes[1][2], shapes[1][3], shapes[0][2], shapes[0][3]};
  if (shapes[0][0] != d.n || shapes[0][1] != d.c || shapes[kIn][2] != d.h || shapes[kIn][3] != d.w) return 2;
  if (shapes[2][0] != d.c || shapes[kIn + 1][0] != d.c) return 2;
  for (int v = 3; v < kOutBn; ++v) {
    if (shapes[v][0] != d.c) return 2;
  }
  if (OUTBN) {  // conv like dy, then four vectors of C and means2 of 2C
    if (!std::equal(shapes[0], shapes[0] + 4, shapes[kOutBn]) || shapes[kIn - 1][0] != 2 * d.c) return 2;
    for (int v = kOutBn + 1; v < kIn - 1; ++v) {
      if (shapes[v][0] != d.c) return 2;
    }
  }
  if (SUMS && (ndims[kIn + 2] != 1 || shapes[kIn + 2][0] != 4 * d.c)) return 2;
  const auto vec = [&](int i) { return static_cast<const float *>(params[i]); };
  const Act act_value{ACT ? vec(3) : nullptr, ACT ? vec(4) : nullptr};
  const Act *act = ACT ? &act_value : nullptr;
  const OutGrad og_value = OUTBN ? OutGrad{vec(kOutBn), vec(kOutBn + 1), vec(kOutBn + 2), vec(kOutBn + 3),
                                           vec(kOutBn + 4), vec(kOutBn + 5), vec(kOutBn + 5) + d.c}
                                 : OutGrad{};
  const OutGrad *og = OUTBN ? &og_value : nullptr;
  if (d.oh != (d.h + 2 * P - K) / S + 1 || d.ow != (d.w + 2 * P - K) / S + 1) return 3;
  // Planes in memory order (a channel's planes are C * H * W apart and, small, too short for the
  // hardware prefetcher), each with its own weight-gradient partial sums (and BatchNorm gradient
  // sums), added up per channel in sample order afterwards: the result does not depend on the
  // thread count.
  const int64_t planes = d.n * d.c;
  double *part = partials(static_cast<size_t>(planes * K * K));
  const GradSums gs_value{SUMS ? vec(5) : nullptr, SUMS ? vec(6) : nullptr, SUMS ? vec(7) : nullptr,
                          SUMS ? vec(8) : nullptr,
                          SUMS ? mnv2::thread_buffer<double, 1>(static_cast<size_t>(2 * planes)) : nullptr};
  const GradSums *gs = SUMS ? &gs_value : nullptr;
#if defined(__AVX512F__)
  if (S == 1 && use_lanes(d.w)) {
    backward_s1_lanes<P>(dy, x, wt, dx, part, d, act, gs, og);
  } else if (S == 2) {  // faster at every MobileNetV2 width (measured: 112, 56, 28, 14)
    backward_s2_lanes<P>(dy, x, wt, dx, part, d, act, gs, og);
  } else
#elif defined(__AVX2__)
  if (S == 1) {
    backward_s1_lanes8<P>(dy, x, wt, dx, part, d, act, gs, og);
  } else if (S == 2) {
    backward_s2_lanes8<P>(dy, x, wt, dx, part, d, act, gs, og);
  } else
#endif
  mnv2::parallel_for_each(planes, planes * d.h * d.w >= kParallelMin, [&](int64_t pl) {
    const int64_t c = pl % d.c;
    const float *k = wt + c * K * K;
    float flipped[K * K];
    for (int i = 0; i < K * K; ++i) flipped[i] = k[K * K - 1 - i];
    double *acc = part + pl * K * K;
    for (int i = 0; i < K * K; ++i) acc[i] = 0.0;
    {
      const float *xs = x + pl * d.h * d.w;
      const ChannelAct a = channel_act(act, c);
      const float *g = grad_planes(og, dy, pl, 1, d.oh * d.ow, c);
      float *gx = dx + pl * d.h * d.w;
      if (S == 1) {
        // Both planes `cols` = ow + 2q wide (q = 2 - P, dy's padding for the input gradient): dy
        // padded by q, x by P (and 2 - 2P zero columns more). dx is dy's correlation with the
        // flipped kernel; the weight gradient pairs dy with the taps of x.
        const int64_t q = K - 1 - P, cols = d.ow + 2 * q;
        const int64_t grows = d.oh + 2 * q, xrows = d.oh + 2;
        float *gp = scratch2(grows * cols + kTail);
        pad_plane(g, d.oh, d.ow, gp, grows, cols, q, q);
        std::memset(gp + grows * cols, 0, sizeof(float) * kTail);
        float *p = scratch(xrows * cols + kTail);
        pad_plane(xs, d.h, d.w, p, xrows, cols, P, P, a);
        std::memset(p + xrows * cols, 0, sizeof(float) * kTail);
        wgrad_flat_s1(p, cols, gp + q * cols + q, d.oh * cols, acc);
        if (d.w >= kFlatMaxWidth) {  // wide rows: straight into dx, as the forward pass does
          corr_s1(gp, cols, flipped, gx, d.h, d.w);
        } else {
          float *out = scratch3(d.h * cols);
          corr_flat_s1(gp, cols, flipped, out, d.h * cols);
          compact(out, cols, gx, d.h, d.w);
        }
      } else {
        // dy padded by a zero row above and below and a zero column on the left, ow + 1 wide, so
        // row m's column ow is the next row's zero: one buffer serves both gradients.
        const Phases ph(d.oh, d.ow);
        const int64_t gw = ph.g, grows = d.oh + 2;
        float *gp = scratch2(grows * gw + kTail);
        pad_plane(g, d.oh, d.ow, gp, grows, gw, 1, 1);
        std::memset(gp + grows * gw, 0, sizeof(float) * kTail);
        const float *gc = gp + gw + 1;  // gc[m * gw + j] = dy[m][j]
        float *xp = scratch(4 * ph.size);
        split4(xs, d.h, d.w, xp, ph, P, a);
        wgrad_flat_s2(xp, ph, gc, d.oh * gw, acc);
        // dx[ih][iw] = padded gradient at (ih + P, iw + P), row by row.
        for (int64_t ih = 0; ih < d.h; ++ih) {
          const int64_t r = ih + P;
          const float *cr = gc + (r >> 1) * gw;
          if (r & 1) {
            igrad_row_s2<true, P>(cr, cr - gw, k, gx + ih * d.w, d.w);
          } else {
            igrad_row_s2<false, P>(cr, cr - gw, k, gx + ih * d.w, d.w);
          }
        }
      }
    }
    add_grad_sums(gs, dx, x, pl, 1, d.h * d.w, c);
  });
  if (SUMS) {
    float *sums = static_cast<float *>(params[kIn + 2]);
    mnv2::combine_grad_sums(gs->part, d.n, d.c, d.n * d.h * d.w, sums, sums + d.c, sums + 2 * d.c,
                            sums + 3 * d.c);
  }
  for (int64_t c = 0; c < d.c; ++c) {
    double acc[K * K] = {0};
    for (int64_t n = 0; n < d.n; ++n) {
      for (int i = 0; i < K * K; ++i) acc[i] += part[(n * d.c + c) * K * K + i];
    }
    for (int i = 0; i < K * K; ++i) dw[c * K * K + i] = static_cast<float>(acc[i]);
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Dense 3x3 convolution with few input channels (MobileNetV2's stem: 3 -> 32, stride 2).
// MindSpore 2.10's CPU Conv2D takes seconds for this layer (40x PyTorch); it is computed here
// from the same per-plane correlations: every input plane is padded once into a shared buffer,
// then each output plane sums CI correlations. Cost grows with CI * CO, so this is meant for
// small CI only.
//   mnv2_conv3x3_fwd_s{S}_p{P}(x[N,CI,H,W], w[CO,CI,3,3]) -> y[N,CO,OH,OW]
//   mnv2_conv3x3_bwd_s{S}_p{P}(dy, x, w) -> dx[N,CI,H,W], dw[CO,CI,3,3]
//   mnv2_conv3x3_wgrad_s{S}_p{P}(dy, x, w) -> dw[CO,CI,3,3]   (input needs no gradient: the images)

template <int S, int P>
int dense_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (!mnv2::all_nchw_float32(nparam, 3, ndims, dtypes)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *wt = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  const int64_t n = shapes[0][0], ci = shapes[0][1], h = shapes[0][2], w = shapes[0][3];
  const int64_t co = shapes[1][0], oh = shapes[2][2], ow = shapes[2][3];
  if (shapes[1][1] != ci || shapes[1][2] != K || shapes[1][3] != K) return 2;
  if (shapes[2][0] != n || shapes[2][1] != co) return 2;
  if (oh != (h + 2 * P - K) / S + 1 || ow != (w + 2 * P - K) / S + 1) return 3;
  const int64_t rows = S * (oh - 1) + K, cols = S == 1 ? ow + 2 : ow + 1;
  const int64_t psz = S == 1 ? rows * cols : 2 * rows * cols;
  // Work items: a sample and a block of output channels. The item pads its sample's CI planes
  // into the thread's scratch (no shared buffer to allocate and fault in), which stay in cache
  // for the block's correlations. Blocks split a sample when there are few samples per thread.
  const int64_t threads = mnv2::Pool::instance().size();
  const int64_t nb = std::clamp<int64_t>((2 * threads + n - 1) / n, 1, co);
  const int64_t bsize = (co + nb - 1) / nb;
  mnv2::parallel_for_each(n * nb, true, [&](int64_t item) {
    const int64_t b = item / nb, o0 = (item % nb) * bsize, o1 = std::min(co, o0 + bsize);
    float *xp = scratch(static_cast<size_t>(ci * psz));
    for (int64_t i = 0; i < ci; ++i) {
      const float *src = x + (b * ci + i) * h * w;
      float *dst = xp + i * psz;
      if (S == 1) {
        pad_plane(src, h, w, dst, rows, cols, P, P);
      } else {
        pad_plane_split(src, h, w, dst, dst + rows * cols, rows, cols, P, P);
      }
    }
    // Bands of output rows, every input channel added into a band while it is in L1.
    constexpr int64_t kBand = 8;
    for (int64_t o = o0; o < o1; ++o) {
      for (int64_t r0 = 0; r0 < oh; r0 += kBand) {
        const int64_t nr = std::min(kBand, oh - r0);
        float *dst = y + (b * co + o) * oh * ow + r0 * ow;
        for (int64_t i = 0; i < ci; ++i) {
          const float *src = xp + i * psz;
          const float *k = wt + (o * ci + i) * K * K;
          if (S == 1) {
            const float *p = src + r0 * cols;
            if (i == 0) corr_s1<false>(p, cols, k, dst, nr, ow); else corr_s1<true>(p, cols, k, dst, nr, ow);
          } else {
            const float *ev = src + 2 * r0 * cols, *od = src + rows * cols + 2 * r0 * cols;
            if (i == 0) corr_s2<false>(ev, od, cols, k, dst, nr, ow); else corr_s2<true>(ev, od, cols, k, dst, nr, ow);
          }
        }
      }
    }
  });
  return 0;
}

// DX false: the weight gradient only (outputs: dw), for a layer whose input needs no gradient.
template <int S, int P, bool DX>
int dense_backward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (!mnv2::all_nchw_float32(nparam, DX ? 5 : 4, ndims, dtypes)) return 1;
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  const float *wt = static_cast<const float *>(params[2]);
  float *dx = DX ? static_cast<float *>(params[3]) : nullptr;
  float *dw = static_cast<float *>(params[DX ? 4 : 3]);
  int64_t *dw_shape = shapes[DX ? 4 : 3];
  const int64_t n = shapes[1][0], ci = shapes[1][1], h = shapes[1][2], w = shapes[1][3];
  const int64_t co = shapes[2][0], oh = shapes[0][2], ow = shapes[0][3];
  if (shapes[0][0] != n || shapes[0][1] != co || shapes[2][1] != ci) return 2;
  if (dw_shape[0] != co || dw_shape[1] != ci) return 2;
  if (DX && (shapes[3][2] != h || shapes[3][3] != w)) return 2;
  if (oh != (h + 2 * P - K) / S + 1 || ow != (w + 2 * P - K) / S + 1) return 3;
  // Weight gradient in flat loops (wgrad_flat_s1 / _s2), one sample per work item: its CI x
  // planes padded once into the thread's scratch (stride 2: in phases), then for every output
  // channel its dy plane padded into a `fcols`-wide buffer whose extra columns are zero. Each item
  // keeps its own CO x CI x 9 partial sums, added up in sample order afterwards.
  const Phases ph(oh, ow);
  const int64_t fcols = S == 1 ? ow + 2 : ph.g;
  const int64_t fsz = S == 1 ? (oh + 2) * fcols + kTail : 4 * ph.size;
  const int64_t taps = co * ci * K * K;
  double *part = partials(static_cast<size_t>(n * taps));
  mnv2::parallel_for_each(n, true, [&](int64_t b) {
    float *xf = scratch(static_cast<size_t>(ci * fsz));
    for (int64_t i = 0; i < ci; ++i) {
      const float *src = x + (b * ci + i) * h * w;
      float *dst = xf + i * fsz;
      if (S == 1) {
        pad_plane(src, h, w, dst, oh + 2, fcols, P, P);
        std::memset(dst + (oh + 2) * fcols, 0, sizeof(float) * kTail);
      } else {
        split4(src, h, w, dst, ph, P);
      }
    }
    double *acc = part + b * taps;
    std::fill(acc, acc + taps, 0.0);
    float *gs = scratch2(oh * fcols + kTail);
    for (int64_t o = 0; o < co; ++o) {
      pad_plane(dy + (b * co + o) * oh * ow, oh, ow, gs, oh, fcols, 0, 0);
      std::memset(gs + oh * fcols, 0, sizeof(float) * kTail);
      for (int64_t i = 0; i < ci; ++i) {
        double *a = acc + (o * ci + i) * K * K;
        if (S == 1) {
          wgrad_flat_s1(xf + i * fsz, fcols, gs, oh * fcols, a);
        } else {
          wgrad_flat_s2(xf + i * fsz, ph, gs, oh * fcols, a);
        }
      }
    }
  });
  for (int64_t j = 0; j < taps; ++j) {
    double sum = 0.0;
    for (int64_t b = 0; b < n; ++b) sum += part[b * taps + j];
    dw[j] = static_cast<float>(sum);
  }
  if (!DX) return 0;
  // Input gradient: pad every dy plane once, then each (n, ci) plane sums CO contributions.
  const int64_t q = K - 1 - P;
  const int64_t grows = S == 1 ? oh + 2 * q : oh + 2, gcols = S == 1 ? ow + 2 * q : ow + 2;
  const int64_t gsz = grows * gcols;
  std::vector<float> gp(static_cast<size_t>(n * co * gsz));
  mnv2::parallel_for_each(n * co, true, [&](int64_t pl) {
    if (S == 1) {
      pad_plane(dy + pl * oh * ow, oh, ow, gp.data() + pl * gsz, grows, gcols, q, q);
    } else {
      pad_plane(dy + pl * oh * ow, oh, ow, gp.data() + pl * gsz, grows, gcols, 1, 1);
    }
  });
  mnv2::parallel_for_each(n * ci, true, [&](int64_t pl) {
    const int64_t b = pl / ci, i = pl % ci;
    float *gx = dx + pl * h * w;
    const int64_t half = gcols - 1;
    float *gev = scratch(2 * h * half), *god = gev + h * half;
    for (int64_t o = 0; o < co; ++o) {
      const float *g = gp.data() + (b * co + o) * gsz;
      const float *k = wt + (o * ci + i) * K * K;
      if (S == 1) {
        float flipped[K * K];
        for (int j = 0; j < K * K; ++j) flipped[j] = k[K * K - 1 - j];
        if (o == 0) corr_s1<false>(g, gcols, flipped, gx, h, w); else corr_s1<true>(g, gcols, flipped, gx, h, w);
      } else {
        if (o == 0) {
          igrad_s2_split<false>(g, gcols, k, h, P, gev, god);
        } else {
          igrad_s2_split<true>(g, gcols, k, h, P, gev, god);
        }
      }
    }
    if (S == 2) interleave(gev, god, half, gx, h, w, P);
  });
  return 0;
}

}  // namespace

#define MNV2_DW_EXPORT(S, P)                                                                              \
  extern "C" int mnv2_dw3x3_fwd_s##S##_p##P(int nparam, void **params, int *ndims, int64_t **shapes,      \
                                            const char **dtypes, void *, void *) {                       \
    return forward<S, P>(nparam, params, ndims, shapes, dtypes);                                          \
  }                                                                                                       \
  extern "C" int mnv2_dw3x3_bwd_s##S##_p##P(int nparam, void **params, int *ndims, int64_t **shapes,      \
                                            const char **dtypes, void *, void *) {                       \
    return backward<S, P>(nparam, params, ndims, shapes, dtypes);                                         \
  }                                                                                                       \
  extern "C" int mnv2_dw3x3_actfwd_s##S##_p##P(int nparam, void **params, int *ndims, int64_t **shapes,   \
                                               const char **dtypes, void *, void *) {                    \
    return forward<S, P, true>(nparam, params, ndims, shapes, dtypes);                                    \
  }                                                                                                       \
  extern "C" int mnv2_dw3x3_actbwd_s##S##_p##P(int nparam, void **params, int *ndims, int64_t **shapes,   \
                                               const char **dtypes, void *, void *) {                    \
    return backward<S, P, true>(nparam, params, ndims, shapes, dtypes);                                   \
  }                                                                                                       \
  extern "C" int mnv2_dw3x3_actbwd_sums_s##S##_p##P(int nparam, void **params, int *ndims, int64_t **shapes,\
                                                    const char **dtypes, void *, void *) {               \
    return backward<S, P, true, true>(nparam, params, ndims, shapes, dtypes);                             \
  }                                                                                                       \
  extern "C" int mnv2_dw3x3_actbwd_outbn_s##S##_p##P(int nparam, void **params, int *ndims,              \
                                                     int64_t **shapes, const char **dtypes, void *,        \
                                                     void *) {                                             \
    return backward<S, P, true, true, true>(nparam, params, ndims, shapes, dtypes);                       \
  }                                                                                                       \
  extern "C" int mnv2_dw3x3_actfwd_bn_s##S##_p##P(int nparam, void **params, int *ndims, int64_t **shapes,\
                                                  const char **dtypes, void *, void *) {                 \
    return forward<S, P, true, true>(nparam, params, ndims, shapes, dtypes);                              \
  }                                                                                                       \
  extern "C" int mnv2_dw3x3_actfwd_moments_s##S##_p##P(int nparam, void **params, int *ndims,            \
                                                       int64_t **shapes, const char **dtypes, void *,      \
                                                       void *) {                                           \
    return forward<S, P, true, false, true>(nparam, params, ndims, shapes, dtypes);                       \
  }

MNV2_DW_EXPORT(1, 0)
MNV2_DW_EXPORT(1, 1)
MNV2_DW_EXPORT(2, 0)
MNV2_DW_EXPORT(2, 1)

#define MNV2_CONV_EXPORT(S, P)                                                                            \
  extern "C" int mnv2_conv3x3_fwd_s##S##_p##P(int nparam, void **params, int *ndims, int64_t **shapes,    \
                                              const char **dtypes, void *, void *) {                     \
    return dense_forward<S, P>(nparam, params, ndims, shapes, dtypes);                                    \
  }                                                                                                       \
  extern "C" int mnv2_conv3x3_bwd_s##S##_p##P(int nparam, void **params, int *ndims, int64_t **shapes,    \
                                              const char **dtypes, void *, void *) {                     \
    return dense_backward<S, P, true>(nparam, params, ndims, shapes, dtypes);                             \
  }                                                                                                       \
  extern "C" int mnv2_conv3x3_wgrad_s##S##_p##P(int nparam, void **params, int *ndims, int64_t **shapes,  \
                                                const char **dtypes, void *, void *) {                   \
    return dense_backward<S, P, false>(nparam, params, ndims, shapes, dtypes);                            \
  }

MNV2_CONV_EXPORT(1, 0)
MNV2_CONV_EXPORT(1, 1)
MNV2_CONV_EXPORT(2, 0)
MNV2_CONV_EXPORT(2, 1)

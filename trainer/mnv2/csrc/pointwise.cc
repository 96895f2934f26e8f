// Pointwise (1x1, stride 1, no bias) convolutions with bf16 products and fp32 sums, for MindSpore's
// CPU backend through ops.Custom(func_type="aot"). Tensors are NCHW float32 in and out; operands
// are rounded to bf16 (round to nearest even) as they are packed, and every sum is float32.
//
// Why: with the depthwise, stem and BatchNorm kernels in, MindSpore's float32 pointwise
// convolutions (forward and both gradients) are half of a MobileNetV2 training step (bench/RESULTS.md),
// already near what float32 arithmetic allows on two cores. MindSpore 2.10's CPU Conv2D takes
// float32 only, so bf16 there means a GEMM of our own: on CPUs with AVX512-BF16, VDPBF16PS does
// 32 multiply-adds per instruction against FMA's 16. This is mixed precision as PyTorch's CPU
// autocast does it (bf16 convolutions, fp32 accumulation); the trainer turns it on only when asked
// (`bf16_pointwise`), and fp32 stays the exact default.
//
// Every output element is summed by one thread in a fixed order, and the weight gradient's
// per-sample partial sums go into a fixed number of groups added in order, so results do not depend
// on the thread count.
//
// Entry points (inputs first, outputs last in `params`):
//   mnv2_pw_fwd(x[N,Cin,H,W], w[Cout,Cin,1,1]) -> y[N,Cout,H,W]
//   mnv2_pw_bwd(dy[N,Cout,H,W], x, w) -> dx[N,Cin,H,W], dw[Cout,Cin,1,1]
//   mnv2_pw_supported() -> 1 when this CPU has AVX512-BF16 (the other entry points return 2 otherwise)
// Return value 0 is success, 1 a shape or dtype mismatch.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "aot.h"
#include "parallel.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define MNV2_PW_X86 1
#endif

namespace {

#if defined(MNV2_PW_X86)

constexpr int kMR = 6;        // rows of C per micro-tile: 6 x 4 accumulators + 4 B vectors + 1 A broadcast
constexpr int kNB = 64;       // columns of C per packed panel (4 vectors of 16 lanes)
constexpr int64_t kKC = 256;  // bf16 pairs of K per sweep over a panel: a 64 KB slice stays in L2

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")

inline __mmask16 lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// 32 floats (lo: k = 0..15, hi: k = 16..31) as 16 bf16 pairs (k = 2q, 2q + 1) in 32-bit lanes.
inline __m512i pairs_of(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }

// One row of k floats as ceil(k / 2) pairs, the last one padded with zero.
void pack_row(const float *src, int64_t k, uint32_t *dst) {
  const int64_t kp = (k + 1) / 2;
  for (int64_t q = 0; q < kp; q += 16) {
    const int64_t e = 2 * q;
    const __m512 lo = _mm512_maskz_loadu_ps(lanes(k - e), src + e);
    const __m512 hi = _mm512_maskz_loadu_ps(lanes(k - e - 16), src + e + 16);
    _mm512_mask_storeu_epi32(dst + q, lanes(kp - q), pairs_of(lo, hi));
  }
}

// B[k][j] = src[k * ld + j0 + j] (k < K, j < width) as a panel: panel[q * kNB + j] holds the pair
// (B[2q][j], B[2q + 1][j]); columns past `width` and the odd K's last row are zero.
void pack_panel_rows(const float *src, int64_t K, int64_t ld, int64_t j0, int64_t width, uint32_t *panel) {
  const int64_t kp = (K + 1) / 2;
  const int nv = static_cast<int>((width + 15) / 16);
  // interleave [a0..a15 | b0..b15] (bf16) into (a0, b0), (a1, b1), ...
  alignas(64) static const uint16_t order[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idx = _mm512_load_si512(order);
  for (int64_t q = 0; q < kp; ++q) {
    const float *r0 = src + 2 * q * ld + j0;
    const bool odd_tail = 2 * q + 1 >= K;
    for (int v = 0; v < nv; ++v) {
      const __mmask16 m = lanes(width - 16 * v);
      const __m512 a = _mm512_maskz_loadu_ps(m, r0 + 16 * v);
      const __m512 b = odd_tail ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, r0 + ld + 16 * v);
      const __m512i ab = pairs_of(a, b);
      _mm512_storeu_si512(panel + q * kNB + 16 * v, _mm512_permutexvar_epi16(idx, ab));
    }
  }
}

// In-register transpose of a 16 x 16 matrix of 32-bit lanes.
void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 16; i += 8) {
    for (int j = 0; j < 4; ++j) {
      t[i + j] = _mm512_shuffle_i32x4(r[i + j], r[i + j + 4], 0x88);
      t[i + j + 4] = _mm512_shuffle_i32x4(r[i + j], r[i + j + 4], 0xdd);
    }
  }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0xdd);
  }
}

// B[k][j] = src[(j0 + j) * ld + k] (the transpose of rows of length K) as a panel, as above.
void pack_panel_cols(const float *src, int64_t K, int64_t ld, int64_t j0, int64_t width, uint32_t *panel) {
  const int64_t kp = (K + 1) / 2;
  __m512i r[16];
  for (int64_t j = 0; j < width; j += 16) {
    const int64_t rows = std::min<int64_t>(16, width - j);
    for (int64_t q = 0; q < kp; q += 16) {
      const int64_t e = 2 * q;
      for (int t = 0; t < 16; ++t) {
        if (t < rows) {
          const float *p = src + (j0 + j + t) * ld + e;
          r[t] = pairs_of(_mm512_maskz_loadu_ps(lanes(K - e), p),
                          _mm512_maskz_loadu_ps(lanes(K - e - 16), p + 16));
        } else {
          r[t] = _mm512_setzero_si512();
        }
      }
      transpose16(r);
      const int64_t n = std::min<int64_t>(16, kp - q);
      for (int64_t t = 0; t < n; ++t) _mm512_storeu_si512(panel + (q + t) * kNB + j, r[t]);
    }
  }
}

// C[i][j] (+)= sum_q A[i][q] . panel[q][j] for i < MR, j < width (NV vectors); A in pairs.
template <int MR, int NV>
void micro(int64_t kp, const uint32_t *a, int64_t lda, const uint32_t *panel, float *c, int64_t ldc,
           int64_t width, bool add) {
  __m512 acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t q = 0; q < kp; ++q) {
    __m512bh b[NV];
    for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_loadu_si512(panel + q * kNB + 16 * v);
    for (int i = 0; i < MR; ++i) {
      const __m512bh s = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[i * lda + q]));
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], s, b[v]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = lanes(width - 16 * v);
      float *p = c + i * ldc + 16 * v;
      __m512 out = acc[i][v];
      if (add) out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(m, p));
      _mm512_mask_storeu_ps(p, m, out);
    }
  }
}

using Micro = void (*)(int64_t, const uint32_t *, int64_t, const uint32_t *, float *, int64_t, int64_t, bool);

template <int MR>
constexpr Micro by_width(int nv) {
  return nv == 1 ? micro<MR, 1> : nv == 2 ? micro<MR, 2> : nv == 3 ? micro<MR, 3> : micro<MR, 4>;
}

Micro micro_for(int mr, int nv) {
  switch (mr) {
    case 1: return by_width<1>(nv);
    case 2: return by_width<2>(nv);
    case 3: return by_width<3>(nv);
    case 4: return by_width<4>(nv);
    case 5: return by_width<5>(nv);
    default: return by_width<6>(nv);
  }
}

// C[M][width] (+)= A[M][K] . B[K][width], A packed in pairs (row stride lda), B as one panel.
void gemm_panel(int64_t M, int64_t kp, const uint32_t *a, int64_t lda, const uint32_t *panel, float *c,
                int64_t ldc, int64_t width, bool add) {
  const int nv = static_cast<int>((width + 15) / 16);
  for (int64_t k0 = 0; k0 < kp; k0 += kKC) {
    const int64_t kc = std::min(kKC, kp - k0);
    for (int64_t m0 = 0; m0 < M; m0 += kMR) {
      const int mr = static_cast<int>(std::min<int64_t>(kMR, M - m0));
      micro_for(mr, nv)(kc, a + m0 * lda + k0, lda, panel + k0 * kNB, c + m0 * ldc, ldc, width, add || k0 > 0);
    }
  }
}

// out_n[M][HW] = A[M][K] . in_n[K][HW] for every sample n: A packed in pairs, in/out NCHW.
void per_sample(const uint32_t *a, int64_t M, int64_t K, const float *in, float *out, int64_t N, int64_t hw) {
  const int64_t kp = (K + 1) / 2, blocks = (hw + kNB - 1) / kNB;
  mnv2::parallel_for_each(N * blocks, N * M * K * hw > (1 << 18), [&](int64_t t) {
    const int64_t n = t / blocks, j0 = (t % blocks) * kNB, width = std::min<int64_t>(kNB, hw - j0);
    uint32_t *panel = mnv2::thread_buffer<uint32_t, 0>(kp * kNB);
    pack_panel_rows(in + n * K * hw, K, hw, j0, width, panel);
    gemm_panel(M, kp, a, kp, panel, out + n * M * hw + j0, hw, width, false);
  });
}

// Rows of a row-major [rows][k] float matrix as rows of pairs.
std::vector<uint32_t> pack_matrix(const float *src, int64_t rows, int64_t k) {
  const int64_t kp = (k + 1) / 2;
  std::vector<uint32_t> packed(rows * kp);
  for (int64_t i = 0; i < rows; ++i) pack_row(src + i * k, k, packed.data() + i * kp);
  return packed;
}

void forward(const float *x, const float *w, float *y, int64_t N, int64_t cin, int64_t cout, int64_t hw) {
  const std::vector<uint32_t> a = pack_matrix(w, cout, cin);
  per_sample(a.data(), cout, cin, x, y, N, hw);
}

// Sample groups of the weight gradient: a fixed number, so sums do not depend on the thread count.
constexpr int64_t kGroups = 4;

void backward(const float *dy, const float *x, const float *w, float *dx, float *dw, int64_t N, int64_t cin,
              int64_t cout, int64_t hw) {
  // dx_n = W^T . dy_n
  std::vector<float> wt(cin * cout);
  for (int64_t o = 0; o < cout; ++o)
    for (int64_t i = 0; i < cin; ++i) wt[i * cout + o] = w[o * cin + i];
  const std::vector<uint32_t> a = pack_matrix(wt.data(), cin, cout);
  per_sample(a.data(), cin, cout, dy, dx, N, hw);

  // dw = sum_n dy_n . x_n^T: K = H * W, the panel is x_n transposed, one column block per task
  const int64_t groups = std::min(kGroups, N), kp = (hw + 1) / 2, blocks = (cin + kNB - 1) / kNB;
  float *partial = mnv2::thread_buffer<float, 2>(groups * cout * cin);
  mnv2::parallel_for_each(groups * blocks, N * cout * cin * hw > (1 << 18), [&](int64_t t) {
    const int64_t g = t / blocks, j0 = (t % blocks) * kNB, width = std::min<int64_t>(kNB, cin - j0);
    uint32_t *panel = mnv2::thread_buffer<uint32_t, 0>(kp * kNB);
    uint32_t *rows = mnv2::thread_buffer<uint32_t, 1>(cout * kp);
    for (int64_t n = g; n < N; n += groups) {
      const float *dyn = dy + n * cout * hw;
      for (int64_t o = 0; o < cout; ++o) pack_row(dyn + o * hw, hw, rows + o * kp);
      pack_panel_cols(x + n * cin * hw, hw, hw, j0, width, panel);
      gemm_panel(cout, kp, rows, kp, panel, partial + g * cout * cin + j0, cin, width, n != g);
    }
  });
  const int64_t size = cout * cin;
  std::copy(partial, partial + size, dw);
  for (int64_t g = 1; g < groups; ++g) {
    const float *p = partial + g * size;
    for (int64_t i = 0; i < size; ++i) dw[i] += p[i];
  }
}

#pragma GCC pop_options

bool supported() { return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw"); }

#else

bool supported() { return false; }

#endif

// x: (N, Cin, H, W) and w: (Cout, Cin, 1, 1), both 4-D already; fills the sizes.
bool shapes_of(int64_t **shapes, int x, int w, int64_t &n, int64_t &cin, int64_t &cout, int64_t &hw) {
  n = shapes[x][0], cin = shapes[x][1], hw = shapes[x][2] * shapes[x][3], cout = shapes[w][0];
  return shapes[w][1] == cin && shapes[w][2] == 1 && shapes[w][3] == 1;
}

}  // namespace

extern "C" int mnv2_pw_supported() { return supported() ? 1 : 0; }

extern "C" int mnv2_pw_fwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                           void *) {
  int64_t n, cin, cout, hw;
  if (!mnv2::all_nchw_float32(nparam, 3, ndims, dtypes) || !shapes_of(shapes, 0, 1, n, cin, cout, hw)) return 1;
  if (!supported()) return 2;
#if defined(MNV2_PW_X86)
  forward(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
          static_cast<float *>(params[2]), n, cin, cout, hw);
#endif
  return 0;
}

extern "C" int mnv2_pw_bwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                           void *) {
  int64_t n, cin, cout, hw;
  if (!mnv2::all_nchw_float32(nparam, 5, ndims, dtypes) || !shapes_of(shapes, 1, 2, n, cin, cout, hw)) return 1;
  if (shapes[0][0] != n || shapes[0][1] != cout || shapes[0][2] * shapes[0][3] != hw) return 1;
  if (!supported()) return 2;
#if defined(MNV2_PW_X86)
  backward(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
           static_cast<const float *>(params[2]), static_cast<float *>(params[3]), static_cast<float *>(params[4]),
           n, cin, cout, hw);
#endif
  return 0;
}

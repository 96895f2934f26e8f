// Pointwise (1x1, stride 1, no bias) convolutions with bf16 products and fp32 sums, for MindSpore's
// CPU backend through ops.Custom(func_type="aot"). Tensors are NCHW float32 in and out; operands
// are rounded to bf16 (round to nearest even) as they are packed, and every sum is float32.
//
// Why: with the depthwise, stem and BatchNorm kernels in, MindSpore's float32 pointwise
// convolutions (forward and both gradients) are half of a MobileNetV2 training step (bench/RESULTS.md),
// already near what float32 arithmetic allows on two cores. MindSpore 2.10's CPU Conv2D takes
// float32 only, so bf16 there means a GEMM of our own: on CPUs with AVX512-BF16, VDPBF16PS does
// 32 multiply-adds per instruction against FMA's 16, and on CPUs with AMX one TDPBF16PS does a
// 16 x 16 x 32 block (16,384 multiply-adds). This is mixed precision as PyTorch's CPU
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
//   mnv2_pw_isa(limit) -> the instructions the GEMM uses from now on: 2 AMX, 1 AVX512-BF16, 0 none;
//     limit 1 or 2 caps it, anything else only asks (for tests and A/B benchmarks: AMX is used
//     whenever this CPU and Linux allow it)
// Return value 0 is success, 1 a shape or dtype mismatch.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "aot.h"
#include "parallel.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define MNV2_PW_X86 1
#endif

namespace {

#if defined(MNV2_PW_X86)

constexpr int kMR = 6;        // rows of C per micro-tile: 6 x 4 accumulators + 4 B vectors + 1 A broadcast
constexpr int kNB = 64;       // columns of C per packed panel (4 vectors of 16 lanes)
constexpr int64_t kKC = 256;  // bf16 pairs of K per sweep over a panel: a 64 KB slice stays in L2
constexpr int64_t kQ = 16;    // packed K is padded with zero pairs to a multiple of an AMX tile's 16
constexpr int64_t kAM = 32;   // packed A is padded with zero rows to a multiple of an AMX block's 32

inline int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }
inline int64_t padded_pairs(int64_t k) { return round_up((k + 1) / 2, kQ); }

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")

inline __mmask16 lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// 32 floats (lo: k = 0..15, hi: k = 16..31) as 16 bf16 pairs (k = 2q, 2q + 1) in 32-bit lanes.
inline __m512i pairs_of(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }

// One row of k floats as padded_pairs(k) pairs, zero past the k floats.
void pack_row(const float *src, int64_t k, uint32_t *dst) {
  const int64_t kp = padded_pairs(k);
  for (int64_t q = 0; q < kp; q += 16) {
    const int64_t e = 2 * q;
    const __m512 lo = _mm512_maskz_loadu_ps(lanes(k - e), src + e);
    const __m512 hi = _mm512_maskz_loadu_ps(lanes(k - e - 16), src + e + 16);
    _mm512_storeu_si512(dst + q, pairs_of(lo, hi));
  }
}

// Panel rows past K's pairs, up to padded_pairs(K), as zero pairs.
void zero_pad_rows(int64_t K, uint32_t *panel) {
  for (int64_t q = (K + 1) / 2; q < padded_pairs(K); ++q) std::fill_n(panel + q * kNB, kNB, 0u);
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
  zero_pad_rows(K, panel);
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
  zero_pad_rows(K, panel);
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

#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16")

// Tile registers 0-7, each 16 rows of 64 bytes: 16 x 16 floats of C, or 16 x 16 bf16 pairs of A or B.
struct TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// As gemm_panel with AMX, 32 x 32 blocks of C in tiles 0-3 from A tiles 4-5 and B tiles 6-7. A has
// rows to a multiple of kAM and both operands zero pairs to a multiple of kQ; panel columns past
// `width` may hold anything: their sums are computed and not stored.
void gemm_panel_amx(int64_t M, int64_t kp, const uint32_t *a, int64_t lda, const uint32_t *panel, float *c,
                    int64_t ldc, int64_t width, bool add) {
  static const TileConfig config;
  _tile_loadconfig(&config);
  alignas(64) float block[32 * 32];
  const int64_t kq = round_up(kp, kQ);
  for (int64_t k0 = 0; k0 < kq; k0 += kKC) {
    const int64_t kend = std::min(kq, k0 + kKC);
    const bool accumulate = add || k0 > 0;
    for (int64_t m0 = 0; m0 < M; m0 += kAM) {
      const uint32_t *a0 = a + m0 * lda, *a1 = a0 + 16 * lda;
      for (int64_t j0 = 0; j0 < width; j0 += 32) {
        // A whole 32 x 32 block goes to C straight from the tiles; an edge block through `block`.
        const bool whole = M - m0 >= 32 && width - j0 >= 32;
        float *c0 = whole ? c + m0 * ldc + j0 : block;
        const int64_t ld = (whole ? ldc : 32) * 4;
        if (whole && accumulate) {
          _tile_loadd(0, c0, ld);
          _tile_loadd(1, c0 + 16, ld);
          _tile_loadd(2, c0 + 16 * ld / 4, ld);
          _tile_loadd(3, c0 + 16 * ld / 4 + 16, ld);
        } else {
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
        }
        for (int64_t q = k0; q < kend; q += kQ) {
          _tile_loadd(4, a0 + q, lda * 4);
          _tile_loadd(5, a1 + q, lda * 4);
          _tile_loadd(6, panel + q * kNB + j0, kNB * 4);
          _tile_loadd(7, panel + q * kNB + j0 + 16, kNB * 4);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, c0, ld);
        _tile_stored(1, c0 + 16, ld);
        _tile_stored(2, c0 + 16 * ld / 4, ld);
        _tile_stored(3, c0 + 16 * ld / 4 + 16, ld);
        if (whole) continue;
        const int64_t rows = std::min<int64_t>(32, M - m0);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t v = 0; v < 2; ++v) {
            const __mmask16 m = lanes(width - j0 - 16 * v);
            float *out = c + (m0 + r) * ldc + j0 + 16 * v;
            __m512 sum = _mm512_load_ps(block + r * 32 + 16 * v);
            if (accumulate) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(m, out));
            _mm512_mask_storeu_ps(out, m, sum);
          }
        }
      }
    }
  }
  _tile_release();
}

#pragma GCC pop_options

// The GEMM's instructions: 2 AMX, 1 AVX512-BF16, 0 none; capped by mnv2_pw_isa.
std::atomic<int> isa_in_use{-1};

// C[M][width] (+)= A[M][K] . B[K][width], A packed in kp pairs (row stride lda), B as one panel.
void gemm_panel(int64_t M, int64_t kp, const uint32_t *a, int64_t lda, const uint32_t *panel, float *c,
                int64_t ldc, int64_t width, bool add) {
  if (isa_in_use.load(std::memory_order_relaxed) == 2) {
    gemm_panel_amx(M, kp, a, lda, panel, c, ldc, width, add);
    return;
  }
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
  const int64_t kp = (K + 1) / 2, lda = padded_pairs(K), blocks = (hw + kNB - 1) / kNB;
  mnv2::parallel_for_each(N * blocks, N * M * K * hw > (1 << 18), [&](int64_t t) {
    const int64_t n = t / blocks, j0 = (t % blocks) * kNB, width = std::min<int64_t>(kNB, hw - j0);
    uint32_t *panel = mnv2::thread_buffer<uint32_t, 0>(lda * kNB);
    pack_panel_rows(in + n * K * hw, K, hw, j0, width, panel);
    gemm_panel(M, kp, a, lda, panel, out + n * M * hw + j0, hw, width, false);
  });
}

// Rows of a row-major [rows][k] float matrix as rows of padded_pairs(k) pairs, zero rows appended to
// a multiple of kAM.
std::vector<uint32_t> pack_matrix(const float *src, int64_t rows, int64_t k) {
  const int64_t kp = padded_pairs(k);
  std::vector<uint32_t> packed(round_up(rows, kAM) * kp, 0u);
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
  const int64_t groups = std::min(kGroups, N), kp = (hw + 1) / 2, lda = padded_pairs(hw);
  const int64_t blocks = (cin + kNB - 1) / kNB;
  float *partial = mnv2::thread_buffer<float, 2>(groups * cout * cin);
  mnv2::parallel_for_each(groups * blocks, N * cout * cin * hw > (1 << 18), [&](int64_t t) {
    const int64_t g = t / blocks, j0 = (t % blocks) * kNB, width = std::min<int64_t>(kNB, cin - j0);
    uint32_t *panel = mnv2::thread_buffer<uint32_t, 0>(lda * kNB);
    uint32_t *rows = mnv2::thread_buffer<uint32_t, 1>(round_up(cout, kAM) * lda);
    std::fill(rows + cout * lda, rows + round_up(cout, kAM) * lda, 0u);
    for (int64_t n = g; n < N; n += groups) {
      const float *dyn = dy + n * cout * hw;
      for (int64_t o = 0; o < cout; ++o) pack_row(dyn + o * hw, hw, rows + o * lda);
      pack_panel_cols(x + n * cin * hw, hw, hw, j0, width, panel);
      gemm_panel(cout, kp, rows, lda, panel, partial + g * cout * cin + j0, cin, width, n != g);
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

// AMX-BF16 and AMX-TILE (CPUID.(7,0):EDX bits 22 and 24), and Linux's leave to use the tile data
// (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, once per process: Documentation/arch/x86/xstate.rst).
bool amx_usable() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(edx & (1u << 22)) || !(edx & (1u << 24))) return false;
  constexpr long kReqXcompPerm = 0x1023, kXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXtiledata) == 0;
}

int best_isa() { return !supported() ? 0 : amx_usable() ? 2 : 1; }

#else

bool supported() { return false; }
int best_isa() { return 0; }

#endif

// x: (N, Cin, H, W) and w: (Cout, Cin, 1, 1), both 4-D already; fills the sizes.
bool shapes_of(int64_t **shapes, int x, int w, int64_t &n, int64_t &cin, int64_t &cout, int64_t &hw) {
  n = shapes[x][0], cin = shapes[x][1], hw = shapes[x][2] * shapes[x][3], cout = shapes[w][0];
  return shapes[w][1] == cin && shapes[w][2] == 1 && shapes[w][3] == 1;
}

}  // namespace

extern "C" int mnv2_pw_supported() { return supported() ? 1 : 0; }

extern "C" int mnv2_pw_isa(int limit) {
  static const int best = best_isa();
#if defined(MNV2_PW_X86)
  if (limit >= 1 && best >= 1) isa_in_use.store(std::min(limit, best));
  int expected = -1;
  isa_in_use.compare_exchange_strong(expected, best);
  return isa_in_use.load();
#else
  return best;
#endif
}

extern "C" int mnv2_pw_fwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                           void *) {
  int64_t n, cin, cout, hw;
  if (!mnv2::all_nchw_float32(nparam, 3, ndims, dtypes) || !shapes_of(shapes, 0, 1, n, cin, cout, hw)) return 1;
  if (mnv2_pw_isa(-1) == 0) return 2;
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
  if (mnv2_pw_isa(-1) == 0) return 2;
#if defined(MNV2_PW_X86)
  backward(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
           static_cast<const float *>(params[2]), static_cast<float *>(params[3]), static_cast<float *>(params[4]),
           n, cin, cout, hw);
#endif
  return 0;
}

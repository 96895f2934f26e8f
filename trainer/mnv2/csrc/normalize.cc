// uint8 image batches (N, C, H, W) to float32 network inputs: (x - mean[c]) / std[c], the float32
// operations of MindSpore's vision.Normalize, so the values are the same bit for bit
// (tests/trainer/test_input_normalization.py).
//
// Why: the input pipeline's Normalize and float HWC2CHW took 0.4 ms of its 2.2 ms per image, on the
// cores the training step computes on, and each decoded batch it holds ahead (about eleven,
// whatever set_prefetch_size says) took 4 bytes per value instead of 1. The trainer's CPU loop
// takes uint8 batches and normalizes each here, 0.3 ms at batch 8.
//
// mnv2_normalize_u8(x uint8[N,C,H,W], mean float32[C], std float32[C]) -> y float32[N,C,H,W]
#include <cstdint>
#include <cstring>

#include "aot.h"
#include "parallel.h"

extern "C" int mnv2_normalize_u8(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                 void *, void *) {
  if (nparam != 4 || ndims[0] != 4 || ndims[3] != 4 || std::strcmp(dtypes[0], "uint8") != 0) return 1;
  if (!mnv2::all_float32(3, dtypes + 1)) return 1;  // mean, std, y
  const int64_t n = shapes[0][0], c = shapes[0][1], plane = shapes[0][2] * shapes[0][3];
  if (ndims[1] != 1 || ndims[2] != 1 || shapes[1][0] != c || shapes[2][0] != c) return 1;
  const uint8_t *x = static_cast<const uint8_t *>(params[0]);
  const float *mean = static_cast<const float *>(params[1]);
  const float *std_dev = static_cast<const float *>(params[2]);
  float *y = static_cast<float *>(params[3]);
  mnv2::parallel_for_each(n * c, true, [&](int64_t nc) {
    const float m = mean[nc % c], s = std_dev[nc % c];
    const uint8_t *in = x + nc * plane;
    float *out = y + nc * plane;
    for (int64_t i = 0; i < plane; ++i) out[i] = (static_cast<float>(in[i]) - m) / s;
  });
  return 0;
}

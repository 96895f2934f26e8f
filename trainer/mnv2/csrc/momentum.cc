// Momentum SGD with weight decay over every parameter of a network in one kernel call (CPU).
//
// What nn.Momentum computes per parameter with up to three MindSpore kernels (Mul and AddN for the
// decay, then ApplyMomentum), in the same float32 operations in the same order, so the result is the
// same bit for bit (tests/perf/test_momentum.py):
//   g = decayed ? p * weight_decay + g : g
//   m = m * momentum + g
//   p = p - m * lr
// No multiply and add is contracted into an FMA (GCC contracts by default in C++, even with -std=c++17),
// or the decayed parameters drift from nn.Momentum's in the last bit.
//
// Inputs: lr[1], momentum[1], weight_decay[1], decayed[n] (1 or 0 per parameter), then the n gradients,
// the n parameters and the n momenta; output: one float (0). Parameters and momenta are updated in
// place: mnv2.ops.momentum declares them written (as ApplyMomentum does), so MindSpore hands over
// their own memory.
#pragma GCC optimize("fp-contract=off")

#include <algorithm>
#include <cstdint>

#include "aot.h"
#include "parallel.h"

namespace {

// Items of about this many values, so both threads get work however the parameters are sized.
constexpr int64_t kSegment = 16384;

struct Segment {
  int index;
  int64_t begin, end;
};

int64_t element_count(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  return n;
}

}  // namespace

extern "C" int mnv2_momentum(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *, void *) {
  constexpr int kHead = 4;  // lr, momentum, weight_decay, decayed
  if (nparam < kHead + 1 || (nparam - kHead - 1) % 3 != 0 || !mnv2::all_float32(nparam, dtypes)) return 1;
  const int n = (nparam - kHead - 1) / 3;
  if (element_count(ndims[3], shapes[3]) != n) return 1;
  const float lr = *static_cast<const float *>(params[0]);
  const float momentum = *static_cast<const float *>(params[1]);
  const float weight_decay = *static_cast<const float *>(params[2]);
  const float *decayed = static_cast<const float *>(params[3]);

  int64_t count = 0;
  for (int k = 0; k < n; ++k) {
    const int g = kHead + k, p = kHead + n + k, m = kHead + 2 * n + k;
    const int64_t size = element_count(ndims[g], shapes[g]);
    if (element_count(ndims[p], shapes[p]) != size || element_count(ndims[m], shapes[m]) != size) return 1;
    count += (size + kSegment - 1) / kSegment;
  }
  Segment *segments = mnv2::thread_buffer<Segment, 0>(static_cast<size_t>(count));
  int64_t s = 0;
  for (int k = 0; k < n; ++k) {
    const int64_t size = element_count(ndims[kHead + k], shapes[kHead + k]);
    for (int64_t begin = 0; begin < size; begin += kSegment) {
      segments[s++] = {k, begin, std::min(size, begin + kSegment)};
    }
  }
  mnv2::parallel_for_each(count, true, [&](int64_t item) {
    const Segment seg = segments[item];
    const float *grad = static_cast<const float *>(params[kHead + seg.index]);
    float *param = static_cast<float *>(params[kHead + n + seg.index]);
    float *moment = static_cast<float *>(params[kHead + 2 * n + seg.index]);
    if (decayed[seg.index] != 0.0f) {
      for (int64_t i = seg.begin; i < seg.end; ++i) {
        const float g = param[i] * weight_decay + grad[i];
        moment[i] = moment[i] * momentum + g;
        param[i] = param[i] - moment[i] * lr;
      }
    } else {
      for (int64_t i = seg.begin; i < seg.end; ++i) {
        moment[i] = moment[i] * momentum + grad[i];
        param[i] = param[i] - moment[i] * lr;
      }
    }
  });
  *static_cast<float *>(params[nparam - 1]) = 0.0f;
  return 0;
}

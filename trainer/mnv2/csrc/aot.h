// Argument checks shared by the kernels' ops.Custom(func_type="aot") entry points, which MindSpore
// calls with (nparam, params, ndims, shapes, dtypes, stream, extra): inputs first, outputs last.
#pragma once

#include <cstdint>
#include <cstring>

namespace mnv2 {

// Every one of the `nparam` tensors is float32.
inline bool all_float32(int nparam, const char **dtypes) {
  for (int i = 0; i < nparam; ++i) {
    if (std::strcmp(dtypes[i], "float32") != 0) return false;
  }
  return true;
}

// Exactly `expected` tensors, each 4-D (NCHW) float32.
inline bool all_nchw_float32(int nparam, int expected, const int *ndims, const char **dtypes) {
  if (nparam != expected) return false;
  for (int i = 0; i < nparam; ++i) {
    if (ndims[i] != 4) return false;
  }
  return all_float32(nparam, dtypes);
}

}  // namespace mnv2

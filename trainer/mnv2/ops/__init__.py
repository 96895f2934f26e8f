"""Custom MindSpore operators built from C++ at first use (see ``_build``).

Importing this package does not import MindSpore; import ``mnv2.ops.depthwise`` (3x3 convolutions
and the one swap point, ``replace_slow_convolutions``), ``mnv2.ops.batchnorm`` (BatchNorm + ReLU6)
or ``mnv2.ops.act_depthwise`` (the BatchNorm + ReLU6 before a depthwise convolution, applied by its
kernel) for the cells, and ``mnv2.ops.momentum`` for the optimizer that updates every parameter in one
kernel. The C++ sources are in ``mnv2/csrc``; ``parallel.h`` is their shared thread pool.
"""

from mnv2.ops._build import BuildError, build, build_library, cache_dir

__all__ = ["BuildError", "build", "build_library", "cache_dir"]

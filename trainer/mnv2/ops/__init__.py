"""Custom MindSpore operators built from C++ at first use (see ``_build``).

Importing this package does not import MindSpore; import ``mnv2.ops.depthwise`` for the cells.
"""

from mnv2.ops._build import BuildError, build, build_library, cache_dir

__all__ = ["BuildError", "build", "build_library", "cache_dir"]

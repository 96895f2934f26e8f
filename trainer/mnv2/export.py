"""Export a trained network for inference: MINDIR (MindSpore Lite, serving) and ONNX.

The exported graph takes NCHW float32 images already normalised like the eval transforms and
returns the logits. MindSpore 2.10 on CPU exports ONNX through `mindspore.onnx.export`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnv2.exitcodes import ExitCode, TrainerError

FORMATS = ("MINDIR", "ONNX")
SUFFIX = {"MINDIR": ".mindir", "ONNX": ".onnx"}


def export_network(
    network, *, image_size: int, batch: int, file_stem: str | Path, formats: list[str]
) -> list[Path]:
    """Write each format next to `file_stem`; returns the files written."""
    import mindspore as ms

    network.set_train(False)
    sample = ms.Tensor(np.zeros((batch, 3, image_size, image_size), dtype=np.float32))
    stem = Path(file_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        try:
            if fmt == "ONNX":
                import mindspore.onnx

                mindspore.onnx.export(network, sample, file_name=str(stem) + SUFFIX[fmt])
            else:
                ms.export(network, sample, file_name=str(stem), file_format=fmt)
        except OSError as error:
            target = f"{stem}{SUFFIX[fmt]}"
            raise TrainerError(f"export: cannot write {target}: {error}", ExitCode.IO_ERROR) from None
        except (RuntimeError, ValueError, TypeError) as error:
            raise TrainerError(f"export: {fmt} export failed on this MindSpore build: {error}") from None
        written.append(Path(str(stem) + SUFFIX[fmt]))
    return written


def load_mindir(path: str | Path):
    """The exported graph as a callable cell (for checks and simple inference)."""
    import mindspore as ms

    return ms.nn.GraphCell(ms.load(str(path)))

"""Export a trained network for inference: MINDIR, ONNX and (on Ascend) AIR; logits or the zoo's softmax.

Every exported graph takes NCHW float32 images already normalised like the eval transforms (decode,
resize, centre crop, mean/std below). Two outputs are offered:

- `logits`: the network as it trains (what `mnv2 eval` scores);
- `softmax`: class probabilities, the graph the model zoo's export.py writes (its head is built with
  `activation="Softmax"` for export, default_config.yaml `activation: "Softmax"`).

File names say what a file holds, `<stem>_<output>.<suffix>`, and a manifest `<stem>.json` lists each
file with its format, output, input shape and normalisation, so nobody has to guess. AIR is the
Ascend graph engine's format: MindSpore writes it only on Ascend, so elsewhere it is refused up front.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mnv2.exitcodes import ConfigError, ExitCode, TrainerError
from mnv2.features import file_digest

FORMATS = ("MINDIR", "ONNX", "AIR")
SUFFIX = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
OUTPUTS = {
    "logits": "unnormalised class scores (N x num_classes), as trained",
    "softmax": "class probabilities (N x num_classes, softmax over classes), the model zoo's export graph",
}


@dataclass(frozen=True)
class ExportedFile:
    file: str
    format: str
    output: str
    contains: str
    input: str
    bytes: int
    sha256: str


def formats_for(requested: str, platform: str) -> list[str]:
    """The formats to write: one, or `all` (AIR only where the platform writes it)."""
    if requested == "all":
        return ["MINDIR", "ONNX", *(["AIR"] if platform == "Ascend" else [])]
    if requested not in FORMATS:
        raise ConfigError(f"file_format: {requested!r} is not one of {', '.join(FORMATS)} or all")
    if requested == "AIR" and platform != "Ascend":
        raise ConfigError(
            "file_format: AIR is written only on Ascend (MindSpore exports AIR through CANN's graph "
            f"engine); this platform is {platform}: use MINDIR or ONNX"
        )
    return [requested]


def outputs_for(requested: str) -> list[str]:
    if requested == "both":
        return list(OUTPUTS)
    if requested not in OUTPUTS:
        raise ConfigError(f"output: {requested!r} is not one of {', '.join(OUTPUTS)} or both")
    return [requested]


def with_softmax(network):
    """The network followed by a softmax over classes; parameter names unchanged (no prefix)."""
    from mindspore import nn, ops

    class WithSoftmax(nn.Cell):
        def __init__(self, inner):
            super().__init__(auto_prefix=False)
            self.inner = inner
            self.softmax = ops.Softmax(axis=-1)

        def construct(self, x):
            return self.softmax(self.inner(x))

    return WithSoftmax(network)


def _write(graph, sample, fmt: str, base: str) -> None:
    """MindSpore appends the suffix itself for MINDIR and AIR."""
    import mindspore as ms

    if fmt == "ONNX":
        import mindspore.onnx

        mindspore.onnx.export(graph, sample, file_name=base + SUFFIX[fmt])
    else:
        ms.export(graph, sample, file_name=base, file_format=fmt)


def export_network(
    network, *, image_size: int, batch: int, file_stem: str | Path, formats: list[str],
    outputs: list[str] | None = None,
) -> list[ExportedFile]:
    """Write each (format, output) pair as `<stem>_<output>.<suffix>`; returns what was written."""
    import mindspore as ms

    network.set_train(False)
    sample = ms.Tensor(np.zeros((batch, 3, image_size, image_size), dtype=np.float32))
    stem = Path(file_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    graphs = {"logits": network, "softmax": with_softmax(network)}
    written = []
    for output in outputs or ["logits"]:
        graph = graphs[output]
        graph.set_train(False)
        for fmt in formats:
            base = f"{stem}_{output}"
            target = Path(base + SUFFIX[fmt])
            try:
                _write(graph, sample, fmt, base)
            except OSError as error:
                raise TrainerError(f"export: cannot write {target}: {error}", ExitCode.IO_ERROR) from None
            except (RuntimeError, ValueError, TypeError) as error:
                raise TrainerError(f"export: {fmt} export failed on this MindSpore build: {error}") from None
            written.append(ExportedFile(
                file=target.name, format=fmt, output=output, contains=OUTPUTS[output],
                input=f"{batch} x 3 x {image_size} x {image_size} float32, NCHW, normalised",
                bytes=target.stat().st_size, sha256=file_digest(target),
            ))
    return written


def write_manifest(
    path: str | Path, files: list[ExportedFile], *, checkpoint: str, num_classes: int, width_mult: float,
    image_size: int,
) -> Path:
    """`<stem>.json`: what each exported file holds and how to feed it."""
    from mnv2.data import MEAN, STD, eval_resize

    path = Path(path)
    resize = eval_resize(image_size)
    manifest = {
        "checkpoint": checkpoint,
        "network": {"name": "mobilenetv2", "num_classes": num_classes, "width_mult": width_mult},
        "input": {
            "layout": "NCHW", "dtype": "float32", "channels": "RGB",
            "height": image_size, "width": image_size,
            "preprocess": f"decode, resize to {resize}x{resize}, centre crop {image_size}, "
                          "(pixel - mean) / std",
            "mean": list(MEAN), "std": list(STD),
        },
        "files": [asdict(f) for f in files],
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)
    return path


def load_mindir(path: str | Path):
    """The exported graph as a callable cell (for checks and simple inference)."""
    import mindspore as ms

    return ms.nn.GraphCell(ms.load(str(path)))

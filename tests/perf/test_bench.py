"""The benchmark code itself: peers share one architecture, runners parse results, helpers work."""

from __future__ import annotations

import numpy as np
import pytest


def test_torch_peer_has_the_trainers_architecture():
    """Same parameter count and layer shapes as mnv2.model.MobileNetV2, so the comparison is like for like."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("mindspore")
    from mnv2.model import MobileNetV2 as MsNet

    from bench.torch_mobilenetv2 import MobileNetV2 as TorchNet

    ms_net = MsNet(num_classes=1000, width_mult=1.0, seed=0)
    torch_net = TorchNet(1000)
    ms_shapes = sorted(tuple(p.shape) for p in ms_net.trainable_params())
    torch_shapes = sorted(tuple(p.shape) for p in torch_net.parameters())
    assert ms_shapes == torch_shapes
    assert 3_300_000 < sum(int(np.prod(s)) for s in torch_shapes) < 3_600_000
    with torch.inference_mode():
        assert tuple(torch_net.eval()(torch.zeros(1, 3, 64, 64)).shape) == (1, 1000)


def test_run_child_reads_result_and_memory():
    pytest.importorskip("torch")
    from bench.run_all import run_child

    run = run_child(["bench.peer", "torch", "forward", "--batch", "1", "--image", "32", "--steps", "2",
                     "--warmup", "0"], timeout=300)
    assert run.result["peer"] == "torch" and len(run.result["times"]) == 2
    assert run.result["images_per_s"] > 0
    assert run.peak_rss_mb > 50 and run.child_cpu_s > 0


def test_mindspore_peer_trains_on_the_trainers_kernels():
    """The peer checks that every layer the trainer swaps was swapped (it refuses otherwise), and
    trains with the trainer's one-kernel optimizer."""
    pytest.importorskip("mindspore")
    from bench.run_all import run_child

    run = run_child(["bench.peer", "ms-fast", "train", "--batch", "2", "--image", "32", "--steps", "2",
                     "--warmup", "1"], timeout=300)
    assert run.result["peer"] == "ms-fast" and len(run.result["times"]) == 2


def test_run_child_reports_a_failing_peer():
    from bench.run_all import run_child

    with pytest.raises(RuntimeError, match="exit 2"):
        run_child(["bench.peer", "no-such-peer", "train"], timeout=120)


def test_pillow_transform_matches_the_train_transform_shape(tmp_path):
    import random

    from bench.data_pipeline import pillow_transform
    from bench.images import generate_image_folder

    root = generate_image_folder(tmp_path, classes=1, per_class=1, size=(80, 60))
    out = pillow_transform(next(root.glob("*/*.jpg")), random.Random(0))
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    assert -3.0 < float(out.mean()) < 3.0  # normalised, not raw 0..255


def test_rank_table_bench_checks_the_table():
    pytest.importorskip("mnv2.ranktable")
    from bench.ranktable import bench_rank_table

    r = bench_rank_table(servers=4, devices=8, repeats=1)
    assert r["servers"] == 4 and r["json_bytes"] > 0 and r["render_median_s"] > 0


def test_forward_macs_is_mobilenetv2s_published_cost():
    """The paper's Table 4: MobileNetV2 1.0 at 224 px costs 300 M multiply-adds (1.4: 585 M)."""
    pytest.importorskip("mindspore")
    from bench.trainer_bench import forward_macs

    assert 295e6 < forward_macs(1.0, 224) < 310e6
    assert 570e6 < forward_macs(1.4, 224) < 600e6


def test_trainer_bench_folder_and_table(tmp_path):
    """Exactly batch x steps images in every class folder, and a table that leads with the best PyTorch."""
    pytest.importorskip("mindspore")
    from bench.trainer_bench import CLASSES, image_folder, summarise, table

    root = image_folder(tmp_path, 23)
    counts = sorted(len(list(d.glob("*.jpg"))) for d in root.iterdir() if d.is_dir())
    assert len(counts) == CLASSES and sum(counts) == 23 and counts[-1] - counts[0] <= 1
    raw = {"8-trainer": [{"per_step_s": 1.0, "step_alone_s": 0.8, "background_cores": 0.1,
                          "peak_rss_mb": 900.0}],
           "8-torch": [{"per_step_s": 4.0, "background_cores": 0.0, "peak_rss_mb": 800.0}],
           "8-torch-cl": [{"per_step_s": 2.0, "background_cores": 0.0, "peak_rss_mb": 800.0},
                          {"per_step_s": 3.0, "background_cores": 0.2, "peak_rss_mb": 850.0}],
           "8-torch-compile": [{"error": "inductor failed"}],
           "8-trainer-bf16": [{"per_step_s": 0.5, "background_cores": 0.0, "peak_rss_mb": 900.0}],
           "8-torch-cl-bf16": [{"per_step_s": 1.25, "background_cores": 0.0, "peak_rss_mb": 700.0}]}
    peers = ("trainer", "trainer-bf16", "torch", "torch-cl", "torch-compile", "torch-cl-bf16")
    summary = summarise(raw, [8], peers)
    assert summary["8-torch-cl"]["per_step_s"] == 2.5
    assert summary["8-torch-compile"] == {"error": "inductor failed"}
    text = table(summary, [8], peers)
    # each trainer against PyTorch of its own precision, and against the fastest PyTorch of any
    cl = "(PyTorch 2.13 eager, channels_last"
    assert f"batch 8, trainer: **2.50x** the best PyTorch of same precision {cl})" in text
    assert f"batch 8, trainer: **1.25x** the best PyTorch of any precision {cl}, bf16 autocast)" in text
    assert f"batch 8, trainer-bf16: **2.50x** the best PyTorch of same precision {cl}, bf16 autocast)" in text
    assert "trainer-bf16: **2.50x** the best PyTorch of any precision" not in text  # the same line twice
    assert "| 4.00x | 8.00x |" in text and "failed: inductor failed" in text
    assert "steps alone (median of its last epoch's step lines" in text
    assert "batch 8, trainer: 800 ms (10.0 images/s)" in text


def test_trainer_bench_reads_the_trainers_own_step_lines():
    """The step-alone figure comes from the lines `mnv2 train` prints (mnv2.logs), last epoch only."""
    from mnv2.logs import epoch_line, step_line

    from bench.trainer_bench import _STEP

    lines = [step_line(epoch=e, epochs=2, step=s, steps=3, loss=2.5, avg_loss=2.4,
                       step_ms=100.0 * (e + 1) + s, lr=0.03) for e in range(2) for s in range(3)]
    text = "\n".join([*lines[:3], epoch_line(epoch_ms=900.0, per_step_ms=300.0, avg_loss=2.4), *lines[3:]])
    assert [(e, float(ms)) for e, ms in _STEP.findall(text)][3:] == [("1", 200.0), ("1", 201.0), ("1", 202.0)]


def test_our_peers_are_compared_with_the_best_pytorch_of_their_precision_and_of_any():
    from bench.run_all import Run, versus_best_torch

    def run(images_per_s: float) -> Run:
        return Run(result={"images_per_s": images_per_s}, peak_rss_mb=0.0, wall_s=0.0, child_cpu_s=0.0,
                   background_cores=0.0)

    runs = {"torch": run(10.0), "torch-compile": run(20.0), "torch-compile-bf16": run(40.0),
            "ms-fast": run(30.0), "ms-bf16": run(60.0), "ms-ref": "failed: out of memory"}
    lines = versus_best_torch(runs, 32)
    compiled = "(PyTorch 2.13 torch.compile, channels_last"
    assert lines == [
        f"batch 32, ms-fast: **1.50x** the best PyTorch of same precision {compiled})",
        f"batch 32, ms-fast: **0.75x** the best PyTorch of any precision {compiled}, bf16 autocast)",
        f"batch 32, ms-bf16: **1.50x** the best PyTorch of same precision {compiled}, bf16 autocast)",
    ]

"""Periodic evaluation while training (eval_interval), the best checkpoint (keep_best), and what a
user finds afterwards: metrics during the run, the training report and artifacts.json."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import small_config
from mnv2 import checkpoint as ckpt
from mnv2.distributed import DistContext
from mnv2.exitcodes import ConfigError, ExitCode
from mnv2.train import train

pytestmark = pytest.mark.slow


def test_top1_is_measured_during_training_and_the_best_checkpoint_kept(trees, device, tmp_path, capsys,
                                                                       monkeypatch):
    from mnv2.trainer_metrics import TrainerMetrics

    events: list[tuple[str, float]] = []
    on_step, on_eval = TrainerMetrics.on_step, TrainerMetrics.on_eval
    monkeypatch.setattr(TrainerMetrics, "on_step",
                        lambda self, **kw: (events.append(("step", kw["global_step"])), on_step(self, **kw)))
    monkeypatch.setattr(TrainerMetrics, "on_eval",
                        lambda self, **kw: (events.append(("eval", kw["top1"])), on_eval(self, **kw)))
    config = small_config(trees, tmp_path, epochs=4, eval_interval=2, keep_best=True, lr_max=0.05,
                          export_formats=["MINDIR"])
    result = train(config, DistContext())
    assert result.exit_code == ExitCode.SUCCESS
    captured = capsys.readouterr()

    # Evaluated after epochs 2 and 4, the second serving as the final result (no third evaluation).
    evals = [(i, value) for i, (kind, value) in enumerate(events) if kind == "eval"]
    assert len(evals) == 2
    assert events[evals[0][0] - 1] == ("step", 16) and events[evals[0][0] + 1] == ("step", 17)
    assert "evaluation after epoch 2: top-1" in captured.err
    assert "evaluation after epoch 4: top-1" in captured.err
    assert captured.out.count("result: {'acc': ") == 1
    assert result.top1 == evals[1][1]

    best = tmp_path / "checkpoint" / "mobilenetv2-best.ckpt"
    assert result.best_checkpoint == best and result.best_top1 == max(v for _, v in evals)
    assert ckpt.best_top1(best) == pytest.approx(result.best_top1)
    assert best not in ckpt.list_checkpoints(tmp_path / "checkpoint")  # never rotated, never resumed

    with (tmp_path / "training_report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert [bool(r["top1"]) for r in rows] == [False, True, False, True]
    assert float(rows[3]["top1"]) == pytest.approx(result.top1)

    found = json.loads((tmp_path / "artifacts.json").read_text())
    assert found["checkpoint"] == "checkpoint/mobilenetv2-4_8.ckpt"
    assert found["bestCheckpoint"] == "checkpoint/mobilenetv2-best.ckpt"
    assert found["top1"] == pytest.approx(result.top1)
    assert found["bestTop1"] == pytest.approx(result.best_top1)
    # export_formats (a job's spec.output.export): the trained network as `mnv2 export` writes it
    assert found["exports"] == ["mobilenetv2_logits.mindir", "mobilenetv2_softmax.mindir", "mobilenetv2.json"]
    manifest = json.loads((tmp_path / "mobilenetv2.json").read_text())
    written = [(f["format"], f["output"]) for f in manifest["files"]]
    assert written == [("MINDIR", "logits"), ("MINDIR", "softmax")]
    import mindspore as ms
    import numpy as np
    from mnv2.export import load_mindir

    graph = load_mindir(tmp_path / "mobilenetv2_softmax.mindir")
    image = ms.Tensor(np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32))
    probabilities = graph(image).asnumpy()
    assert probabilities.shape == (1, 4) and probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_the_final_evaluation_completes_the_reports_last_row(trained):
    with (trained.output / "training_report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 11 and [r["epoch"] for r in rows[-2:]] == ["9", "9"]  # the last row of an epoch wins
    assert not rows[-2]["top1"] and float(rows[-1]["top1"]) == pytest.approx(trained.result.top1)


def test_periodic_evaluation_needs_an_evaluation_set(trees, tmp_path):
    """Refused with the configuration, before MindSpore starts."""
    with pytest.raises(ConfigError, match="eval_interval: periodic evaluation needs eval_dataset_path"):
        small_config(trees, tmp_path, eval_interval=1, eval_dataset_path="")


def test_air_export_is_refused_off_ascend_before_training(trees, tmp_path):
    with pytest.raises(ConfigError, match="export_formats: AIR is written only on Ascend"):
        small_config(trees, tmp_path, export_formats=["AIR"])

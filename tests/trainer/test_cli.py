"""`mnv2 train/eval/export` and the seed's shell wrappers, run as the user runs them (subprocesses)."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mnv2.checkpoint import list_checkpoints
from mnv2.exitcodes import ExitCode

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "trainer" / "scripts"
MNV2 = str(Path(sys.executable).with_name("mnv2"))
SMALL_FLAGS = ["--num_classes", "4", "--image_size", "32", "--width_mult", "0.25", "--batch_size", "16",
               "--num_workers", "1"]
RESULT_RE = re.compile(r"^result: \{'acc': ([0-9.]+), 'top_5_accuracy': ([0-9.]+)\} ckpt=(\S+)$", re.M)


def mnv2(*args: str, cwd: Path | None = None, timeout: float = 300, **env: str):
    return subprocess.run([MNV2, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "MNV2_EXECUTION_MODE": "graph", **env})


def test_bad_inputs_exit_with_their_codes(trees, tmp_path):
    missing = mnv2("train", "--dataset_path", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path))
    assert missing.returncode == ExitCode.INVALID_INPUT, missing.stderr
    assert f"dataset_path: {tmp_path / 'nowhere'}: no such folder" in missing.stderr

    fp16 = mnv2("train", "--dataset_path", str(trees.train), "--platform", "CPU", "--amp_level", "O2")
    assert fp16.returncode == ExitCode.INVALID_CONFIG
    assert "amp_level: fp16 mixed precision is not supported on CPU" in fp16.stderr

    typo = mnv2("train", "--batch_size", "many")
    assert typo.returncode == ExitCode.INVALID_CONFIG and "--batch_size" in typo.stderr

    no_ckpt = mnv2("train", "--dataset_path", str(trees.train), "--pretrain_ckpt", str(tmp_path / "x.ckpt"),
                   "--output_dir", str(tmp_path / "o"), *SMALL_FLAGS)
    assert no_ckpt.returncode == ExitCode.INVALID_CHECKPOINT
    assert f"pretrain_ckpt: {tmp_path / 'x.ckpt'}: no such checkpoint file" in no_ckpt.stderr


@pytest.mark.slow
def test_corrupt_image_is_named(trees, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(trees.train, data)
    bad = data / "class_02" / "0005.png"
    bad.write_bytes(b"GIF89a truncated")
    run = mnv2("train", "--dataset_path", str(data), "--output_dir", str(tmp_path / "o"), *SMALL_FLAGS)
    assert run.returncode == ExitCode.INVALID_INPUT
    assert f"{bad}: corrupt or unreadable image" in run.stderr


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143(trees, tmp_path):
    process = subprocess.Popen(
        [MNV2, "train", "--dataset_path", str(trees.train), "--output_dir", str(tmp_path), "--epochs", "50",
         *SMALL_FLAGS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MNV2_EXECUTION_MODE": "graph", "MNV2_LOG_EVERY": "1"},
    )
    try:
        deadline = time.monotonic() + 240
        for line in process.stdout:  # the first step line says training is under way
            if line.startswith("epoch: [") or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == ExitCode.INTERRUPTED, errors
    stopped = re.search(r"SIGTERM: stopped after global step (\d+)", errors)
    assert stopped, errors
    step = int(stopped.group(1))
    epoch, in_epoch = (step // 8, 8) if step % 8 == 0 else (step // 8 + 1, step % 8)
    saved = list_checkpoints(tmp_path / "checkpoint")
    assert saved and saved[-1].name == f"mobilenetv2-{epoch}_{in_epoch}.ckpt"
    assert not [p for p in (tmp_path / "checkpoint").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_seed_scripts_train_and_evaluate_on_cpu(trees, tmp_path):
    env = {**os.environ, "MNV2": MNV2, "MNV2_EXECUTION_MODE": "graph"}
    train = subprocess.run(
        ["bash", str(SCRIPTS / "run_train.sh"), "CPU", str(trees.train), "--epochs", "1", *SMALL_FLAGS],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    log = (tmp_path / "train.log").read_text()
    assert train.returncode == 0, log
    assert "epoch: [  0/  1], step:[    7/    8]" in log
    checkpoint = tmp_path / "checkpoint" / "mobilenetv2-1_8.ckpt"
    assert checkpoint.is_file() and (tmp_path / "config.yaml").is_file()

    evaluation = subprocess.run(
        ["bash", str(SCRIPTS / "run_eval.sh"), "CPU", str(trees.val), str(checkpoint)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    log = (tmp_path / "eval.log").read_text()
    assert evaluation.returncode == 0, log
    match = RESULT_RE.search(log)
    assert match and match.group(3) == str(checkpoint)
    assert 0.0 <= float(match.group(1)) <= float(match.group(2)) <= 1.0

    usage = subprocess.run(["bash", str(SCRIPTS / "run_train.sh"), "TPU"], capture_output=True, text=True)
    assert usage.returncode == 64 and "usage: run_train.sh CPU" in usage.stderr


@pytest.mark.slow
def test_eval_reports_the_training_accuracy(trained, trees):
    checkpoint = list_checkpoints(trained.output / "checkpoint")[-1]
    run = mnv2("eval", "--dataset_path", str(trees.val), "--pretrain_ckpt", str(checkpoint))
    assert run.returncode == 0, run.stderr
    match = RESULT_RE.search(run.stdout)
    assert match, run.stdout
    assert float(match.group(1)) == pytest.approx(trained.result.top1)  # model shape read from config.yaml


@pytest.mark.slow
def test_export_writes_logits_and_the_zoos_softmax_graph_with_a_manifest(trained, device, tmp_path):
    import json

    import mindspore as ms
    from mnv2 import checkpoint as ckpt
    from mnv2.export import load_mindir
    from mnv2.hub import create_network

    checkpoint = list_checkpoints(trained.output / "checkpoint")[-1]
    stem = tmp_path / "mnv2"
    run = mnv2("export", "--pretrain_ckpt", str(checkpoint), "--file_format", "all", "--file_name", str(stem),
               "--export_batch_size", "2")
    assert run.returncode == 0, run.stderr
    manifest = json.loads(Path(f"{stem}.json").read_text())
    files = {(f["format"], f["output"]): f for f in manifest["files"]}
    # CPU: no AIR (Ascend only); both graphs in both formats, each file named for what it holds.
    assert set(files) == {(fmt, out) for fmt in ("MINDIR", "ONNX") for out in ("logits", "softmax")}
    assert files[("ONNX", "softmax")]["file"] == "mnv2_softmax.onnx"
    assert Path(f"{stem}_logits.onnx").stat().st_size > 100_000
    assert manifest["checkpoint"] == str(checkpoint) and manifest["network"]["num_classes"] == 4
    assert manifest["input"]["height"] == 32 and manifest["input"]["layout"] == "NCHW"
    assert f"exported {stem}_softmax.mindir: MINDIR, output softmax" in run.stdout

    network = create_network("mobilenetv2", num_classes=4, width_mult=0.25)
    ckpt.load_for_inference(network, checkpoint)
    network.set_train(False)
    images = ms.Tensor(np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32))
    logits = network(images).asnumpy()
    np.testing.assert_allclose(load_mindir(f"{stem}_logits.mindir")(images).asnumpy(), logits,
                               rtol=1e-4, atol=1e-5)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(load_mindir(f"{stem}_softmax.mindir")(images).asnumpy(), probabilities,
                               rtol=1e-4, atol=1e-6)


def test_air_export_is_refused_off_ascend(tmp_path):
    run = mnv2("export", "--file_format", "AIR", "--pretrain_ckpt", str(tmp_path / "absent.ckpt"),
               "--platform", "CPU", "--file_name", str(tmp_path / "m"))
    assert run.returncode == ExitCode.INVALID_CONFIG
    assert "file_format: AIR is written only on Ascend" in run.stderr and "this platform is CPU" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_trainer_package_never_imports_the_operator():
    """Trainer images carry `mnv2`; the operator (`mnv2_operator`, kopf) must never come with it.
    `mnv2 run` is the operator's job run locally, so it lives in mnv2_operator.localrun."""
    script = (
        "import importlib, json, pkgutil, sys\n"
        "import mnv2\n"
        "names = [m.name for m in pkgutil.walk_packages(mnv2.__path__, 'mnv2.')]\n"
        "names.remove('mnv2.__main__')  # runs the command line\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mnv2_operator', 'kopf', 'kubernetes'))\n"
        "print(json.dumps([names, bad]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    names, bad = json.loads(done.stdout.splitlines()[-1])
    assert {"mnv2.cli", "mnv2.config", "mnv2.train", "mnv2.console", "mnv2.report"} <= set(names)
    assert bad == [], f"importing the mnv2 package imported {bad}"
    # Lazy imports inside functions count too: none of the trainer's modules names the operator's.
    for path in (REPO / "trainer" / "mnv2").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(m.split(".")[0] == "mnv2_operator" for m in modules), f"{path}:{node.lineno}"


def test_export_formats_per_platform():
    from mnv2.exitcodes import ConfigError
    from mnv2.export import formats_for, outputs_for

    assert formats_for("all", "Ascend") == ["MINDIR", "ONNX", "AIR"]  # AIR: CANN's graph engine, Ascend only
    assert formats_for("all", "GPU") == formats_for("all", "CPU") == ["MINDIR", "ONNX"]
    assert formats_for("AIR", "Ascend") == ["AIR"]
    with pytest.raises(ConfigError, match=r"AIR is written only on Ascend.*this platform is GPU"):
        formats_for("AIR", "GPU")
    assert outputs_for("both") == ["logits", "softmax"] and outputs_for("softmax") == ["softmax"]

"""The run's artifact summary: the file on the output volume and the container's termination message.

Kubernetes keeps at most 4096 bytes of a container's termination message, read from the file named by
its terminationMessagePath (kubernetes.io, "Determine the Reason for Pod Failure"); the operator parses
a message written by a container a job author may have built, so parsing keeps only known, bounded keys.
"""

from __future__ import annotations

import json

from mnv2 import artifacts, launchenv


def test_summary_is_relative_to_the_output_folder_and_lands_in_both_places(tmp_path):
    out = tmp_path / "out"
    message_file = tmp_path / "termination-log"
    found = artifacts.summary(
        out,
        checkpoint=out / "checkpoint" / "mobilenetv2-9_10.ckpt",
        top1=0.97123456789,
        best_checkpoint=out / "checkpoint" / "best.ckpt",
        best_top1=0.98,
        exports=[out / "mobilenetv2_logits.mindir", out / "mobilenetv2_softmax.mindir"],
    )
    assert found == {
        "outputPath": str(out),
        "checkpoint": "checkpoint/mobilenetv2-9_10.ckpt",
        "bestCheckpoint": "checkpoint/best.ckpt",
        "bestTop1": 0.98,
        "top1": 0.971235,
        "exports": ["mobilenetv2_logits.mindir", "mobilenetv2_softmax.mindir"],
    }
    written = artifacts.publish(found, {launchenv.TERMINATION_MESSAGE_PATH: str(message_file)})
    assert json.loads(written.read_text()) == found
    assert artifacts.parse(message_file.read_text()) == found
    assert "final checkpoint checkpoint/mobilenetv2-9_10.ckpt" in artifacts.describe(found)


def test_message_never_exceeds_what_kubernetes_keeps():
    exports = [f"{'x' * 200}{i}.onnx" for i in range(40)]
    many = {"outputPath": "/output", "checkpoint": "c.ckpt", "exports": exports}
    text = artifacts.message(many)
    assert len(text.encode()) <= artifacts.MESSAGE_LIMIT
    assert json.loads(text)["checkpoint"] == "c.ckpt"


def test_unwritable_termination_file_is_a_notice_not_a_failure(tmp_path, capsys):
    found = artifacts.summary(tmp_path, checkpoint=tmp_path / "a.ckpt")
    artifacts.publish(found, {launchenv.TERMINATION_MESSAGE_PATH: str(tmp_path / "missing" / "log")})
    assert (tmp_path / artifacts.SUMMARY_FILE).exists()
    assert "termination message" in capsys.readouterr().out


def test_parse_keeps_only_known_bounded_printable_values():
    hostile = {
        "checkpoint": "ok.ckpt",
        "top1": 7.5,  # not a fraction
        "bestTop1": True,  # a bool is not a number here
        "bestCheckpoint": "evil\nline",
        "exports": ["a.mindir", 3, "b" * 1000],
        "command": "rm -rf /",
    }
    assert artifacts.parse(json.dumps(hostile)) == {"checkpoint": "ok.ckpt", "exports": ["a.mindir"]}
    assert artifacts.parse("Error: the trainer crashed") is None
    assert artifacts.parse("[1, 2]") is None
    assert artifacts.parse(json.dumps({"outputPath": "/output"})) is None
    assert artifacts.parse(None) is None

"""User-supplied keys and values never break an error message's lines (issue 12, "Fix the finding").

Hypothesis found an operator configuration whose profile key is the control character '\\x1e'
(RECORD SEPARATOR). Python's str.splitlines() breaks at it, as at \\x1c, \\x1d, \\x85, \\u2028 and the
usual \\n, \\r, \\v, \\f, so a message split into lines no longer named the file on every line. The
example is kept here as an explicit regression case, together with each of those characters.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from api_builders import make_job
from mnv2.exitcodes import ConfigError
from mnv2_operator.api import SpecError, one_line, parse_job
from mnv2_operator.profiles import load_operator_config

LINE_BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def test_every_line_breaking_character_is_escaped():
    for char in LINE_BREAKS:
        text = one_line(f"a{char}b")
        assert len(f"x{text}y".splitlines()) == 1, repr(char)
        assert text == "a" + char.encode("unicode_escape").decode() + "b"
    assert one_line("plain: text, 'quoted'") == "plain: text, 'quoted'"


def test_the_hypothesis_finding_a_profile_key_x1e(tmp_path: Path):
    path = tmp_path / "operator.yaml"
    path.write_text(yaml.safe_dump({"profiles": {"\x1e": {"image": "x"}}}))
    with pytest.raises(ConfigError) as caught:
        load_operator_config(path)
    lines = str(caught.value).splitlines()
    assert lines and all(line.startswith(f"{path}: profiles.") for line in lines), lines
    assert any("profiles.'\\x1e'" in line for line in lines), lines


@pytest.mark.parametrize("char", LINE_BREAKS, ids=repr)
def test_config_keys_and_values_are_quoted_in_every_line(tmp_path: Path, char: str):
    path = tmp_path / "operator.yaml"
    override = {"profiles": {f"k{char}": 3, "CPU": {"requests": {f"cpu{char}": f"1{char}x"}}}}
    path.write_text(yaml.safe_dump(override))
    with pytest.raises(ConfigError) as caught:
        load_operator_config(path)
    lines = str(caught.value).splitlines()
    assert len(lines) >= 2 and all(line.startswith(f"{path}: profiles.") for line in lines), lines


@pytest.mark.parametrize("char", LINE_BREAKS, ids=repr)
def test_job_problems_never_break_a_line(char: str):
    job = make_job("CPU")
    job["spec"]["template"] = {
        "labels": {f"bad key{char}": "x"},
        "env": [{"name": f"MNV2_{char}", "value": "1"}],
        "volumes": [{"name": "v", "emptyDir": {}}],
        "volumeMounts": [
            {"name": "v", "mountPath": f"/mnt/a{char}b"},
            {"name": "v", "mountPath": f"/mnt/a{char}b/c{char}"},
        ],
    }
    with pytest.raises(SpecError) as caught:
        parse_job(job, source=f"job{char}.yaml")
    first, *problems = str(caught.value).splitlines()
    assert first.startswith("job") and "problem(s):" in first
    assert len(problems) == len(caught.value.problems) >= 3
    assert all(line.startswith("  spec.") for line in problems), problems


def test_a_key_ending_in_a_newline_is_quoted_not_shown_as_a_plain_word(tmp_path: Path):
    """`$` in a Python pattern also matches before a final newline: "team\\n" must not pass as plain."""
    job = make_job("CPU")
    job["spec"]["template"] = {"labels": {"team\n": "v\n"}}
    with pytest.raises(SpecError) as caught:
        parse_job(job)
    assert "spec.template.labels['team\\n']" in str(caught.value), str(caught.value)
    path = tmp_path / "operator.yaml"
    path.write_text(yaml.safe_dump({"profiles": {"CPU\n": {"image": "x"}}}))
    with pytest.raises(ConfigError) as config_error:
        load_operator_config(path)
    assert "profiles.'CPU\\n'" in str(config_error.value), str(config_error.value)

"""Command-line flags generated from `TrainingConfig`, and the configuration layers they join.

Every field gets a seed-style snake_case flag (`--batch_size`), so flags never drift from the
model. Flags default to None (unset), which lets the layers merge:

    platform preset < --config FILE < $MNV2_TRAINING_CONFIG (JSON, set by the launcher) < flags

No MindSpore here: the configuration is validated before MindSpore starts.
"""

from __future__ import annotations

import argparse
import json
import os
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from mnv2 import launchenv
from mnv2.config import TrainingConfig, build_config, load_config_file
from mnv2.exitcodes import ConfigError

FIELDS = TrainingConfig.model_fields
ALIASES: dict[str, str] = {
    (info.alias or name): name for name, info in FIELDS.items()
}


def _choices(annotation: Any) -> list[str] | None:
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [str(member.value) for member in annotation]
    if typing.get_origin(annotation) is typing.Literal:
        return [str(value) for value in typing.get_args(annotation)]
    return None


def _base_type(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if args else str
    return annotation


def add_config_arguments(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """`--config FILE` and one flag per TrainingConfig field (booleans get `--no_<name>` too)."""
    parser.add_argument("--config", metavar="FILE", help="YAML (or JSON) file of settings (snake_case keys)")
    group = parser.add_argument_group("training configuration (unset flags keep the preset or file value)")
    for name, info in FIELDS.items():
        if name in skip:
            continue
        annotation = _base_type(info.annotation)
        text = info.description or ""
        flag = f"--{name}"
        if annotation is bool:
            group.add_argument(flag, dest=name, action="store_true", default=None, help=text)
            group.add_argument(f"--no_{name}", dest=name, action="store_false", help=f"unset {flag}")
            continue
        choices = _choices(annotation)
        if typing.get_origin(annotation) is list:
            item_choices = _choices(typing.get_args(annotation)[0])
            group.add_argument(flag, dest=name, nargs="*", choices=item_choices, default=None,
                               metavar=name.upper(), help=f"{text} (several: space-separated)")
        elif choices:
            group.add_argument(flag, dest=name, choices=choices, default=None, help=text)
        elif annotation in (int, float):
            group.add_argument(
                flag, dest=name, type=annotation, default=None, metavar=name.upper(), help=text
            )
        else:
            group.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=text)


def normalise(layer: dict[str, Any], source: str) -> dict[str, Any]:
    """camelCase or snake_case keys -> field names; unknown keys are an error naming the source."""
    result: dict[str, Any] = {}
    for key, value in layer.items():
        if key in FIELDS:
            result[key] = value
        elif key in ALIASES:
            result[ALIASES[key]] = value
        else:
            raise ConfigError(f"{source}: {key}: not a training setting")
    return result


def flag_layer(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}


def file_layer(args: argparse.Namespace) -> dict[str, Any]:
    if not getattr(args, "config", None):
        return {}
    return normalise(load_config_file(args.config), str(args.config))


def env_layer(environ: os._Environ[str] | dict[str, str] | None = None) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    raw = environ.get(launchenv.TRAINING_CONFIG, "")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{launchenv.TRAINING_CONFIG}: not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{launchenv.TRAINING_CONFIG}: must be a JSON object of settings")
    return normalise(data, launchenv.TRAINING_CONFIG)


def resolve(args: argparse.Namespace, *, base: dict[str, Any] | None = None) -> TrainingConfig:
    """Merge base < file < environment < flags and validate (ConfigError names each bad field)."""
    return build_config(base or {}, file_layer(args), env_layer(), flag_layer(args), names=layer_names(args))


def layer_names(args: argparse.Namespace, base: str = "the saved configuration") -> tuple[str, ...]:
    """Where each of resolve()'s layers comes from, for error messages (see config.build_config)."""
    return (base, f"file {getattr(args, 'config', None)}", f"${launchenv.TRAINING_CONFIG}", "flag")


def saved_config_near(checkpoint: str | Path) -> Path | None:
    """`config.yaml` beside a checkpoint, or one folder up (checkpoints live in output_dir/checkpoint)."""
    path = Path(checkpoint)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "config.yaml", folder.parent / "config.yaml"):
        if candidate.is_file():
            return candidate
    return None

"""The training configuration: one pydantic model, the platform presets, and loading from files and flags.

This module imports neither MindSpore nor kopf. The operator generates the CRD's `spec.training`
schema from `TrainingConfig` (camelCase aliases), so the trainer and the resource never drift.
Fields whose default depends on the platform (REFERENCE §1) are filled from `PRESETS` before
validation; the CRD leaves them unset so the trainer's preset applies.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel

from mnv2.exitcodes import ConfigError


class Platform(StrEnum):
    ASCEND = "Ascend"
    GPU = "GPU"
    CPU = "CPU"


class FreezeLayer(StrEnum):
    NONE = "none"
    BACKBONE = "backbone"


class AmpLevel(StrEnum):
    O0 = "O0"  # fp32
    O2 = "O2"  # fp16 except BatchNorm and loss
    O3 = "O3"  # everything fp16, BatchNorm too (the zoo's Ascend setting)


# The seed's recipe per platform (REFERENCE §1). Keys are TrainingConfig field names.
PRESETS: dict[Platform, dict[str, Any]] = {
    Platform.ASCEND: dict(
        batch_size=256, epochs=200, warmup_epochs=4, lr_init=0.0, lr_max=0.4, lr_end=0.0,
        amp_level=AmpLevel.O3, loss_scale=1024.0, dynamic_loss_scale=False, keep_checkpoint_max=200,
    ),
    Platform.GPU: dict(
        batch_size=150, epochs=200, warmup_epochs=0, lr_init=0.0, lr_max=0.8, lr_end=0.0,
        amp_level=AmpLevel.O2, loss_scale=65536.0, dynamic_loss_scale=True, keep_checkpoint_max=200,
    ),
    Platform.CPU: dict(
        batch_size=150, epochs=15, warmup_epochs=0, lr_init=0.03, lr_max=0.03, lr_end=0.03,
        amp_level=AmpLevel.O0, loss_scale=1.0, dynamic_loss_scale=False, keep_checkpoint_max=20,
    ),
}
PRESET_FIELDS: frozenset[str] = frozenset(PRESETS[Platform.CPU])


class TrainingConfig(BaseModel):
    """Every setting of one training, fine-tuning or evaluation run."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, use_enum_values=False
    )

    platform: Platform = Field(Platform.CPU, description="Device target: Ascend, GPU or CPU.")
    dataset_path: str = Field("", description="Training data: a folder with one sub-folder per class.")
    eval_dataset_path: str = Field("", description="Evaluation data (same layout); empty skips evaluation.")
    pretrain_ckpt: str = Field("", description="Checkpoint to start from (fine-tuning, evaluation).")
    freeze_layer: FreezeLayer = Field(
        FreezeLayer.NONE, description="none: train the whole network; backbone: train only the head."
    )
    num_classes: int = Field(1000, ge=2, le=100_000, description="Number of classes of the head.")
    image_size: int = Field(224, ge=32, le=1024, description="Square input resolution in pixels.")
    width_mult: float = Field(1.0, gt=0.0, le=4.0, description="MobileNetV2 width multiplier.")
    batch_size: int = Field(None, ge=1, le=65_536, description="Batch size per device (preset).")
    epochs: int = Field(None, ge=1, le=100_000, description="Number of epochs (preset).")
    warmup_epochs: int = Field(None, ge=0, le=100_000, description="Linear warmup epochs (preset).")
    lr_init: float = Field(None, ge=0.0, le=100.0, description="Learning rate at step 0 (preset).")
    lr_max: float = Field(None, ge=0.0, le=100.0, description="Peak learning rate after warmup (preset).")
    lr_end: float = Field(None, ge=0.0, le=100.0, description="Learning rate at the last step (preset).")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="Momentum of the optimizer.")
    weight_decay: float = Field(
        4e-5, ge=0.0, le=1.0, description="Weight decay (not on BatchNorm or biases)."
    )
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="Label smoothing factor.")
    min_crop_scale: float = Field(
        0.08, gt=0.0, le=1.0, description="Smallest area fraction of the random training crop (zoo: 0.08)."
    )
    horizontal_flip: bool = Field(True, description="Flip training images left-right with probability 0.5.")
    amp_level: AmpLevel = Field(None, description="Mixed precision level: O0, O2 or O3 (preset).")
    loss_scale: float = Field(None, ge=1.0, le=2.0**24, description="Loss scale (initial one when dynamic).")
    dynamic_loss_scale: bool = Field(None, description="Adjust the loss scale on overflow (preset).")
    save_checkpoint: bool = Field(True, description="Write checkpoints (rank 0 only).")
    save_checkpoint_epochs: int = Field(1, ge=1, le=100_000, description="Write a checkpoint every N epochs.")
    keep_checkpoint_max: int = Field(None, ge=1, le=100_000, description="Checkpoints to keep (preset).")
    eval_interval: int = Field(
        0, ge=0, le=100_000,
        description="Evaluate every N epochs during training (0: only at the end, when eval data is set).",
    )
    keep_best: bool = Field(
        False,
        description="Keep the best checkpoint by top-1 of the periodic evaluations (needs eval_interval).",
    )
    export_formats: list[Literal["MINDIR", "ONNX", "AIR"]] = Field(
        default_factory=list,
        description="Export the trained network when training ends, as `mnv2 export` does (logits and the "
        "zoo's softmax graph, with a manifest): MINDIR, ONNX, AIR (Ascend only); none by default.",
    )
    output_dir: str = Field("./output", description="Where checkpoints, logs and exports go.")
    resume: bool = Field(False, description="Continue from the latest checkpoint in output_dir.")
    seed: int = Field(1, ge=0, le=2**31 - 1, description="Random seed.")
    num_workers: int = Field(2, ge=1, le=64, description="Parallel workers of the data pipeline.")
    on_corrupt_image: Literal["error", "skip"] = Field(
        "error", description="error: stop naming the file; skip: leave it out and count it."
    )
    fast_depthwise: bool = Field(True, description="Use the project's CPU depthwise-convolution kernel.")
    bf16_pointwise: bool = Field(
        False,
        description="CPU: compute the 1x1 convolutions with bf16 products and float32 sums (mixed precision, "
        "on CPUs with AVX512-BF16; needs fast_depthwise). Off: exact float32.",
    )
    metrics_port: int = Field(0, ge=0, le=65_535, description="Prometheus port of rank 0; 0 disables.")

    @model_validator(mode="wrap")
    @classmethod
    def _presets_then_rules(cls, data: Any, handler: Any, info: ValidationInfo) -> TrainingConfig:
        """Fill the platform presets (derived ones following the user's values), validate the fields,
        then the cross-field rules, whose messages say where each value came from."""
        if not isinstance(data, dict):
            return handler(data)
        given = (info.context or {}).get("origins") or {}
        filled, origins = apply_presets(data, given)
        config = handler(filled)
        config._check_rules(origins)
        return config

    def _check_rules(self, origins: dict[str, str]) -> None:
        def shown(*names: str) -> str:
            return "; ".join(f"{name} = {getattr(self, name)} from {origins.get(name, 'the default')}"
                             for name in names)

        if self.platform == Platform.CPU:
            if self.amp_level != AmpLevel.O0:
                raise ValueError(
                    f"amp_level: fp16 mixed precision is not supported on CPU; use O0 ({shown('amp_level')})"
                )
            if self.loss_scale != 1.0 or self.dynamic_loss_scale:
                raise ValueError(
                    "loss_scale: loss scaling is not supported on CPU; use 1 and no dynamic scale "
                    f"({shown('loss_scale', 'dynamic_loss_scale')})"
                )
        if self.bf16_pointwise and self.platform != Platform.CPU:
            raise ValueError(
                "bf16_pointwise: CPU only; on GPU and Ascend mixed precision is amp_level "
                f"({shown('bf16_pointwise', 'platform')})"
            )
        if self.bf16_pointwise and not self.fast_depthwise:
            raise ValueError(
                "bf16_pointwise: the bf16 kernel is one of the project's CPU kernels, which "
                f"fast_depthwise turns off ({shown('bf16_pointwise', 'fast_depthwise')})"
            )
        if self.freeze_layer == FreezeLayer.BACKBONE and not self.pretrain_ckpt:
            raise ValueError("pretrain_ckpt: freeze_layer=backbone needs a pretrained checkpoint")
        if self.keep_best and self.eval_interval == 0:
            raise ValueError("keep_best: needs periodic evaluation; set eval_interval > 0")
        if self.eval_interval and not self.eval_dataset_path:
            raise ValueError("eval_interval: periodic evaluation needs eval_dataset_path")
        if "AIR" in self.export_formats and self.platform != Platform.ASCEND:
            raise ValueError(
                "export_formats: AIR is written only on Ascend (through CANN's graph engine); "
                f"this platform is {self.platform}: use MINDIR or ONNX"
            )
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs: must not exceed epochs ({shown('warmup_epochs', 'epochs')})")
        if not self.lr_end <= self.lr_max:
            raise ValueError(f"lr_end: must not exceed lr_max ({shown('lr_end', 'lr_max')})")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # the field validator reports it


def apply_presets(
    data: dict[str, Any], origins: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Fill every preset field the user left unset, and say where each value came from.

    A value the user gives never fails because of a preset value they did not give: presets that
    depend on another setting follow the user's value of it.
    - lr_init and lr_end keep the preset's ratio to lr_max (CPU: a constant rate, so both become
      lr_max; Ascend, GPU: 0) when only lr_max is given; lr_max rises to a given lr_end.
    - warmup_epochs is cut to given epochs; epochs rise to given warmup_epochs.
    `origins` names the source of given fields (default "the configuration"); filled ones are
    "the <platform> preset". Keys may be snake_case or camelCase, as the model accepts.
    """
    origins = dict(origins or {})
    try:
        platform = Platform(data.get("platform", Platform.CPU))
    except ValueError:
        return data, origins  # the field validator reports the bad platform
    preset = PRESETS[platform]
    filled = dict(data)
    given: dict[str, Any] = {}
    for key in PRESET_FIELDS:
        value = filled.get(key)
        if value is None:
            value = filled.get(to_camel(key))
        filled.pop(to_camel(key), None)
        if value is None:
            filled.pop(key, None)
        else:
            filled[key] = given[key] = value
            origins.setdefault(key, "the configuration")
    label = f"the {platform} preset"
    for key in PRESET_FIELDS - given.keys():
        filled[key], origins[key] = preset[key], label

    lr_max, lr_end = _number(given.get("lr_max")), _number(given.get("lr_end"))
    if lr_max is not None:
        for key in ("lr_init", "lr_end"):
            if key not in given:
                same = preset[key] == preset["lr_max"]
                filled[key] = lr_max if same else lr_max * preset[key] / preset["lr_max"]
                origins[key] = f"{label}, following lr_max"
    elif lr_end is not None and lr_end > preset["lr_max"]:
        filled["lr_max"], origins["lr_max"] = lr_end, f"{label}, raised to lr_end"
    epochs, warmup = _number(given.get("epochs")), _number(given.get("warmup_epochs"))
    if epochs is not None and "warmup_epochs" not in given and preset["warmup_epochs"] > epochs:
        filled["warmup_epochs"], origins["warmup_epochs"] = given["epochs"], f"{label}, cut to epochs"
    elif warmup is not None and "epochs" not in given and warmup > preset["epochs"]:
        filled["epochs"], origins["epochs"] = given["warmup_epochs"], f"{label}, raised to warmup_epochs"
    return filled, origins


def format_validation_error(error: ValidationError, source: str = "configuration") -> str:
    """One line per problem, each naming its field."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {field}: {message}" if field else f"{source}: {message}")
    return "\n".join(lines)


def build_config(
    *layers: dict[str, Any], source: str = "configuration", names: tuple[str, ...] = ()
) -> TrainingConfig:
    """Merge layers (later wins, None means unset) and validate; raises ConfigError naming each field.

    `names[i]` says where layer i came from (e.g. "file c.yaml"; "flag" becomes "flag --<field>"),
    so a rule that fails shows the values involved and the source of each.
    """
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for position, layer in enumerate(layers):
        name = names[position] if position < len(names) else source
        for key, value in layer.items():
            if value is not None:
                merged[key] = value
                origins[key] = f"flag --{key}" if name == "flag" else name
    try:
        return TrainingConfig.model_validate(merged, context={"origins": origins})
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read configuration: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of settings")
    return data


def save_config(config: TrainingConfig, path: str | Path) -> None:
    """Write the effective configuration (snake_case YAML) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False))
    tmp.replace(path)

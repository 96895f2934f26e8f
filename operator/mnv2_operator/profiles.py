"""The operator's configuration: one profile per platform, and cluster-wide settings.

A profile says how a pod for that platform looks on this cluster: image, where it may run
(node selector, tolerations, runtime class), which extended resource counts devices, and which
parts of the restricted security context the platform cannot live with (Ascend). The defaults in
`profiles/default.yaml` are safe; a file given with `--config` is merged over them key by key.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from mnv2 import launchenv
from mnv2.config import Platform
from mnv2.exitcodes import ConfigError
from mnv2.launchenv import LaunchMode
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from mnv2_operator.api import EnvVar, GangScheduler, Quantity, Toleration, Volume, VolumeMount, one_line
from mnv2_operator.policy import Policy
from mnv2_operator.validation import PLAIN_KEY

DEFAULT_CONFIG_RESOURCE = "profiles/default.yaml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class SecuritySettings(_Model):
    """The container's security context; the defaults are Kubernetes' "restricted" profile."""

    run_as_non_root: bool = True
    run_as_user: int | None = Field(1000, ge=0)
    run_as_group: int | None = Field(1000, ge=0)
    fs_group: int | None = Field(1000, ge=0)
    supplemental_groups: list[int] = Field(
        default_factory=list,
        description="Extra groups of the trainer (e.g. the gid of the Ascend driver's HwHiAiUser group, "
        "to open the NPU devices without root).",
    )
    allow_privilege_escalation: bool = False
    drop_all_capabilities: bool = True
    add_capabilities: list[str] = Field(default_factory=list)
    seccomp_profile: Literal["RuntimeDefault", "Unconfined"] = "RuntimeDefault"
    read_only_root_filesystem: bool = False

    @property
    def restricted(self) -> bool:
        return (
            self.run_as_non_root
            and not self.allow_privilege_escalation
            and self.drop_all_capabilities
            and not self.add_capabilities
            and self.seccomp_profile == "RuntimeDefault"
        )


class PlatformProfile(_Model):
    image: str = Field(..., min_length=1, description="Default trainer image for this platform.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    runtime_class_name: str | None = None
    device_resource: str | None = Field(
        None,
        description="Extended resource counting devices (huawei.com/Ascend910, nvidia.com/gpu); none on CPU.",
    )
    default_devices_per_replica: int = Field(1, ge=1, le=64)
    max_devices_per_replica: int = Field(8, ge=1, le=64)
    launch_mode: LaunchMode = LaunchMode.DYNAMIC
    requests: dict[str, Quantity] = Field(default_factory=dict, description="Per-pod requests (cpu, memory).")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Per-pod limits besides devices.")
    shm_size: Quantity = Field("2Gi", description="Size of the in-memory /dev/shm volume.")
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment (e.g. driver paths).")
    volumes: list[Volume] = Field(default_factory=list, description="Extra volumes (e.g. the Ascend driver).")
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    security: SecuritySettings = Field(default_factory=SecuritySettings)

    @model_validator(mode="after")
    def _check(self) -> PlatformProfile:
        if self.default_devices_per_replica > self.max_devices_per_replica:
            raise ValueError("defaultDevicesPerReplica: must not exceed maxDevicesPerReplica")
        return self


class OperatorConfig(_Model):
    profiles: dict[Platform, PlatformProfile]
    namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch; empty: all.")
    cluster_domain: str = Field("", description="Appended to pod DNS names when set (e.g. cluster.local).")
    gang_scheduler: GangScheduler = Field(
        GangScheduler.VOLCANO, description="Gang scheduler when a job asks for gang and names none."
    )
    scheduler_port: int = Field(launchenv.DEFAULT_SCHEDULER_PORT, ge=1024, le=65535)
    rank_table_timeout_seconds: int = Field(launchenv.DEFAULT_RANK_TABLE_TIMEOUT_SECONDS, ge=1)
    termination_grace_period_seconds: int = Field(
        120, ge=0, description="Time a trainer gets after SIGTERM to write its checkpoint."
    )
    policy: Policy = Field(
        default_factory=Policy,
        description="What jobs may ask for: volume types, host paths, images, reserved keys "
        "(mnv2_operator.policy, docs/security.md).",
    )

    @model_validator(mode="after")
    def _all_platforms(self) -> OperatorConfig:
        missing = [p.value for p in Platform if p not in self.profiles]
        if missing:
            raise ValueError(f"profiles: missing {', '.join(missing)}")
        return self

    def profile(self, platform: Platform | str) -> PlatformProfile:
        return self.profiles[Platform(platform)]


def _merge(base: Any, override: Any) -> Any:
    """Mappings merge key by key; anything else (lists included) is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return override


def default_config_dict() -> dict[str, Any]:
    text = resources.files("mnv2_operator").joinpath(DEFAULT_CONFIG_RESOURCE).read_text()
    return yaml.safe_load(text)


def load_operator_config(path: str | Path | None = None) -> OperatorConfig:
    """The defaults, with the file at `path` merged over them; errors name the file and the field."""
    data = default_config_dict()
    source = "default operator configuration"
    if path is not None:
        source = str(path)
        try:
            override = yaml.safe_load(Path(path).read_text())
        except OSError as error:
            raise ConfigError(f"{path}: cannot read operator configuration: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        if override is not None and not isinstance(override, dict):
            raise ConfigError(f"{path}: the operator configuration must be a mapping")
        data = _merge(data, override or {})
    try:
        return OperatorConfig.model_validate(data)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            where = config_path(item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            lines.append(one_line(f"{source}: {where}: {message}"))
        raise ConfigError("\n".join(lines)) from None


def config_path(loc: tuple[Any, ...]) -> str:
    """("profiles", "CPU", "env", 0) -> "profiles.CPU.env.0"; a key that is not a plain word is quoted
    ("profiles.'\\x1e'", "profiles.'a.b'"), so a user's key never reads as structure or breaks a line."""

    def part(p: Any) -> str:
        return str(p) if isinstance(p, int) or p == "[key]" or PLAIN_KEY.fullmatch(str(p)) else repr(str(p))

    return ".".join(part(p) for p in loc)

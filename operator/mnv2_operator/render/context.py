"""What every renderer needs to know about one job: the validated spec, its platform profile, and
the decisions derived from both (devices, image, launch mode, gang scheduler), made once here.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from mnv2.launchenv import LaunchMode

from mnv2_operator import names
from mnv2_operator.api import API_VERSION, KIND, GangScheduler, Job, SpecError, parse_job
from mnv2_operator.profiles import OperatorConfig, PlatformProfile
from mnv2_operator.validation import DEFAULT_DEVICES_PER_REPLICA

CONTAINER_NAME = "trainer"


@dataclass(frozen=True)
class RenderContext:
    job: Job
    config: OperatorConfig
    profile: PlatformProfile
    devices: int  # trainer processes (devices) per pod
    image: str
    launch_mode: LaunchMode
    gang_scheduler: GangScheduler | None  # None: no gang scheduling

    @property
    def name(self) -> str:
        return self.job.metadata.name

    @property
    def namespace(self) -> str:
        return self.job.metadata.namespace

    @property
    def replicas(self) -> int:
        return self.job.spec.replicas

    @property
    def uses_rank_table(self) -> bool:
        return self.launch_mode == LaunchMode.RANK_TABLE

    @property
    def scheduler_name(self) -> str:
        spec = self.job.spec.scheduling
        if spec.scheduler_name:
            return spec.scheduler_name
        return "volcano" if self.gang_scheduler == GangScheduler.VOLCANO else ""


def _profile_problems(job: Job, profile: PlatformProfile, devices: int) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if devices > profile.max_devices_per_replica:
        problems.append(
            (
                "spec.devicesPerReplica",
                f"this cluster's {job.spec.platform.value} profile allows at "
                f"most {profile.max_devices_per_replica} devices per replica, not {devices}",
            )
        )
    user_mounts = [
        (m.mount_path, f"spec.template.volumeMounts[{i}].mountPath")
        for i, m in enumerate(job.spec.template.volume_mounts)
    ]
    user_mounts += [
        (job.spec.dataset.mount_path, "spec.dataset.mountPath"),
        (job.spec.output.path, "spec.output.path"),
    ]
    for mount in profile.volume_mounts:
        for path, field in user_mounts:
            a, b = posixpath.normpath(path), posixpath.normpath(mount.mount_path)
            if a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/"):
                problems.append(
                    (
                        field,
                        f"overlaps {mount.mount_path}, which the {job.spec.platform.value} profile mounts",
                    )
                )
    profile_volume_names = {v.name for v in profile.volumes}
    for i, volume in enumerate(job.spec.template.volumes):
        if volume.name in profile_volume_names:
            problems.append(
                (f"spec.template.volumes[{i}].name", f"{volume.name!r} is used by the platform profile")
            )
    return problems


def resolve(job: Job | dict[str, Any], config: OperatorConfig) -> RenderContext:
    """Validate the job (dict) and combine it with the operator configuration."""
    if not isinstance(job, Job):
        job = parse_job(job)
    profile = config.profile(job.spec.platform)
    devices = (
        job.spec.devices_per_replica or profile.default_devices_per_replica or DEFAULT_DEVICES_PER_REPLICA
    )
    problems = _profile_problems(job, profile, devices)
    if problems:
        raise SpecError(problems, f"{KIND} {job.metadata.namespace}/{job.metadata.name}")
    scheduling = job.spec.scheduling
    gang = (scheduling.gang_scheduler or config.gang_scheduler) if scheduling.gang else None
    return RenderContext(
        job=job,
        config=config,
        profile=profile,
        devices=devices,
        image=job.spec.image or profile.image,
        launch_mode=profile.launch_mode,
        gang_scheduler=gang,
    )


def owner_references(ctx: RenderContext) -> list[dict[str, Any]]:
    """The job owns every child (garbage collection); omitted when the job has no uid yet
    (`mnv2 render` of a file that was never applied)."""
    if not ctx.job.metadata.uid:
        return []
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": ctx.name,
            "uid": ctx.job.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def object_meta(
    ctx: RenderContext,
    name: str,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ctx.namespace,
        "labels": {**(labels if labels is not None else names.job_labels(ctx.name))},
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    owners = owner_references(ctx)
    if owners:
        meta["ownerReferences"] = owners
    return meta

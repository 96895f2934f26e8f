"""Networks by name: the seed's hub entry point (`create_network(name, **kwargs)`).

One registry and one factory, failing on unknown names, as timm and mindcv do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mnv2.exitcodes import ConfigError


def _mobilenet_v2(**kwargs: Any):
    from mnv2.model import MobileNetV2

    return MobileNetV2(**kwargs)


def _mobilenet_v2_backbone(**kwargs: Any):
    from mnv2.model import MobileNetV2Backbone

    return MobileNetV2Backbone(**kwargs)


NETWORKS: dict[str, Callable[..., Any]] = {
    "mobilenetv2": _mobilenet_v2,
    "mobilenet_v2": _mobilenet_v2,
    "mobilenetv2_backbone": _mobilenet_v2_backbone,
}


def create_network(name: str, **kwargs: Any):
    """Build a registered network; `num_classes`, `width_mult`, ... pass through."""
    try:
        factory = NETWORKS[name.lower()]
    except KeyError:
        raise ConfigError(f"network: unknown name {name!r}; known: {', '.join(sorted(NETWORKS))}") from None
    return factory(**kwargs)

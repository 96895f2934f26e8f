"""Top-1 and top-5 accuracy over a dataset, exact across ranks.

Every rank evaluates its own non-overlapping share (nothing dropped, nothing repeated) and the
correct/total counts are summed over ranks, so the result is the accuracy on the whole set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnv2.distributed import DistContext, all_reduce_sum


@dataclass(frozen=True)
class EvalResult:
    top1: float
    top5: float
    correct1: int
    correct5: int
    total: int


def topk_counts(logits: np.ndarray, labels: np.ndarray, k: int = 5) -> tuple[int, int]:
    """(top-1 correct, top-k correct); k is capped at the number of classes."""
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1)[:, :k]
    correct1 = int(np.sum(top[:, 0] == labels))
    correctk = int(np.sum(np.any(top == labels[:, None], axis=1)))
    return correct1, correctk


def evaluate(
    network, batches: Iterable[tuple[Any, Any]] | None, ctx: DistContext, total_batches: int = 0
) -> EvalResult:
    """Run `network` in inference mode over `batches` (None for an empty share) and sum over ranks.

    On rank 0, with a terminal, a live line shows the batches done out of `total_batches`.
    """
    from mnv2.console import Quiet, live_eval

    network.set_train(False)
    counts = np.zeros(3, dtype=np.float64)
    with live_eval(total_batches) if ctx.is_main and total_batches else Quiet() as live:
        for done, (images, labels) in enumerate(batches or (), start=1):
            logits = network(images).asnumpy().astype(np.float32)
            c1, c5 = topk_counts(logits, labels.asnumpy())
            counts += (c1, c5, len(logits))
            live.step(done, len(logits))
    counts = all_reduce_sum(counts, ctx).astype(np.float64)
    correct1, correct5, total = (round(float(x)) for x in counts)
    return EvalResult(
        top1=correct1 / total if total else 0.0,
        top5=correct5 / total if total else 0.0,
        correct1=correct1, correct5=correct5, total=total,
    )

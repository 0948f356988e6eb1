"""The recorder's control signal."""

from __future__ import annotations

__all__ = ["TraceBudgetExceeded"]


class TraceBudgetExceeded(BaseException):
    """Raised in user code when a trace budget runs out and ``on_budget="stop"``.

    A BaseException, like KeyboardInterrupt: ``except Exception`` in user code does not
    swallow it. Code that catches BaseException can, and then runs on untraced.
    """

"""Exporters of a full ``Trace`` to other formats; ``Trace.to_*`` methods call them.

- ``cwm``: Meta's Code World Model trace frames (``to_cwm``) and their token text
  (``to_cwm_text``).
- ``tutor``: Python Tutor's trace JSON (``to_tutor``).
- ``tables``: one record per step, as JSON Lines (``to_jsonl``) or Parquet (``to_parquet``,
  ``steps_table``; pyarrow is imported only there).

Nothing here imports the exporters or pyarrow: each is imported on first use.
"""

from __future__ import annotations

import re

__all__ = ["source_lines"]

_NEWLINE = re.compile(r"\r\n|\r|\n")


def source_lines(text: str) -> list[str]:
    """The lines of ``text`` as Python numbers them (line ``n`` is item ``n - 1``).

    Only ``\\n``, ``\\r\\n`` and ``\\r`` end a line for the compiler; ``str.splitlines`` also
    splits at form feeds and other separators, which would shift every later line number.
    """
    return _NEWLINE.split(text)

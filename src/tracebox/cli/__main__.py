"""``python -m tracebox.cli``: the ``tracebox`` command."""

from tracebox.cli import main

main()

"""Set-up that cannot confine fails closed, with an error that says what is missing."""

from __future__ import annotations

import subprocess
import sys

from tracebox import Runtime

# Drop to an unprivileged user only after importing: this machine's Python lives under /root.
_TRY = """
import os, tracebox
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
try:
    tracebox.Runtime(pool_size=0)
except tracebox.IsolationUnavailable as exc:
    print("refused:", exc)
else:
    print("STARTED UNCONFINED")
"""


def test_without_root_the_runtime_refuses_to_start() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _TRY], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused: tracebox needs root"), out.stdout


def test_every_worker_is_verified_from_the_host() -> None:
    with Runtime(pool_size=0) as rt, rt.session() as s:
        report = s.confinement
        assert report["seccomp"] is True
        assert report["no_new_privs"] is True
        assert report["cap_effective"] == 0
        assert report["cap_bounding"] == 0
        assert (report["uid"], report["pid"], report["groups"]) == (1000, 1, [])
        assert report["net_interfaces"] == ["lo"]
        # the sandbox's cwd is importable, like a notebook's
        s.run("open('helper.py', 'w').write('def twice(x):\\n    return 2 * x\\n')")
        assert s.run("import helper\nhelper.twice(21)").value == "42"

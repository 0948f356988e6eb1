"""Set-up that cannot confine fails closed, with an error that says what is missing."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

from tracebox import Runtime

# Drop to an unprivileged user only after importing: this machine's Python lives under /root.
_TRY = """
import os, tracebox
tracebox.Runtime  # imported lazily: load it while the files are still readable
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
        # pid 1 is the sandbox's init; the worker is its first child
        assert (report["uid"], report["pid"], report["groups"]) == (1000, 2, [])
        assert report["net_interfaces"] == ["lo"]
        # only the Python installation is shown, not the host's working or test directories
        here = os.path.dirname(os.path.abspath(__file__))
        project = os.path.join(here, "..", "..", "pyproject.toml")
        assert os.path.exists(project)
        visible = s.run(f"import os\n[os.path.exists(p) for p in ({here!r}, {project!r})]")
        assert visible.value == "[False, False]"
        # the sandbox's cwd is importable, like a notebook's
        s.run("open('helper.py', 'w').write('def twice(x):\\n    return 2 * x\\n')")
        assert s.run("import helper\nhelper.twice(21)").value == "42"


_HOST = """
import sys, tracebox
rt = tracebox.Runtime(pool_size=2)
sessions = [rt.session() for _ in range(3)]
sessions[0].run("import subprocess\\np = subprocess.Popen(['sleep', '600'])")
print(rt._template._proc.pid, *(s._worker.pid for s in sessions), flush=True)
sys.stdin.read()
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_killing_the_host_leaves_no_worker_behind() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _HOST], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as host:
        assert host.stdout is not None
        pids = [int(p) for p in host.stdout.readline().split()]
        assert len(pids) == 4
        assert all(_alive(p) for p in pids)
        host.kill()  # SIGKILL: no cleanup code runs on the host
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)], "template or workers outlived the host"
    # the dead host's cgroups are swept by the next runtime that starts
    pattern = f"/sys/fs/cgroup/**/tracebox/rt{host.pid}-*"
    assert glob.glob(pattern, recursive=True)
    Runtime(pool_size=0).close()
    assert glob.glob(pattern, recursive=True) == []


def test_no_descriptor_is_inherited_and_stdin_is_empty() -> None:
    """Only stdin (/dev/null), stdout, stderr and the channel to the host are open."""
    with Runtime(pool_size=0) as rt, rt.session() as s:
        code = (
            "import os, sys\n"
            "fds = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))\n"
            "fds.remove(fds[-1])  # the descriptor listdir itself opened\n"
            "(fds, os.readlink('/proc/self/fd/0'), sys.stdin.read())"
        )
        assert s.run(code).value == "([0, 1, 2, 3], '/dev/null', '')"

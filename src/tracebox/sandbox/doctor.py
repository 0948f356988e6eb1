"""What confines a session on this machine, layer by layer, measured rather than assumed.

:func:`diagnose` starts a real :class:`~tracebox.Runtime`, runs a probe inside a session (it
reads namespace inodes, id maps, ``/proc/self/status`` and rlimits, tries a forbidden syscall,
a network connect and a write to ``/usr``) and compares every fact with what the host and the
:class:`~tracebox.Limits` expect. Each layer becomes a :class:`Check`; a layer that is not
active says why. If the runtime cannot start at all, that reason is the failing check.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict

from tracebox.errors import TraceboxError
from tracebox.sandbox import cgroups, seccomp
from tracebox.sandbox._linux import NAMESPACE_NAMES
from tracebox.session.runtime import Runtime
from tracebox.types import Limits, RunResult

__all__ = ["NAMESPACES", "Check", "Report", "diagnose"]

NAMESPACES = NAMESPACE_NAMES
MB = 1 << 20
_CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")

# Runs inside the sandbox: gathers plain-data facts only; the host judges them.
PROBE = r"""
def _probe(host_marker, namespaces):
    import ctypes, os, resource, socket

    def attempt(action):
        try:
            action()
        except OSError as e:
            return e.errno
        return 0

    def write(path):
        with open(path, "w") as f:
            f.write("x")

    facts = {"ns": {}, "status": {}, "rlimits": {}}
    for name in namespaces:
        try:
            facts["ns"][name] = os.readlink(f"/proc/self/ns/{name}")
        except OSError as e:
            facts["ns"][name] = f"unreadable: {e}"
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/self/{name}") as f:
            facts[name] = f.read()
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            facts["status"][key] = value.strip()
    for name in ("AS", "NPROC", "NOFILE", "FSIZE", "CORE", "CPU", "MEMLOCK", "MSGQUEUE"):
        facts["rlimits"][name] = list(resource.getrlimit(getattr(resource, "RLIMIT_" + name)))
    libc = ctypes.CDLL(None, use_errno=True)
    facts["unshare"] = [libc.unshare(0x10000000), ctypes.get_errno()]  # CLONE_NEWUSER
    facts["pid"], facts["ppid"] = os.getpid(), os.getppid()
    facts["visible_pids"] = sum(p.isdigit() for p in os.listdir("/proc"))
    facts["uid"], facts["gid"], facts["groups"] = os.getuid(), os.getgid(), os.getgroups()
    facts["hostname"] = socket.gethostname()
    facts["interfaces"] = sorted(name for _, name in socket.if_nameindex())
    facts["connect"] = attempt(lambda: socket.create_connection(("1.1.1.1", 53), timeout=2))
    facts["write_usr"] = attempt(lambda: write("/usr/.tracebox-doctor"))
    facts["write_root"] = attempt(lambda: write("/.tracebox-doctor"))
    facts["write_workspace"] = attempt(lambda: write("/workspace/.tracebox-doctor"))
    st = os.statvfs("/workspace")
    facts["workspace_bytes"] = st.f_blocks * st.f_frsize
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split(" - ") for line in f]
    facts["workspace_fs"] = [post.split()[0] for pre, post in mounts
                             if pre.split()[4] == "/workspace"]
    facts["host_marker_visible"] = os.path.exists(host_marker)
    facts["root_listing"] = sorted(os.listdir("/"))
    return facts

_tracebox_doctor = _probe(host_marker, namespaces)
"""


class Check(BaseModel):
    """One confinement layer: is it active here, and what was seen (or why it is not)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layer: str
    ok: bool
    detail: str
    required: bool = True
    """False for facts shown for information, or layers the runtime can do without."""


class Report(BaseModel):
    """Every check, in display order; ``ok`` when every required layer is active."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: bool
    checks: list[Check]

    @classmethod
    def of(cls, checks: list[Check]) -> Report:
        return cls(ok=all(c.ok for c in checks if c.required), checks=checks)


def diagnose(limits: Limits | None = None) -> Report:
    """Start a runtime, probe a session, judge each layer; a missing layer never raises."""
    limits = limits or Limits()
    checks = host_checks()
    support = cgroups.probe()
    try:
        facts, result, python = _probe_sandbox(limits)
    except (TraceboxError, OSError) as exc:
        failure = Check(layer="runtime", ok=False, detail=f"{type(exc).__name__}: {exc}")
        return Report.of([*checks, failure, *cgroup_checks(support, None)])
    checks.append(
        Check(layer="runtime", ok=True, detail=f"session started; sandbox Python {python}")
    )
    if facts is None:
        error = result.error
        detail = error.traceback or error.message if error else result.status
        checks.append(Check(layer="probe", ok=False, detail=f"the probe failed: {detail}"))
        return Report.of([*checks, *cgroup_checks(support, None)])
    host = _host_namespaces()
    return Report.of(
        [
            *checks,
            *(namespace_check(name, facts, host.get(name, "")) for name in NAMESPACES),
            uid_map_check(facts),
            capabilities_check(facts),
            no_new_privs_check(facts),
            seccomp_check(facts),
            rlimits_check(facts, limits),
            *cgroup_checks(support, result.peak_memory_mb),
            network_check(facts),
            filesystem_check(facts, limits),
        ]
    )


# -- gathering ------------------------------------------------------------------------------


@contextlib.contextmanager
def _host_marker() -> Iterator[str]:
    """A file in the host's /tmp that the sandbox must not see."""
    fd, path = tempfile.mkstemp(prefix="tracebox-doctor-", dir="/tmp")
    os.close(fd)
    try:
        yield path
    finally:
        os.unlink(path)


def _probe_sandbox(limits: Limits) -> tuple[dict[str, Any] | None, RunResult, str]:
    """Facts from inside a fresh session (None if the probe failed), its run, its Python."""
    with _host_marker() as marker, Runtime(limits=limits, pool_size=0) as rt:
        session = rt.session()
        session.put("host_marker", marker)
        session.put("namespaces", list(NAMESPACES))
        result = session.run(PROBE)
        facts = session.get("_tracebox_doctor") if result.ok else None
        return facts, result, rt.python_version.split()[0]


def _host_namespaces() -> dict[str, str]:
    found = {}
    for name in NAMESPACES:
        with contextlib.suppress(OSError):
            found[name] = os.readlink(f"/proc/self/ns/{name}")
    return found


def _errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code)) if code else "succeeded"


# -- judging --------------------------------------------------------------------------------


def host_checks() -> list[Check]:
    root = os.geteuid() == 0
    return [
        Check(
            layer="host: root",
            ok=root,
            detail=(
                "running as root (needed for namespaces, uid maps and cgroups)"
                if root
                else f"running as uid {os.geteuid()}: tracebox needs root to confine workers"
            ),
        ),
        Check(
            layer="host: kernel",
            ok=True,
            required=False,
            detail=f"Linux {platform.release()} ({platform.machine()})",
        ),
        Check(
            layer="host: python",
            ok=True,
            required=False,
            detail=f"{platform.python_implementation()} {sys.version.split()[0]}",
        ),
    ]


def namespace_check(name: str, facts: dict[str, Any], host_link: str) -> Check:
    inside = str(facts["ns"].get(name, "missing"))
    layer = f"namespace: {name}"
    if not host_link:
        return Check(layer=layer, ok=False, detail=f"cannot read the host's /proc/self/ns/{name}")
    if inside == host_link:
        return Check(layer=layer, ok=False, detail=f"shared with the host ({inside})")
    if name == "pid" and facts.get("ppid") != 1:
        detail = f"private, but the worker's parent is pid {facts.get('ppid')}, not the init"
        return Check(layer=layer, ok=False, detail=detail)
    extra = {
        "pid": (
            f"; the worker is pid {facts['pid']}, under the sandbox's init (pid 1), "
            f"{facts['visible_pids']} process(es) visible"
        ),
        "uts": f"; hostname {facts['hostname']!r} (host: {socket.gethostname()!r})",
        "net": f"; interfaces: {', '.join(facts['interfaces']) or 'none'}",
    }.get(name, "")
    return Check(layer=layer, ok=True, detail=f"private ({inside}, host {host_link}){extra}")


def _parse_map(text: str) -> list[tuple[int, int, int]]:
    rows = [line.split() for line in text.strip().splitlines()]
    return [(int(a), int(b), int(c)) for a, b, c in rows]


def uid_map_check(facts: dict[str, Any]) -> Check:
    maps = {name: _parse_map(facts[name]) for name in ("uid_map", "gid_map")}
    problems = [
        f"{name} maps {rows}"
        for name, rows in maps.items()
        if len(rows) != 1 or rows[0][2] != 1 or rows[0][1] == 0
    ]
    if facts["uid"] == 0 or facts["groups"]:
        problems.append(f"uid {facts['uid']}, groups {facts['groups']}")
    if problems:
        return Check(layer="uid mapping", ok=False, detail="; ".join(problems))
    inside, host, _ = maps["uid_map"][0]
    return Check(
        layer="uid mapping",
        ok=True,
        detail=(
            f"uid {inside} inside = unprivileged host uid {host}; one id mapped, "
            "root is not mapped, no supplementary groups"
        ),
    )


def capabilities_check(facts: dict[str, Any]) -> Check:
    status = facts["status"]
    held = {key: status.get(key, "?") for key in _CAP_SETS if int(status.get(key, "1"), 16)}
    if held:
        return Check(layer="capabilities", ok=False, detail=f"still held: {held}")
    return Check(
        layer="capabilities",
        ok=True,
        detail=(
            "all dropped: effective, permitted, inheritable, bounding and ambient sets are empty"
        ),
    )


def no_new_privs_check(facts: dict[str, Any]) -> Check:
    on = facts["status"].get("NoNewPrivs") == "1"
    detail = "set: setuid binaries and file capabilities cannot raise privileges"
    return Check(layer="no_new_privs", ok=on, detail=detail if on else "not set")


def seccomp_check(facts: dict[str, Any]) -> Check:
    mode = facts["status"].get("Seccomp", "0")
    ret, err = facts["unshare"]
    count = len(seccomp.blocked_syscalls())
    if mode != "2":
        return Check(layer="seccomp", ok=False, detail=f"no filter (Seccomp: {mode})")
    if ret == 0 or err != errno.EPERM:
        return Check(
            layer="seccomp",
            ok=False,
            detail=(f"filter loaded but unshare(CLONE_NEWUSER) {_errno_name(err if ret else 0)}"),
        )
    return Check(
        layer="seccomp",
        ok=True,
        detail=(
            f"filter active: {count} syscalls blocked, plus namespace flags of clone, TIOCSTI and "
            "personality changes; unshare(CLONE_NEWUSER) -> EPERM"
        ),
    )


def _expected_rlimits(limits: Limits) -> dict[str, tuple[int, str]]:
    return {
        "AS": (limits.memory_mb * MB, f"address space {limits.memory_mb} MB"),
        "NPROC": (limits.max_processes, f"processes {limits.max_processes}"),
        "NOFILE": (limits.max_open_files, f"open files {limits.max_open_files}"),
        "FSIZE": (limits.disk_mb * MB, f"file size {limits.disk_mb} MB"),
        "CORE": (0, "core dumps 0"),
        "CPU": (max(1, int(limits.session_cpu_seconds)), "CPU"),
        "MEMLOCK": (0, "locked memory 0"),
        "MSGQUEUE": (0, "message queues 0"),
    }


def rlimits_check(facts: dict[str, Any], limits: Limits) -> Check:
    expected = _expected_rlimits(limits)
    seen = {name: tuple(value) for name, value in facts["rlimits"].items()}
    wrong = [
        f"RLIMIT_{name} is {seen.get(name)}, expected {value}"
        for name, (value, _) in expected.items()
        if seen.get(name) != (value, value)
    ]
    if wrong:
        return Check(layer="rlimits", ok=False, detail="; ".join(wrong))
    shown = [label for _, label in expected.values()]
    shown[5] = f"CPU {expected['CPU'][0]} s per process"
    return Check(layer="rlimits", ok=True, detail="hard limits set: " + ", ".join(shown))


def cgroup_checks(support: cgroups.CgroupSupport, peak_mb: float | None) -> list[Check]:
    """One check per controller. Not required: without cgroups rlimits still bound each process."""
    where = dict(part.split("=", 1) for part in support.where.split() if "=" in part)
    what = {
        "memory": "memory limit and OOM accounting for the whole session",
        "pids": "process count limit for the whole session",
        "cpu": "CPU accounting across all of the session's processes",
        "freezer": "freezing all of the session's processes at once",
    }
    checks = []
    for controller, reason in support.reasons().items():
        ok = reason is None
        detail = reason or f"{what.get(controller, 'usable')} ({where.get(controller, '?')})"
        if ok and controller == "memory" and peak_mb is not None:
            detail += f"; the probe peaked at {peak_mb:.1f} MB"
        checks.append(Check(layer=f"cgroup: {controller}", ok=ok, detail=detail, required=False))
    return checks


def network_check(facts: dict[str, Any]) -> Check:
    only_lo = facts["interfaces"] == ["lo"]
    blocked = facts["connect"] != 0
    detail = (
        f"interfaces inside: {', '.join(facts['interfaces']) or 'none'}; "
        f"connect to 1.1.1.1:53 -> {_errno_name(facts['connect'])}"
    )
    return Check(layer="network", ok=only_lo and blocked, detail=detail)


def filesystem_check(facts: dict[str, Any], limits: Limits) -> Check:
    problems = []
    for key, path in (("write_usr", "/usr"), ("write_root", "/")):
        if facts[key] == 0:
            problems.append(f"{path} is writable")
    if facts["write_workspace"] != 0:
        problems.append(f"/workspace is not writable ({_errno_name(facts['write_workspace'])})")
    if facts["workspace_fs"] != ["tmpfs"]:
        problems.append(f"/workspace is {facts['workspace_fs'] or 'not a mount'}, not a tmpfs")
    if facts["workspace_bytes"] != limits.disk_mb * MB:
        problems.append(
            f"/workspace holds {facts['workspace_bytes']} bytes, not {limits.disk_mb} MB"
        )
    if facts["host_marker_visible"]:
        problems.append("a file in the host's /tmp is visible")
    if problems:
        return Check(layer="filesystem", ok=False, detail="; ".join(problems))
    return Check(
        layer="filesystem",
        ok=True,
        detail=(
            f"read-only root (writing /usr -> {_errno_name(facts['write_usr'])}); private "
            f"/workspace tmpfs of {limits.disk_mb} MB; host /tmp invisible; "
            f"/ holds {', '.join(facts['root_listing'])}"
        ),
    )

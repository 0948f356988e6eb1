"""Confine the calling process: the last trusted code a worker runs before user code.

Runs in a fresh worker that is already PID 1 of new user, pid, mount, net, ipc, uts and cgroup
namespaces, with its user namespace mapping only ``SANDBOX_UID`` to an unprivileged host uid.
Order matters: become the sandbox user while keeping namespace capabilities, mount the private
filesystems, then drop every capability, set no_new_privs, rlimits, close inherited
descriptors, and load the seccomp filter last (it forbids the mount calls used before it).
Any failure raises; the caller reports it and exits, so nothing runs half-confined.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
from dataclasses import dataclass

from tracebox.sandbox import _linux as L
from tracebox.sandbox import seccomp
from tracebox.sandbox.rootfs import SANDBOX_UID, SESSION_MOUNT, WORKSPACE

ENV = {
    "HOME": WORKSPACE,
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TMPDIR": "/tmp",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
    "SHELL": "/bin/sh",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}

MB = 1 << 20


@dataclass(frozen=True)
class SpawnLimits:
    """The limits a worker is started with (``Limits.spawn_key``)."""

    memory_mb: int
    disk_mb: int
    max_processes: int
    max_open_files: int
    session_cpu_seconds: float
    checkpoint_memory_mb: int = 0


def _mount_private_dirs(disk_mb: int, stashed: list[tuple[str, str]]) -> None:
    opts = f"size={disk_mb}m,nr_inodes=65536,mode=0755,uid={SANDBOX_UID},gid={SANDBOX_UID}"
    L.mount("tmpfs", SESSION_MOUNT, "tmpfs", L.MS_NOSUID | L.MS_NODEV, opts)
    for sub, target in (("work", WORKSPACE), ("tmp", "/tmp"), ("tmp", "/var/tmp")):
        src = f"{SESSION_MOUNT}/{sub}"
        os.makedirs(src, mode=0o1777 if sub == "tmp" else 0o755, exist_ok=True)
        L.mount(src, target, None, L.MS_BIND, None)
    os.chmod("/tmp", 0o1777)
    for stash, path in stashed:  # Python directories that lived under /tmp on the host
        os.makedirs(path, exist_ok=True)
        L.mount(stash, path, None, L.MS_BIND | L.MS_REC, None)
        flags = L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV
        L.mount(None, path, None, flags, None)
    L.mount("proc", "/proc", "proc", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC, None)


def _set_rlimits(limits: SpawnLimits) -> None:
    cpu = max(1, int(limits.session_cpu_seconds))
    for res, value in (
        (resource.RLIMIT_AS, limits.memory_mb * MB),
        (resource.RLIMIT_NPROC, limits.max_processes),
        (resource.RLIMIT_NOFILE, limits.max_open_files),
        (resource.RLIMIT_FSIZE, limits.disk_mb * MB),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_MEMLOCK, 0),
        (resource.RLIMIT_MSGQUEUE, 0),
    ):
        resource.setrlimit(res, (value, value))


def _arrange_fds(ctrl: int, out: int, err: int) -> socket.socket:
    """stdin is /dev/null, stdout/stderr go to the host's pipes, the channel is fd 3."""
    devnull = os.open("/dev/null", os.O_RDONLY)
    # Move the three host descriptors above the range we are about to fill, then place them.
    hi = [os.dup(fd) for fd in (devnull, out, err, ctrl)]
    for fd in hi:
        os.set_inheritable(fd, True)
    for target, fd in zip((0, 1, 2, 3), hi, strict=True):
        os.dup2(fd, target)
    os.closerange(4, 1 << 20)
    os.set_inheritable(3, False)
    return socket.socket(fileno=3)


def confine(
    limits: SpawnLimits, ctrl: int, out: int, err: int, stashed: list[tuple[str, str]]
) -> socket.socket:
    """Confine this process; returns the channel to the host on success."""
    os.setgroups([])
    os.setresgid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
    # No uid 0 is mapped in this namespace, so changing uid keeps the namespace capabilities
    # we still need for the mounts below; they are dropped explicitly right after.
    os.setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
    L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which would clear it
    _mount_private_dirs(limits.disk_mb, stashed)
    socket.sethostname("sandbox")
    L.drop_all_capabilities()
    L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
    _set_rlimits(limits)
    os.chdir(WORKSPACE)
    os.environ.clear()
    os.environ.update(ENV)
    os.umask(0o022)
    channel = _arrange_fds(ctrl, out, err)
    seccomp.install_filter()
    return channel


def report() -> dict[str, object]:
    """What this process is confined by, read back from the kernel (sent to the host at start)."""
    eff, bnd = L.capabilities_of_self()
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Seccomp", "NoNewPrivs", "Uid", "Gid", "Groups"):
                status[key] = value.split()
    return {
        "cap_effective": eff,
        "cap_bounding": bnd,
        "seccomp": status.get("Seccomp", ["0"])[0] == "2",
        "no_new_privs": status.get("NoNewPrivs", ["0"])[0] == "1",
        "uid": int(status["Uid"][0]),
        "groups": status.get("Groups", []),
        "pid": os.getpid(),
        "net_interfaces": sorted(name for _, name in socket.if_nameindex()),
    }

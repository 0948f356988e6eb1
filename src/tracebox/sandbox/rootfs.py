"""The filesystem a worker sees: a read-only view of what Python needs, nothing else.

``python_paths`` runs on the host and lists what to show. ``build`` runs once in the template
process (real root, in its own mount namespace): it assembles a tmpfs root out of read-only,
nosuid bind mounts, then pivots into it. Every worker forked later starts from this view and
adds only its private, size-limited ``/workspace`` and ``/tmp``.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from pathlib import Path

from tracebox.sandbox import _linux as L

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding tracebox
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_PATHS = ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives", "/etc/mime.types")
DEVICES = ("null", "zero", "full", "random", "urandom")
SESSION_MOUNT = "/.session"
STASH = "/.python"  # Python directories that live under a private mount point wait here
PRIVATE = ("/tmp", "/var/tmp")  # each worker mounts its own over these
WORKSPACE = "/workspace"
SANDBOX_UID = 1000

_PASSWD = f"root:x:0:0::/:/usr/sbin/nologin\nsandbox:x:{SANDBOX_UID}:{SANDBOX_UID}::{WORKSPACE}:/bin/sh\nnobody:x:65534:65534::/:/usr/sbin/nologin\n"  # noqa: E501
_GROUP = f"root:x:0:\nsandbox:x:{SANDBOX_UID}:\nnogroup:x:65534:\n"
_HOSTS = "127.0.0.1 localhost\n::1 localhost\n"


def python_paths(extra: tuple[str, ...] = ()) -> list[str]:
    """Directories the interpreter, its standard library and site-packages live in.

    Deliberately not every ``sys.path`` entry: those include the host's working directory and
    script folders, which must not leak into the sandbox. ``extra`` adds directories on purpose.
    """
    candidates = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        PACKAGE_ROOT,
        *sysconfig.get_paths().values(),
        *site.getsitepackages(),
        *extra,
    ]
    paths = {os.path.realpath(p) for p in candidates if p and os.path.isdir(p)}
    return _outermost(paths)


def _outermost(paths: set[str]) -> list[str]:
    """Drop paths inside another listed path, and paths already under a system directory."""
    result: list[str] = []
    for p in sorted(paths):
        if any(p == q or p.startswith(q.rstrip("/") + "/") for q in (*result, *SYSTEM_PATHS)):
            continue
        result.append(p)
    return result


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _bind_readonly(src: str, root: str, dst: str | None = None) -> None:
    dst = root + (dst or src)
    if os.path.isdir(src):
        _mkdirs(dst)
    else:
        _mkdirs(os.path.dirname(dst))
        with open(dst, "w"):
            pass
    L.mount(src, dst, None, L.MS_BIND | L.MS_REC, None)
    L.mount(
        None, dst, None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV, None
    )


def _cover(path: str, root: str, stashed: list[tuple[str, str]]) -> None:
    """Mount something empty over ``path`` where the sandbox root shows it (if it does)."""
    path = os.path.realpath(path)
    where = root + path
    for stash, src in stashed:
        if _under(path, (src,)):
            where = root + stash + path[len(src) :]
    if os.path.isdir(where):
        L.mount(
            "tmpfs", where, "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_RDONLY, "size=4k,mode=0555"
        )
    elif os.path.isfile(where):
        L.mount("/dev/null", where, None, L.MS_BIND, None)
        flags = L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV
        L.mount(None, where, None, flags, None)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def build(root: str, python: list[str], hide: list[str] | None = None) -> list[tuple[str, str]]:
    """Assemble the sandbox root at ``root`` (an empty directory) and pivot into it.

    Returns ``(stash, path)`` for Python directories under ``/tmp`` (a venv in a temporary
    directory, a checkout there): each worker's private ``/tmp`` would hide them, so they are
    mounted in the stash and each worker binds them back after mounting its own ``/tmp``.

    ``hide``: host paths inside what the sandbox sees (a dataset shipped in site-packages,
    say) that it must not see: an empty directory or file is mounted over each.
    """
    stashed: list[tuple[str, str]] = []
    L.mount(None, "/", None, L.MS_REC | L.MS_PRIVATE, None)
    L.mount("tmpfs", root, "tmpfs", L.MS_NOSUID | L.MS_NODEV, "size=8m,mode=0755")
    for src in SYSTEM_PATHS:
        if os.path.islink(src):
            os.symlink(os.readlink(src), root + src)
        elif os.path.isdir(src):
            _bind_readonly(src, root)
    for src in python:
        if _under(src, PRIVATE):
            stashed.append((f"{STASH}/{len(stashed)}", src))
            _bind_readonly(src, root, stashed[-1][0])
        else:
            _bind_readonly(src, root)
    for path in hide or ():
        _cover(path, root, stashed)
    _mkdirs(root + "/etc")
    for src in ETC_PATHS:
        if os.path.exists(src):
            _bind_readonly(src, root)
    _write(root + "/etc/passwd", _PASSWD)
    _write(root + "/etc/group", _GROUP)
    _write(root + "/etc/hosts", _HOSTS)
    _write(root + "/etc/hostname", "sandbox\n")
    _mkdirs(root + "/dev")
    for dev in DEVICES:
        with open(f"{root}/dev/{dev}", "w"):
            pass
        L.mount(f"/dev/{dev}", f"{root}/dev/{dev}", None, L.MS_BIND, None)
        L.mount(None, f"{root}/dev/{dev}", None, L.MS_BIND | L.MS_REMOUNT | L.MS_NOSUID, None)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("shm", "/tmp"),
    ):
        os.symlink(target, f"{root}/dev/{name}")
    # The host's /proc stays mounted until each worker covers it with its own: the kernel lets
    # a user namespace mount procfs only where a full procfs is already visible.
    _mkdirs(root + "/proc")
    L.mount("/proc", root + "/proc", None, L.MS_BIND | L.MS_REC, None)
    for d in (SESSION_MOUNT, WORKSPACE, "/tmp", "/var/tmp"):
        _mkdirs(root + d)
    L.mount(None, root, None, L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV, None)
    os.chdir(root)
    L.pivot_root(".", ".")
    L.umount2(".", L.MNT_DETACH)
    os.chdir("/")
    return stashed

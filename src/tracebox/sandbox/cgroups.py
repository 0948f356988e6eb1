"""Per-session cgroups: memory and pids limits plus CPU/memory accounting for one worker.

A :class:`SessionCgroup` is created by the trusted host before the worker runs user code. It
holds the worker and, by inheritance, every process the worker forks; limits therefore apply to
the whole session, and :meth:`SessionCgroup.kill_all` reaches processes that escaped the worker's
process group.

Both layouts are supported and detected from ``/proc/self/mountinfo``:

* cgroup v1 (or hybrid): one hierarchy per controller; ``memory``, ``pids`` and ``cpuacct`` are
  each optional. Cgroups live at ``<mount>/tracebox/<name>`` in each hierarchy.
* cgroup v2: one directory ``<mount>/tracebox/<name>``; ``memory`` and ``pids`` are enabled in
  ``cgroup.subtree_control`` on the way down. CPU time comes from the core ``cpu.stat``, which
  needs no controller.

:meth:`SessionCgroup.add` moves one process: children it forked *before* the move stay outside,
and memory it already allocated stays charged elsewhere (charge moving is deprecated in v1 and
refused with EINVAL by recent kernels, e.g. 6.18; v2 never had it). So hold the worker (e.g. on a
pipe) until ``add()`` returns, or have it write ``0`` into each of
:attr:`SessionCgroup.procs_files` itself before exec.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from tracebox.errors import SandboxError

__all__ = ["CgroupSupport", "SessionCgroup", "probe", "remove_stale"]

CONTROLLERS = ("memory", "pids", "cpu", "freezer")
_V1_NAMES = {"memory": "memory", "pids": "pids", "cpu": "cpuacct", "freezer": "freezer"}
_V1_PROBE_FILE = {
    "memory": "memory.limit_in_bytes",
    "pids": "pids.max",
    "cpu": "cpuacct.usage",
    "freezer": "freezer.state",
}
_V2_CORE = {"cpu": "cpu.stat", "freezer": "cgroup.freeze"}  # built into every v2 cgroup
_PARENT = "tracebox"
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_CLOSE_TIMEOUT = 2.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class CgroupSupport:
    """Which controllers can be used: ``None`` means active, a string says why not."""

    memory: str | None
    pids: str | None
    cpu: str | None
    freezer: str | None
    where: str = ""  # e.g. "memory=v1:/sys/fs/cgroup/memory pids=v1:/sys/fs/cgroup/pids"

    def reasons(self) -> dict[str, str | None]:
        return {"memory": self.memory, "pids": self.pids, "cpu": self.cpu, "freezer": self.freezer}

    def active(self) -> list[str]:
        return [c for c, reason in self.reasons().items() if reason is None]

    def summary(self) -> str:
        parts = [f"{c}: {'ok' if r is None else r}" for c, r in self.reasons().items()]
        return "cgroups " + "; ".join(parts) + (f" [{self.where}]" if self.where else "")


@dataclass(frozen=True)
class _Hierarchy:
    mount: str
    version: int  # 1 or 2

    @property
    def parent(self) -> str:
        return os.path.join(self.mount, _PARENT)


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, super options) of cgroup mounts, whole-hierarchy mounts first."""
    found: list[tuple[bool, str, str, str]] = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                fields, tail = pre.split(), post.split()
                if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                    found.append((fields[3] != "/", _unescape(fields[4]), tail[0], tail[2]))
    except OSError:
        with contextlib.suppress(OSError), open("/proc/mounts") as f:
            for line in f:
                p = line.split()
                if len(p) >= 4 and p[2] in ("cgroup", "cgroup2"):
                    found.append((False, _unescape(p[1]), p[2], p[3]))
    found.sort(key=lambda m: m[0])  # stable: keeps mount order among equals
    return [(mnt, fstype, opts) for _, mnt, fstype, opts in found]


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _parse_int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _parse_key(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key and parts[1].isdigit():
            return int(parts[1])
    return None


def _read_int(path: str) -> int | None:
    return _parse_int(_read(path))


def _read_key(path: str, key: str) -> int | None:
    return _parse_key(_read(path), key)


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _enable_v2(cgroup: str, controller: str) -> None:
    control = os.path.join(cgroup, "cgroup.subtree_control")
    if controller not in (_read(control) or "").split():
        _write(control, f"+{controller}")


def _prepare(controller: str, h: _Hierarchy) -> None:
    """Create ``tracebox/`` in the hierarchy and check the controller is usable under it."""
    os.makedirs(h.parent, exist_ok=True)
    if h.version == 2 and controller not in _V2_CORE:
        _enable_v2(h.mount, controller)
        _enable_v2(h.parent, controller)
    if h.version == 1:
        probe_file = _V1_PROBE_FILE[controller]
    else:
        probe_file = _V2_CORE.get(controller, f"{controller}.max")
    if not os.path.exists(os.path.join(h.parent, probe_file)):
        raise OSError(f"{probe_file} missing under {h.parent}")


@functools.cache
def _layout() -> tuple[CgroupSupport, tuple[tuple[str, _Hierarchy], ...]]:
    mounts = _mounts()
    v2 = next((mnt for mnt, fstype, _ in mounts if fstype == "cgroup2"), None)
    v2_offers = (_read(os.path.join(v2, "cgroup.controllers")) or "").split() if v2 else []
    reasons: dict[str, str | None] = {}
    chosen: list[tuple[str, _Hierarchy]] = []
    for ctl in CONTROLLERS:
        v1 = next(
            (m for m, fs, opts in mounts if fs == "cgroup" and _V1_NAMES[ctl] in opts.split(",")),
            None,
        )
        if v1 is not None:
            h = _Hierarchy(v1, 1)
        elif v2 is not None and (ctl in _V2_CORE or ctl in v2_offers):
            h = _Hierarchy(v2, 2)
        else:
            where = f"cgroup2 at {v2} offers {v2_offers or 'nothing'}" if v2 else "no cgroup2"
            reasons[ctl] = f"no {ctl} controller (no cgroup v1 {_V1_NAMES[ctl]} mount; {where})"
            continue
        try:
            _prepare(ctl, h)
        except OSError as e:
            detail = e.strerror or str(e)
            reasons[ctl] = f"no writable {ctl} controller (cgroup v{h.version} {h.mount}: {detail})"
            continue
        reasons[ctl] = None
        chosen.append((ctl, h))
    where = " ".join(f"{c}=v{h.version}:{h.mount}" for c, h in chosen)
    support = CgroupSupport(**reasons, where=where)
    return support, tuple(chosen)


def probe(*, refresh: bool = False) -> CgroupSupport:
    """What this machine allows (cached); never raises.

    Probing creates the ``tracebox/`` parent directories (and, on v2, enables ``memory`` and
    ``pids`` in ``cgroup.subtree_control`` down to them): only a real attempt tells.
    """
    if refresh:
        _layout.cache_clear()
    try:
        return _layout()[0]
    except Exception as e:  # defensive: probing must never break the caller
        reason = f"cgroup probe failed: {e!r}"
        return CgroupSupport(reason, reason, reason, reason)


def remove_stale(is_stale: Callable[[str], bool]) -> list[str]:
    """Kill what is inside, and remove, every session cgroup whose name ``is_stale`` accepts.

    A host killed without cleanup leaves its (by then empty) cgroups behind; the next runtime
    calls this with a predicate recognising names of runtimes that are gone. Never raises.
    """
    removed: list[str] = []
    with contextlib.suppress(Exception):
        for ctl, h in _layout()[1]:
            with contextlib.suppress(OSError):
                for name in os.listdir(h.parent):
                    path = os.path.join(h.parent, name)
                    if not os.path.isdir(path) or not is_stale(name):
                        continue
                    group = SessionCgroup(name, {ctl: (path, h.version)}, probe())
                    with contextlib.suppress(SandboxError):
                        group.close()
                        removed.append(path)
    return removed


def _validate_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name or name == ".":
        raise ValueError(f"invalid cgroup name {name!r}: want [A-Za-z0-9_.-]{{1,128}}, no '..'")


class SessionCgroup:
    """The cgroup(s) of one worker: created by the trusted host, holding the worker and every
    process it forks. Not thread-safe; metric reads return ``None`` once the cgroup is gone."""

    def __init__(self, name: str, dirs: dict[str, tuple[str, int]], support: CgroupSupport):
        self.name = name
        self.support = support  # of this cgroup: a controller can fail here after probe() said ok
        self._dirs = dirs  # controller -> (directory, cgroup version)
        self._peak_fd: int | None = None
        self._fds: dict[tuple[str, int], int] = {}  # metric files kept open: a run reads ~6
        self._paths: dict[tuple[str, str], str | None] = {}
        self._peak_baseline: tuple[int, int] | None = None  # v2 fallback: (peak, usage) at reset
        self._closed = False

    @classmethod
    def create(cls, name: str, *, memory_bytes: int | None, pids_max: int | None) -> SessionCgroup:
        """Create ``<root>/tracebox/<name>`` in each usable hierarchy and apply the limits.

        A controller the machine lacks is simply absent (see :attr:`support`). A limit that was
        requested for an available controller but cannot be applied raises
        :class:`SandboxError` after removing every directory created here.
        """
        _validate_name(name)
        for label, value in (("memory_bytes", memory_bytes), ("pids_max", pids_max)):
            if value is not None and (isinstance(value, bool) or value <= 0):
                raise ValueError(f"{label} must be a positive int or None, not {value!r}")
        support, chosen = _layout()
        reasons = support.reasons()
        wanted = {"memory": memory_bytes is not None, "pids": pids_max is not None}
        made: list[str] = []
        dirs: dict[str, tuple[str, int]] = {}
        try:
            for ctl, h in chosen:
                path = os.path.join(h.parent, name)
                try:
                    _prepare(ctl, h)  # tracebox/ may have been removed since probe()
                    if path not in made:
                        _mkdir_fresh(path)
                        made.append(path)
                except OSError as e:
                    reasons[ctl] = f"cannot create {path}: {e.strerror or e}"
                    if wanted.get(ctl):
                        raise SandboxError(f"{ctl} limit requested but {reasons[ctl]}") from e
                    continue
                dirs[ctl] = (path, h.version)
            if memory_bytes is not None and "memory" in dirs:
                _apply_memory(*dirs["memory"], memory_bytes)
            if pids_max is not None and "pids" in dirs:
                _apply_pids(dirs["pids"][0], pids_max)
        except BaseException:
            for path in reversed(made):
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            raise
        support = CgroupSupport(**reasons, where=support.where)
        return cls(name, dirs, support)

    def _fd(self, path: str, mode: int) -> int:
        fd = self._fds.get((path, mode))
        if fd is None:
            fd = self._fds[(path, mode)] = os.open(path, mode | os.O_CLOEXEC)
        return fd

    def _read(self, path: str) -> str | None:
        """Read a metric through a cached descriptor (cgroup files regenerate on each pread)."""
        try:
            return os.pread(self._fd(path, os.O_RDONLY), 4096, 0).decode()
        except OSError:
            return None

    def _read_int(self, path: str) -> int | None:
        return _parse_int(self._read(path))

    def _read_key(self, path: str, key: str) -> int | None:
        return _parse_key(self._read(path), key)

    def _close_fds(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    # -- membership ---------------------------------------------------------------------------

    @property
    def paths(self) -> dict[str, str]:
        """Controller -> directory of this cgroup (controllers absent here are missing)."""
        return {ctl: d for ctl, (d, _) in self._dirs.items()}

    @property
    def procs_files(self) -> tuple[str, ...]:
        """``cgroup.procs`` of every directory: a child may write ``0`` to each to join."""
        return tuple(os.path.join(d, "cgroup.procs") for d in self._unique_dirs())

    def _unique_dirs(self) -> list[str]:
        return list(dict.fromkeys(d for d, _ in self._dirs.values()))

    def _file(self, controller: str, v1: str, v2: str) -> str | None:
        key = (controller, v1)
        if key not in self._paths:  # metrics are read on every request: join paths once
            found = self._dirs.get(controller)
            self._paths[key] = (
                None if found is None else os.path.join(found[0], v1 if found[1] == 1 else v2)
            )
        return self._paths[key]

    def tasks(self) -> int | None:
        """Processes and threads inside right now (the pids controller's count)."""
        path = self._file("pids", "pids.current", "pids.current")
        return None if path is None else self._read_int(path)

    def add(self, pid: int) -> None:
        """Move process ``pid`` (the whole thread group) into every hierarchy."""
        for procs in self.procs_files:
            try:
                _write(procs, str(pid))
            except OSError as e:
                raise SandboxError(f"cannot move pid {pid} into {procs}: {e.strerror}") from e

    def members(self) -> list[int]:
        """Processes inside, read from one hierarchy through a cached descriptor (fast path).

        Every process joins all hierarchies at once and children inherit them all, so one
        listing is enough between requests; :meth:`pids` reads them all.
        """
        procs = self.procs_files
        text = self._read(procs[0]) if procs else None
        return [int(p) for p in (text or "").split() if p.isdigit()]

    def pids(self) -> list[int]:
        """Processes currently inside (union over hierarchies)."""
        found: set[int] = set()
        for procs in self.procs_files:
            found.update(int(p) for p in (_read(procs) or "").split() if p.isdigit())
        return sorted(found)

    # -- metrics ------------------------------------------------------------------------------

    def cpu_seconds(self) -> float | None:
        """Total CPU time of every process that was ever inside (while inside)."""
        path = self._file("cpu", "cpuacct.usage", "cpu.stat")
        if path is None:
            return None
        if self._dirs["cpu"][1] == 1:
            ns = self._read_int(path)
            return None if ns is None else ns / 1e9
        usec = self._read_key(path, "usage_usec")
        return None if usec is None else usec / 1e6

    def memory_bytes(self) -> int | None:
        path = self._file("memory", "memory.usage_in_bytes", "memory.current")
        return None if path is None else self._read_int(path)

    def peak_memory_bytes(self) -> int | None:
        """High-water mark of memory usage since the last :meth:`reset_peak` (or creation).

        On v2 kernels without resettable ``memory.peak`` (< 6.12) and after a reset, the value
        is exact if usage rose above the old peak, otherwise it is a lower bound:
        ``max(usage at reset, usage now)``.
        """
        if "memory" not in self._dirs:
            return None
        d, version = self._dirs["memory"]
        if version == 1:
            return self._read_int(os.path.join(d, "memory.max_usage_in_bytes"))
        if self._peak_fd is not None:
            try:
                os.lseek(self._peak_fd, 0, os.SEEK_SET)
                return int(os.read(self._peak_fd, 64).split()[0])
            except (OSError, ValueError, IndexError):
                return None
        peak = _read_int(os.path.join(d, "memory.peak"))
        if peak is None or self._peak_baseline is None:
            return peak
        old_peak, usage_at_reset = self._peak_baseline
        return peak if peak > old_peak else max(usage_at_reset, self.memory_bytes() or 0)

    def reset_peak(self) -> None:
        """Restart the high-water mark from current usage (best effort, never raises)."""
        if "memory" not in self._dirs:
            return
        d, version = self._dirs["memory"]
        if version == 1:
            with contextlib.suppress(OSError):
                os.write(self._fd(os.path.join(d, "memory.max_usage_in_bytes"), os.O_WRONLY), b"0")
            return
        # v2, kernel >= 6.12: a write resets the peak *as seen through that file descriptor*.
        try:
            if self._peak_fd is None:
                self._peak_fd = os.open(os.path.join(d, "memory.peak"), os.O_RDWR | os.O_CLOEXEC)
            os.write(self._peak_fd, b"reset\n")
            return
        except OSError:
            self._close_peak_fd()
        peak, usage = _read_int(os.path.join(d, "memory.peak")), self.memory_bytes()
        if peak is not None and usage is not None:
            self._peak_baseline = (peak, usage)

    def oom_kills(self) -> int:
        """Processes killed by the OOM killer for this cgroup's limit; 0 if unknown."""
        path = self._file("memory", "memory.oom_control", "memory.events")
        return (self._read_key(path, "oom_kill") or 0) if path else 0

    # -- freezing -----------------------------------------------------------------------------

    @property
    def can_freeze(self) -> bool:
        return "freezer" in self._dirs

    def _set_frozen(self, frozen: bool) -> None:
        path = self._file("freezer", "freezer.state", "cgroup.freeze")
        if path is None:
            return
        value = (
            (b"FROZEN" if frozen else b"THAWED")
            if self._dirs["freezer"][1] == 1
            else (b"1" if frozen else b"0")
        )
        try:
            os.write(self._fd(path, os.O_WRONLY), value)
        except OSError as e:
            raise SandboxError(f"cannot {'freeze' if frozen else 'thaw'} {path}: {e}") from e

    def freeze(self) -> None:
        """Stop every process and thread inside until :meth:`thaw` (they use no CPU meanwhile)."""
        self._set_frozen(True)

    def thaw(self) -> None:
        self._set_frozen(False)

    # -- teardown -----------------------------------------------------------------------------

    def kill_all(self) -> None:
        """SIGKILL every process inside, repeating until none is left (bounded, ~1 s)."""
        self._kill_until_empty(time.monotonic() + 1.0)

    def _kill_until_empty(self, deadline: float) -> bool:
        for d, version in dict.fromkeys(self._dirs.values()):
            kill_file = os.path.join(d, "cgroup.kill")
            if version == 2 and os.path.exists(kill_file):
                with contextlib.suppress(OSError):
                    _write(kill_file, "1")
        me, delay = os.getpid(), 0.002
        while True:
            inside = [p for p in self.pids() if p != me]
            if not inside:
                return True
            for pid in inside:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(SandboxError):
                self.thaw()  # a frozen process (v1) dies of its SIGKILL only once thawed
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _close_peak_fd(self) -> None:
        if self._peak_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._peak_fd)
            self._peak_fd = None

    def close(self) -> None:
        """Kill everything inside, wait (up to 2 s) and remove the directories. Idempotent.

        Raises :class:`SandboxError` if a directory could not be removed (processes survived).
        """
        if self._closed:
            return
        self._close_peak_fd()
        self._close_fds()
        deadline = time.monotonic() + _CLOSE_TIMEOUT
        self._kill_until_empty(deadline)
        left = self._unique_dirs()
        while left:
            busy: list[str] = []
            for d in left:
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError:
                    busy.append(d)
            left = busy
            if not left or time.monotonic() >= deadline:
                break
            self._kill_until_empty(time.monotonic())
            time.sleep(0.01)
        if left:
            raise SandboxError(f"cgroup {self.name} not removed: {left} (pids {self.pids()})")
        self._closed = True

    def __enter__(self) -> SessionCgroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SessionCgroup({self.name!r}, {self.paths}, closed={self._closed})"


def _mkdir_fresh(path: str) -> None:
    try:
        os.mkdir(path)
    except FileExistsError as e:  # never adopt a directory someone else may be using
        raise SandboxError(f"cgroup {path} already exists") from e


def _apply_memory(d: str, version: int, limit: int) -> None:
    try:
        if version == 1:
            oom = os.path.join(d, "memory.oom_control")
            if _read_key(oom, "oom_kill_disable") != 0:  # inherited; writing warns in dmesg
                _write(oom, "0")
            _write(os.path.join(d, "memory.limit_in_bytes"), str(limit))
            memsw = os.path.join(d, "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):  # memory+swap == memory: no swapping past the limit
                _write(memsw, str(limit))
            else:  # no swap accounting: at least keep this cgroup's anon pages out of swap
                with contextlib.suppress(OSError):
                    _write(os.path.join(d, "memory.swappiness"), "0")
            got = _read_int(os.path.join(d, "memory.limit_in_bytes"))
        else:
            _write(os.path.join(d, "memory.max"), str(limit))
            swap = os.path.join(d, "memory.swap.max")
            if os.path.exists(swap):
                _write(swap, "0")
            got = _read_int(os.path.join(d, "memory.max"))
    except OSError as e:
        raise SandboxError(f"cannot apply memory limit {limit} in {d}: {e.strerror}") from e
    if got is None or got > limit + _PAGE:
        raise SandboxError(f"memory limit {limit} did not apply in {d} (reads {got})")


def _apply_pids(d: str, limit: int) -> None:
    try:
        _write(os.path.join(d, "pids.max"), str(limit))
    except OSError as e:
        raise SandboxError(f"cannot apply pids limit {limit} in {d}: {e.strerror}") from e
    if _read_int(os.path.join(d, "pids.max")) != limit:
        raise SandboxError(f"pids limit {limit} did not apply in {d}")

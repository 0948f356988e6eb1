"""Host-side handle of the template (fork server) that starts workers."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict
from typing import Any

from tracebox.errors import IsolationUnavailable, ProtocolError, SandboxError
from tracebox.sandbox import cgroups, rootfs
from tracebox.sandbox._linux import NAMESPACE_NAMES
from tracebox.sandbox.confine import SpawnLimits
from tracebox.session.process import ExitNotice, WorkerProcess, children
from tracebox.worker import protocol

START_TIMEOUT = 60.0
HELLO_TIMEOUT = 15.0
_UID_RANGE = (1 << 20, 1 << 30)  # host uids for workers: far from any real account


class Template:
    """Starts confined workers by asking a pre-warmed fork server."""

    def __init__(self, *, huge_pages: bool = False, hide: tuple[str, ...] = ()) -> None:
        if os.geteuid() != 0:
            raise IsolationUnavailable(
                "tracebox needs root on the host to set up namespaces, uid maps and cgroups"
            )
        self._prefix = f"rt{os.getpid()}-{secrets.token_hex(3)}"  # see _of_a_dead_runtime
        cgroups.remove_stale(_of_a_dead_runtime)
        self._ids = itertools.count()
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._exits: dict[int, ExitNotice] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._root = tempfile.mkdtemp(prefix="tracebox-root-")
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONPATH": rootfs.PACKAGE_ROOT,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if huge_pages:  # see Runtime: Python's heap in malloc, malloc's heap in huge pages
            env |= {"PYTHONMALLOC": "malloc", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
        self._proc = subprocess.Popen(
            [sys.executable, "-s", "-m", "tracebox.worker.zygote", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C is for the host, not for the sandbox
            stdout=self._log,
            stderr=self._log,
        )
        theirs.close()
        config = {
            "root": self._root,
            "python": rootfs.python_paths(),
            "host_pid": os.getpid(),
            "hide": [os.path.realpath(p) for p in hide],
        }
        self._sock.send(json.dumps(config).encode())
        self._sock.settimeout(START_TIMEOUT)
        try:
            reply = json.loads(self._sock.recv(1 << 16) or b"{}")
        except (OSError, ValueError) as exc:
            reply = {"op": "fatal", "error": repr(exc)}
        self._sock.settimeout(None)
        if reply.get("op") != "ready":
            why = f"{reply.get('error', 'no reply')}{self._log_tail()}"  # before close() ends it
            self.close()
            raise IsolationUnavailable(f"the sandbox template could not start: {why}")
        self.python_version: str = reply["python"]
        self._reader = threading.Thread(target=self._read, name="tracebox-template", daemon=True)
        self._reader.start()

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            self._log.seek(0)
            text = self._log.read()[-2000:].decode(errors="replace").strip()
            return f"\n{text}" if text else ""
        return ""

    def _read(self) -> None:
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            msg = json.loads(data)
            if msg["op"] == "exited":
                with self._lock:  # whoever comes second (exit or spawn) drops the entry
                    notice = self._exits.setdefault(msg["pid"], ExitNotice())
                    if notice.claimed:
                        del self._exits[msg["pid"]]
                notice.status = msg["status"]
                notice.event.set()
            else:
                with self._lock:
                    future = self._pending.pop(msg["id"], None)
                if future is not None:
                    future.set_result(msg)
        with self._lock:  # the template is gone: nobody will reap or answer any more
            for future in self._pending.values():
                future.set_result({"op": "spawn_failed", "error": "the template exited"})
            self._pending.clear()

    def spawn(self, limits: SpawnLimits, name: str) -> WorkerProcess:
        """Start one confined worker; returns once it has confirmed its confinement."""
        if self._closed:
            raise SandboxError("the template is closed")
        group = self._cgroup(name, limits)
        try:
            return self._spawn_into(limits, group)
        except BaseException:
            if group is not None:
                group.close()
            raise

    def _spawn_into(
        self, limits: SpawnLimits, group: cgroups.SessionCgroup | None
    ) -> WorkerProcess:
        host_ch, worker_ch = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        exits_r, exits_w = os.pipe2(os.O_CLOEXEC)
        joins = [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in group.procs_files] if group else []
        request_id = next(self._ids)
        future: Future[dict[str, Any]] = Future()
        uid = secrets.randbelow(_UID_RANGE[1] - _UID_RANGE[0]) + _UID_RANGE[0]
        msg = {"op": "spawn", "id": request_id, "uid": uid, "limits": asdict(limits)}
        with self._lock:
            self._pending[request_id] = future
            try:
                socket.send_fds(
                    self._sock,
                    [json.dumps(msg).encode()],
                    [worker_ch.fileno(), out_w, err_w, exits_w, *joins],
                )
            except OSError as exc:
                self._pending.pop(request_id, None)
                future.set_result({"op": "spawn_failed", "error": f"template unreachable: {exc}"})
            finally:
                worker_ch.close()
                for fd in (out_w, err_w, exits_w, *joins):
                    os.close(fd)
        try:
            reply = future.result(timeout=START_TIMEOUT)
        except TimeoutError:
            reply = {"op": "spawn_failed", "error": f"no answer in {START_TIMEOUT:g} s"}
        if reply["op"] != "spawned":
            for fd in (out_r, err_r, exits_r):
                os.close(fd)
            host_ch.close()
            raise SandboxError(f"could not start a worker: {reply.get('error')}{self._log_tail()}")
        pid = int(reply["pid"])
        with self._lock:
            notice = self._exits.setdefault(pid, ExitNotice())
            notice.claimed = True
            if notice.event.is_set():  # it has already exited
                del self._exits[pid]
        os.set_blocking(exits_r, False)
        init_pidfd = os.pidfd_open(pid)
        worker = WorkerProcess(
            pid=pid,  # init's, until the worker has said hello
            pidfd=os.dup(init_pidfd),
            channel=host_ch,
            stdout=out_r,
            stderr=err_r,
            cgroup=group,
            confinement={},
            exit=notice,
            init=pid,
            init_pidfd=init_pidfd,
            exits=exits_r,
        )
        try:
            worker.confinement = self._hello(worker)
            self._warm_up(worker)
        except BaseException:
            worker.close()
            raise
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
        host_ch.setblocking(False)
        return worker

    def _cgroup(self, name: str, limits: SpawnLimits) -> cgroups.SessionCgroup | None:
        if not cgroups.probe().active():
            return None  # no controller at all: rlimits alone; `tracebox doctor` says why
        # tmpfs pages are charged to the cgroup too, hence the disk allowance
        memory = (limits.memory_mb + limits.disk_mb + limits.checkpoint_memory_mb + 64) << 20
        return cgroups.SessionCgroup.create(
            f"{self._prefix}-{name}", memory_bytes=memory, pids_max=limits.max_processes + 1
        )

    def _hello(self, worker: WorkerProcess) -> dict[str, Any]:
        worker.channel.settimeout(HELLO_TIMEOUT)
        try:
            msg, _ = protocol.recv_blocking(worker.channel)
        except (OSError, EOFError, ValueError) as exc:
            raise SandboxError(f"the worker did not start: {exc!r}{self._log_tail()}") from None
        finally:
            worker.channel.settimeout(None)
        if msg.get("op") == "fatal":
            raise IsolationUnavailable(f"the worker could not be confined: {msg.get('error')}")
        if msg.get("op") != "hello":
            raise ProtocolError(f"unexpected first message from worker: {msg.get('op')!r}")
        report: dict[str, Any] = msg["confinement"]
        kids = children(worker.init)
        if len(kids) != 1:
            raise SandboxError(f"the sandbox's init has {len(kids)} children, not its worker")
        worker.adopt(kids[0])
        if worker.cgroup is not None and worker.pid not in worker.cgroup.pids():
            raise IsolationUnavailable(f"the worker did not join its cgroup {worker.cgroup.name}")
        problems = host_view_problems(worker.pid) + [
            what
            for what, bad in (
                ("capabilities remain", report.get("cap_effective") or report.get("cap_bounding")),
                ("seccomp is not active", not report.get("seccomp")),
                ("no_new_privs is not set", not report.get("no_new_privs")),
                ("a network interface is up", set(report.get("net_interfaces", [])) - {"lo"}),
            )
            if bad
        ]
        if problems:
            raise IsolationUnavailable("worker confinement incomplete: " + "; ".join(problems))
        return report

    def _warm_up(self, worker: WorkerProcess) -> None:
        """One ping before the worker is handed out: proves it serves, and makes the first run
        as fast as the next. No user code has run yet, so the reply can be read plainly."""
        worker.channel.settimeout(HELLO_TIMEOUT)
        try:
            protocol.send(worker.channel, {"op": "ping", "seq": 0, "cpu_seconds": HELLO_TIMEOUT})
            reply, _ = protocol.recv_blocking(worker.channel)
        except (OSError, EOFError, ValueError) as exc:
            raise SandboxError(f"the worker did not answer its first ping: {exc!r}") from None
        finally:
            worker.channel.settimeout(None)
        if (reply.get("op"), reply.get("seq"), reply.get("status")) != ("reply", 0, "ok"):
            raise SandboxError(f"the worker answered its first ping with {reply!r}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._proc.kill()
        deadline = time.monotonic() + 5
        while self._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        shutil.rmtree(self._root, ignore_errors=True)
        self._log.close()


def _of_a_dead_runtime(cgroup_name: str) -> bool:
    """Session cgroups are named ``rt<host pid>-<token>-<worker>``: is that host gone?"""
    match = re.fullmatch(r"rt(\d+)-[0-9a-f]+-.*", cgroup_name)
    return match is not None and not os.path.exists(f"/proc/{match.group(1)}")


def host_view_problems(pid: int) -> list[str]:
    """Check from the host, not trusting the worker: new namespaces and an unprivileged uid."""
    problems = []
    for ns in NAMESPACE_NAMES:
        try:
            if os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/self/ns/{ns}"):
                problems.append(f"the worker shares the host's {ns} namespace")
        except OSError as exc:
            problems.append(f"cannot inspect the worker's {ns} namespace: {exc.strerror}")
    try:
        with open(f"/proc/{pid}/status") as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
        if any(int(u) < _UID_RANGE[0] for u in uids):
            problems.append(f"the worker runs as host uid {uids[0]}")
    except (OSError, StopIteration) as exc:
        problems.append(f"cannot read the worker's host uid: {exc}")
    return problems

"""The template: a trusted fork server that starts confined workers in a few milliseconds.

The host starts it once per Runtime. It builds the sandbox filesystem view, pre-imports common
modules, then forks a worker per request. It never runs user code. A worker is made in two
forks because a new pid namespace applies to the *children* of the caller::

    template ──fork──> A: unshare(user|pid|mount|net|ipc|uts|cgroup); the template maps A's uid
                       A ──fork──> B: PID 1 of the new namespaces; A exits
                       B: confine(), then serve the host until the channel closes

The template is the subreaper of every B: it reaps them and tells the host how each ended.

Messages with the host are JSON over a SOCK_SEQPACKET socket; a spawn request carries the
worker's three descriptors (channel, stdout, stderr) as SCM_RIGHTS.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import traceback
from typing import Any, NoReturn

from tracebox.sandbox import _linux as L
from tracebox.sandbox import rootfs, seccomp
from tracebox.sandbox.confine import SpawnLimits, confine, report
from tracebox.worker import loop, protocol

NAMESPACES = (
    L.CLONE_NEWUSER
    | L.CLONE_NEWPID
    | L.CLONE_NEWNS
    | L.CLONE_NEWNET
    | L.CLONE_NEWIPC
    | L.CLONE_NEWUTS
    | L.CLONE_NEWCGROUP
)
PREIMPORT = (
    "abc",
    "argparse",
    "array",
    "ast",
    "base64",
    "bisect",
    "collections",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "inspect",
    "io",
    "itertools",
    "json",
    "math",
    "operator",
    "pathlib",
    "pickle",
    "pprint",
    "random",
    "re",
    "statistics",
    "string",
    "struct",
    "textwrap",
    "time",
    "traceback",
    "typing",
    "unittest",
    "uuid",
    "zlib",
)
# Our own modules that only some requests need, imported before the template's view of the
# file system changes (the package may live under a /tmp that the sandbox covers): the
# recorder and its backend, so a traced run starts as fast as an untraced one.
OWN_PREIMPORT = (
    "tracebox.trace.recorder",
    "tracebox.trace._monitoring" if sys.version_info >= (3, 12) else "tracebox.trace._settrace",
)
MAX_MESSAGE = 1 << 16
MAX_FDS = 16
_STASHED: list[tuple[str, str]] = []  # set once by rootfs.build; every worker inherits it


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    sock.send(json.dumps(msg).encode())


def _map_ids(pid: int, host_uid: int) -> None:
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(f"{rootfs.SANDBOX_UID} {host_uid} 1\n")


def _become_worker(limits: SpawnLimits, fds: list[int]) -> NoReturn:
    ctrl, out, err = fds
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        channel = confine(limits, ctrl, out, err, _STASHED)
        protocol.send(channel, {"op": "hello", "confinement": report()})
    except BaseException as exc:  # report why confinement failed, then never run user code
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        try:
            os.writev(ctrl, protocol.encode({"op": "fatal", "error": detail}))
        finally:
            os._exit(70)
    loop.serve(channel)


def _become_init(limits: SpawnLimits, fds: list[int]) -> NoReturn:
    """PID 1 of the sandbox: start the worker, then reap every process that ends here and
    tell the host how it ended (8 bytes: pid in the sandbox, wait status).

    Init runs no user code and keeps the host uid it was forked with (unmapped in the
    sandbox, so shown as nobody): code in the sandbox can neither signal nor trace it, and
    checkpoints, children of init, outlive the worker.
    """
    ctrl, out, err, exits = fds
    try:
        L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.fork() == 0:
            os.close(exits)
            _become_worker(limits, [ctrl, out, err])
        for fd in (ctrl, out, err):
            os.close(fd)
        os.set_blocking(exits, False)  # a host that does not read loses records, not init
        L.drop_all_capabilities()
        L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
    except BaseException:
        os._exit(71)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)  # nobody left: the sandbox ends
        except InterruptedError:
            continue
        with contextlib.suppress(OSError):
            os.write(exits, struct.pack("<ii", pid, status))


def _spawn(host_uid: int, limits: SpawnLimits, fds: list[int]) -> int:
    """Start one sandbox; returns the pid of its init (as the host sees it).

    ``fds`` are the worker's channel, stdout and stderr, init's exit-report pipe, then the
    ``cgroup.procs`` files of its cgroups: it joins them before creating its namespaces, so
    its cgroup namespace is rooted at its own cgroup and everything it allocates is charged
    there.
    """
    worker_fds, join_fds = fds[:4], fds[4:]
    up_r, up_w = os.pipe()  # A -> template
    down_r, down_w = os.pipe()  # template -> A, then B
    pid_a = os.fork()
    if pid_a == 0:
        code = 1
        try:
            os.close(up_r)
            os.close(down_w)
            for fd in join_fds:
                os.write(fd, b"0")
                os.close(fd)
            L.unshare(NAMESPACES)
            os.write(up_w, b"u")
            if os.read(down_r, 1) == b"m":
                pid_b = os.fork()
                if pid_b == 0:
                    os.close(up_w)
                    if os.read(down_r, 1) == b"g":  # A is gone: PDEATHSIG now binds to us
                        os.close(down_r)
                        _become_init(limits, worker_fds)
                    os._exit(1)
                os.write(up_w, struct.pack("<i", pid_b))
                code = 0
        except BaseException:
            traceback.print_exc()
        os._exit(code)
    os.close(up_w)
    os.close(down_r)
    try:
        if os.read(up_r, 1) != b"u":
            raise RuntimeError("worker failed to create its namespaces (see template log)")
        _map_ids(pid_a, host_uid)
        os.write(down_w, b"m")
        raw = os.read(up_r, 4)
        if len(raw) != 4:
            raise RuntimeError("worker failed before starting its init process")
        (pid_b,) = struct.unpack("<i", raw)
        os.waitpid(pid_a, 0)
        os.write(down_w, b"g")
        return int(pid_b)
    finally:
        os.close(up_r)
        os.close(down_w)
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid_a, os.WNOHANG)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"op": "exited", "pid": pid, "status": status})


def serve(sock: socket.socket) -> NoReturn:
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj == wake_r:
                while True:
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        break
                _reap(sock)
                continue
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
            if not data:
                os._exit(0)
            msg = json.loads(data)
            try:
                if len(fds) < 4:
                    raise ValueError(f"spawn needs at least 4 descriptors, got {len(fds)}")
                uid, limits = int(msg["uid"]), SpawnLimits(**msg["limits"])
            except Exception as exc:
                for fd in fds:
                    os.close(fd)
                _send(sock, {"op": "spawn_failed", "id": msg["id"], "error": repr(exc)})
                continue
            try:
                pid = _spawn(uid, limits, fds)  # closes the descriptors whatever happens
                _send(sock, {"op": "spawned", "id": msg["id"], "pid": pid})
            except Exception as exc:
                _send(sock, {"op": "spawn_failed", "id": msg["id"], "error": repr(exc)})
            _reap(sock)


def main() -> NoReturn:
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        config = json.loads(sock.recv(MAX_MESSAGE))
        L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != config["host_pid"]:  # the host died before we armed PDEATHSIG
            os._exit(1)
        L.prctl(L.PR_SET_CHILD_SUBREAPER, 1)
        seccomp.compiled_program()  # once here, so each worker only loads it
        for name in OWN_PREIMPORT:
            importlib.import_module(name)
        L.unshare(L.CLONE_NEWNS | L.CLONE_NEWNET | L.CLONE_NEWIPC | L.CLONE_NEWUTS)
        _STASHED.extend(rootfs.build(config["root"], config["python"], config.get("hide")))
        for name in PREIMPORT:
            importlib.import_module(name)
        _send(sock, {"op": "ready", "python": sys.version})
    except BaseException as exc:
        _send(sock, {"op": "fatal", "error": "".join(traceback.format_exception_only(exc))})
        os._exit(1)
    serve(sock)


if __name__ == "__main__":
    main()

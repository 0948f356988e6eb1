"""Calls from code in the sandbox to functions on the host ("tools"), over the session channel.

``tools.call(name, *args, **kwargs)`` works while the host runs a cell with
``Session.run(..., tools={name: function})``: the call crosses the pipe, the host runs the
function (the sandbox never sees it), and its value or exception comes back. Arguments and
values are pickled; the host unpickles only plain data (``session.transfer``).

An exception from the host function is raised here as the same builtin exception type when
there is one (``ValueError``, ``KeyError`` ...), else as ``ToolError``.
"""

from __future__ import annotations

import builtins
import itertools
import pickle
import socket
from typing import Any

from tracebox.worker import protocol

__all__ = ["ToolError", "call"]

_channel: list[socket.socket] = []  # set once by the worker loop
_unbound: list[str] = []  # why tools are gone, once they are
_seq = itertools.count(1)


class ToolError(Exception):
    """A tool failed on the host with an exception that has no builtin equivalent here."""


def bind(channel: socket.socket) -> None:
    _channel[:] = [channel]


def unbind(reason: str) -> None:
    """No tools from here on (a trial's copy has no channel to the host)."""
    _channel.clear()
    _unbound[:] = [reason]


def call(name: str, /, *args: Any, **kwargs: Any) -> Any:
    """Call the host's tool ``name`` with picklable arguments and return its value."""
    if not _channel:
        raise RuntimeError(_unbound[0] if _unbound else "tools can only be called in a session")
    seq = next(_seq)
    blob = pickle.dumps((args, kwargs), protocol=5)
    protocol.send(_channel[0], {"op": "tool", "name": str(name), "seq": seq}, blob)
    while True:  # answers to calls that an interrupt abandoned arrive first: skip them
        msg, data = protocol.recv_blocking(_channel[0])
        if msg.get("op") == "tool_reply" and msg.get("seq") == seq:
            break
    if msg.get("status") == "ok":
        return pickle.loads(data)
    raise _exception(str(msg.get("type", "ToolError")), str(msg.get("message", "")))


def _exception(kind: str, message: str) -> BaseException:
    cls = getattr(builtins, kind, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:  # a builtin whose constructor wants other arguments
            pass
    return ToolError(f"{kind}: {message}")

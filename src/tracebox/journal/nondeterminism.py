"""Where a step's output may come from besides its code: time, randomness, ids, the host.

``find_suspects(code)`` reads the code (without running it) for calls and names whose
results change from run to run; ``output_suspects(recorded, replayed)`` looks at how two
outputs differ (a UUID, a memory address, a timestamp, the same items in another order).
Replay uses both to say why a step did not reproduce. They are hints, not proofs: a
seeded ``random`` is reproducible (and is not reported), while nondeterminism hidden in a
library the code calls is not seen.

The sandbox runs with ``PYTHONHASHSEED=0``, so the order of sets of strings and numbers is
the same every time; sets of objects hashed by identity are not.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["Source", "Suspect", "find_suspects", "output_suspects", "used_names"]

Source = Literal[
    "time",
    "random",
    "uuid",
    "urandom",
    "identity",
    "order",
    "filesystem",
    "environment",
    "concurrency",
    "tools",
    "limits",
]
"""What a step's result may depend on besides its code and the session's state:

- ``time``: the clock (``time.time``, ``datetime.now``, ``perf_counter`` ...).
- ``random``: unseeded ``random``, ``numpy.random``, ``secrets``, ``SystemRandom``.
- ``uuid``: ``uuid1``/``uuid4``.
- ``urandom``: the kernel's random bytes (``os.urandom``, ``os.getrandom``).
- ``identity``: ``id()``, default ``hash()``/``repr`` of objects (memory addresses).
- ``order``: iteration order of sets (and of dicts built from them).
- ``filesystem``: file contents, listings, sizes and times, temporary names.
- ``environment``: variables, pids, host name, CPU count, resource usage.
- ``concurrency``: threads, processes, asyncio tasks (scheduling order).
- ``tools``: host functions called during the run (their answers are not journaled).
- ``limits``: CPU, wall-clock and memory limits (a timeout depends on the machine's load).
"""


class Suspect(BaseModel):
    """One likely source of a difference, with what points at it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: Source
    evidence: str
    """``line 3: time.time()``, or what in the output gave it away."""
    seq: int | None = None
    """The journal step whose code it is in, when replay knows it."""


# dotted call names (after resolving imports) -> source; a trailing ".*" matches a module
_CALLS: dict[str, Source] = {
    **dict.fromkeys(
        [
            "time.time",
            "time.time_ns",
            "time.perf_counter",
            "time.perf_counter_ns",
            "time.monotonic",
            "time.monotonic_ns",
            "time.process_time",
            "time.process_time_ns",
            "time.thread_time",
            "time.thread_time_ns",
            "time.localtime",
            "time.gmtime",
            "time.ctime",
            "time.asctime",
            "time.strftime",
            "time.clock_gettime",
            "time.clock_gettime_ns",
            "datetime.datetime.now",
            "datetime.datetime.utcnow",
            "datetime.datetime.today",
            "datetime.date.today",
            "timeit.*",
        ],
        "time",
    ),
    **dict.fromkeys(
        ["random.*", "numpy.random.*", "secrets.*", "random.SystemRandom", "torch.rand*"],
        "random",
    ),
    **dict.fromkeys(["uuid.uuid1", "uuid.uuid4"], "uuid"),
    **dict.fromkeys(["os.urandom", "os.getrandom", "ssl.RAND_bytes"], "urandom"),
    **dict.fromkeys(
        ["id", "hash", "object", "sys.getrefcount", "gc.get_objects", "ctypes.addressof"],
        "identity",
    ),
    **dict.fromkeys(["set", "frozenset"], "order"),
    **dict.fromkeys(
        [
            "open",
            "os.listdir",
            "os.scandir",
            "os.walk",
            "os.stat",
            "os.lstat",
            "os.path.getmtime",
            "os.path.getctime",
            "os.path.getatime",
            "os.path.getsize",
            "os.path.exists",
            "glob.*",
            "pathlib.Path",
            "tempfile.*",
            "shutil.*",
            "io.open",
        ],
        "filesystem",
    ),
    **dict.fromkeys(
        [
            "os.getenv",
            "os.getpid",
            "os.getppid",
            "os.uname",
            "os.cpu_count",
            "os.times",
            "os.getloadavg",
            "platform.*",
            "socket.gethostname",
            "getpass.getuser",
            "resource.getrusage",
            "psutil.*",
        ],
        "environment",
    ),
    **dict.fromkeys(
        [
            "threading.Thread",
            "threading.Timer",
            "concurrent.futures.*",
            "multiprocessing.*",
            "subprocess.*",
            "os.fork",
            "os.system",
            "asyncio.gather",
            "asyncio.create_task",
            "asyncio.wait",
            "asyncio.as_completed",
        ],
        "concurrency",
    ),
}
_NAMES: dict[str, Source] = {"os.environ": "environment", "sys.argv": "environment"}
_SEEDS = {"random.seed", "numpy.random.seed", "numpy.random.default_rng", "random.Random"}


class _Finder(ast.NodeVisitor):
    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}  # local name -> dotted origin
        self.found: list[tuple[Source, int, str, frozenset[str]]] = []
        self.binds: frozenset[str] = frozenset()  # names the current top-level statement binds
        self.seeded: set[str] = set()  # "random", "numpy.random": seeded with a constant

    def add(self, source: Source, line: int, what: str) -> None:
        self.found.append((source, line, what, self.binds))

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.asname:
                self.aliases[a.asname] = a.name
            else:
                top = a.name.split(".")[0]
                self.aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level:
            for a in node.names:
                self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def dotted(self, node: ast.expr) -> str | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(self.aliases.get(node.id, node.id))
        return ".".join(reversed(parts))

    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func)
        if name is not None:
            if name in _SEEDS:
                module = name.rsplit(".", 1)[0] if name != "random.Random" else "random.Random"
                if node.args and all(isinstance(a, ast.Constant) for a in node.args):
                    self.seeded.add(module)
                elif name == "random.Random":
                    self.add("random", node.lineno, f"{name}() without a seed")
            else:
                source = _match(name)
                if source is not None:
                    self.add(source, node.lineno, f"{name}()")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = self.dotted(node)
        if name in _NAMES:
            self.add(_NAMES[name], node.lineno, name)
        self.generic_visit(node)

    def _set(self, node: ast.Set | ast.SetComp) -> None:
        self.add("order", node.lineno, "a set (its iteration order)")
        self.generic_visit(node)

    visit_Set = _set
    visit_SetComp = _set


def _match(name: str) -> Source | None:
    if name in _CALLS:
        return _CALLS[name]
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        if f"{prefix}.*" in _CALLS:
            return _CALLS[f"{prefix}.*"]
    for pattern, source in _CALLS.items():
        if pattern.endswith("*") and not pattern.endswith(".*") and name.startswith(pattern[:-1]):
            return source
    if parts[0] == "pathlib" or name.startswith("Path."):
        return "filesystem"
    return None


def _bound(stmt: ast.stmt) -> frozenset[str]:
    """Names a statement binds at its level (assignments, definitions, imports, loops)."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return frozenset({stmt.name})
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        return frozenset((a.asname or a.name).split(".")[0] for a in stmt.names)
    targets: list[ast.expr] = []
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, ast.AugAssign | ast.AnnAssign | ast.For | ast.AsyncFor):
        targets = [stmt.target]
    elif isinstance(stmt, ast.With | ast.AsyncWith):
        targets = [i.optional_vars for i in stmt.items if i.optional_vars is not None]
    return frozenset(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))


def used_names(code: str) -> frozenset[str]:
    """Names ``code`` reads (empty if it does not parse)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return frozenset()
    return frozenset(
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    )


def find_suspects(
    code: str, *, seq: int | None = None, feeding: frozenset[str] | None = None
) -> list[Suspect]:
    """What in ``code`` may make its result differ from run to run, in source order.

    With ``feeding``, only what is in statements that bind one of those names (the names a
    later step reads): ``t = time.time()`` feeds ``print(t)``.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    finder = _Finder()
    for stmt in tree.body:
        finder.binds = _bound(stmt)
        finder.visit(stmt)
    out: list[Suspect] = []
    seen: set[tuple[Source, str]] = set()
    for source, line, what, binds in sorted(finder.found, key=lambda f: f[1]):
        if feeding is not None and not binds & feeding:
            continue
        if source == "random" and _seeded(what, finder.seeded):
            continue
        if (source, what) in seen:
            continue
        seen.add((source, what))
        out.append(Suspect(source=source, evidence=f"line {line}: {what}", seq=seq))
    return out


def _seeded(what: str, seeded: set[str]) -> bool:
    return any(what.startswith(module + ".") for module in seeded if module != "random.Random")


_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]{4,}\b|\b0x[0-9a-f]{8,}\b")
_EPOCH = re.compile(r"\b1[5-9]\d{8}(?:\.\d+)?\b|\b1[5-9]\d{17}\b")
_DATETIME = re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}")
_TOKEN = re.compile(r"\w+|[^\w\s]")


def output_suspects(recorded: str | None, replayed: str | None) -> list[Suspect]:
    """What the way two outputs differ points at (empty when they are equal)."""
    a, b = recorded or "", replayed or ""
    if a == b:
        return []
    out: list[Suspect] = []

    def seen(pattern: re.Pattern[str], source: Source, what: str) -> None:
        found = set(pattern.findall(a)) ^ set(pattern.findall(b))
        if found:
            sample = sorted(found)[0]
            out.append(Suspect(source=source, evidence=f"output: {what} {sample!r} differs"))

    seen(_UUID, "uuid", "a UUID")
    seen(_ADDRESS, "identity", "a memory address")
    seen(_EPOCH, "time", "a Unix time")
    seen(_DATETIME, "time", "a date and time")
    if sorted(_TOKEN.findall(a)) == sorted(_TOKEN.findall(b)):
        out.append(Suspect(source="order", evidence="output: the same items in a different order"))
    return out


def merge(suspects: Iterable[Suspect]) -> list[Suspect]:
    """Without repeats, in the order first seen."""
    out: list[Suspect] = []
    for s in suspects:
        if s not in out:
            out.append(s)
    return out

"""The program that ``bench_trace.py`` traces: CPU-bound pure Python, in a file of its own.

It lives in a real file (not a string compiled on the fly) so that every tracer sees the
same file name and can tell the workload's frames from everyone else's. One round does
five kinds of work that LLM-written code is full of:

- recursion: naive Fibonacci and the number of ways to climb a staircase;
- sorting: a top-down merge sort and an insertion sort, on lists of random integers;
- graph search: breadth-first search over a grid maze with walls;
- string building: formatting and joining a report line by line;
- dictionaries: counting words.

``run(scale)`` repeats the round ``round(ROUNDS * scale)`` times on inputs that do not
change with ``scale``, so the cost of one line (the size of the locals, say) is the same at
every scale and a tracer's cost per event can be compared across scales. It returns a
checksum that every tracer must leave unchanged. Standard library only.
"""

from __future__ import annotations

import random
from collections import deque

ROUNDS = 400  # rounds at scale 1: about half a second untraced on the machine we measure on


def fib(n: int) -> int:
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def stairs(n: int, memo: dict[int, int]) -> int:
    """Ways to climb ``n`` steps taking 1, 2 or 3 at a time (memoised recursion)."""
    if n <= 1:
        return 1
    if n in memo:
        return memo[n]
    ways = stairs(n - 1, memo) + stairs(n - 2, memo)
    if n >= 3:
        ways += stairs(n - 3, memo)
    memo[n] = ways
    return ways


def merge_sort(items: list[int]) -> list[int]:
    if len(items) < 2:
        return items
    half = len(items) // 2
    left = merge_sort(items[:half])
    right = merge_sort(items[half:])
    merged: list[int] = []
    a = b = 0
    while a < len(left) and b < len(right):
        if right[b] < left[a]:
            merged.append(right[b])
            b += 1
        else:
            merged.append(left[a])
            a += 1
    merged += left[a:]
    merged += right[b:]
    return merged


def insertion_sort(items: list[int]) -> list[int]:
    out = list(items)
    for k in range(1, len(out)):
        value = out[k]
        pos = k
        while pos > 0 and out[pos - 1] > value:
            out[pos] = out[pos - 1]
            pos -= 1
        out[pos] = value
    return out


def shortest_path(size: int, walls: set[tuple[int, int]]) -> int:
    """Breadth-first search from one corner of a ``size`` x ``size`` maze to the other;
    -1 when the walls cut it off."""
    goal = (size - 1, size - 1)
    seen = {(0, 0): 0}
    todo = deque([(0, 0)])
    while todo:
        cell = todo.popleft()
        if cell == goal:
            return seen[cell]
        row, col = cell
        for step_r, step_c in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            nxt = (row + step_r, col + step_c)
            if not (0 <= nxt[0] < size and 0 <= nxt[1] < size):
                continue
            if nxt in walls or nxt in seen:
                continue
            seen[nxt] = seen[cell] + 1
            todo.append(nxt)
    return -1


def report(values: list[int]) -> str:
    lines = []
    total = 0
    for i, v in enumerate(values):
        total += v
        label = "even" if v % 2 == 0 else "odd"
        lines.append(f"{i:3d}: {v:5d} {label:<4} running={total}")
    text = "\n".join(lines)
    return text.upper()


def word_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for raw in text.split():
        word = raw.strip(":=")
        if not word:
            continue
        counts[word] = counts.get(word, 0) + 1
    return counts


def one_round(data: list[int], walls: set[tuple[int, int]]) -> int:
    acc = fib(15)
    acc += stairs(60, {}) % 1000
    acc += merge_sort(data)[len(data) // 2]
    acc += insertion_sort(data[:50])[25]
    acc += shortest_path(24, walls)
    text = report(data[:80])
    acc += len(text)
    acc += len(word_counts(text))
    return acc


def inputs() -> tuple[list[int], set[tuple[int, int]]]:
    rng = random.Random(20261122)
    data = [rng.randrange(100_000) for _ in range(250)]
    walls = {(rng.randrange(24), rng.randrange(24)) for _ in range(110)}
    walls -= {(0, 0), (23, 23)}
    return data, walls


def run(scale: float = 1.0) -> int:
    """Run ``round(ROUNDS * scale)`` rounds (at least one); return a checksum."""
    data, walls = inputs()
    checksum = 0
    for _ in range(max(1, round(ROUNDS * scale))):
        checksum += one_round(data, walls)
    return checksum


if __name__ == "__main__":
    import sys
    import time

    start = time.perf_counter()
    result = run(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
    print(result, f"{time.perf_counter() - start:.3f} s")

"""Slots: at most N holders at once per key; the rest wait in line, oldest first.

The operator uses two kinds:

* job slots, keyed by Ray head: evaluations that share a RayCluster (``spec.rayClusterName``)
  would otherwise all start their drivers on one head at once;
* cluster slots (one key): at most ``maxActiveEvaluations`` evaluations hold a RayCluster at
  once, so 200 evaluations applied together do not ask the cluster for 200 Ray clusters.

A source of truth gives the current holders (the head's Jobs API, or the operator's index of
evaluations), so an operator that restarts keeps the limit. It is re-read at most every
``refresh`` seconds; grants made since count at once, and a grant counts until the source shows
it or it is released (a watch or a job list can lag behind the grant), for ``grace`` at most.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Line:
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: set[str] = field(default_factory=set)
    granted_at: dict[str, float] = field(default_factory=dict)
    read_at: float = float("-inf")
    used_at: float = 0.0  # the last ask, grant or release
    # waiter -> (its place in line, when it last asked)
    waiting: dict[str, tuple[Any, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    granted: bool
    in_use: int
    position: int = 0  # 1-based place in line when not granted


class Slots:
    def __init__(self, limit: int, refresh: float = 2.0, forget_after: float = 30.0,
                 grace: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.refresh = refresh
        self.forget_after = forget_after  # a waiter that stopped asking (deleted) leaves the line
        self.grace = grace
        self.clock = clock
        self._lines: dict[str, _Line] = {}
        self._guard = threading.Lock()
        self._pruned_at = float("-inf")

    def _line(self, key: str) -> _Line:
        with self._guard:
            now = self.clock()
            if now - self._pruned_at >= self.forget_after:
                self._prune(now)
            line = self._lines.setdefault(key, _Line())
            line.used_at = now
            return line

    def _prune(self, now: float) -> None:
        """Forgets the lines nobody holds, waits in or asked for a while (a namespace or a Ray
        head that is gone): keys come and go with tenants, the operator stays up."""
        self._pruned_at = now
        idle = [key for key, line in self._lines.items()
                if now - line.used_at >= self.forget_after and not line.active
                and not line.granted_at and not line.waiting]
        for key in idle:
            del self._lines[key]

    def acquire(self, key: str, holder: str, waiter: str, place: Any,
                read_active: Callable[[], Iterable[str]]) -> Decision:
        """Whether ``holder`` (a job's submission id, an evaluation's uid) may go ahead now.
        ``waiter`` names the evaluation in line; ``place`` orders the line (lowest first: the
        evaluation's creation time, or a tuple such as (slots its namespace holds, creation
        time) for a line that is fair between namespaces). It is renewed on every ask."""
        if self.limit <= 0:
            return Decision(True, 0)
        line = self._line(key)
        with line.lock:
            now = self.clock()
            if now - line.read_at >= self.refresh:
                source = set(read_active())
                # A grant counts until the source shows it or it is released: under load the
                # source (a watch-fed index) can lag by more than any fixed delay. One the source
                # never shows (its holder went before it did) is forgotten after ``grace``.
                line.granted_at = {h: t for h, t in line.granted_at.items()
                                   if h not in source and now - t < self.grace}
                line.active = source | set(line.granted_at)
                line.read_at = now
            if holder in line.active:
                line.waiting.pop(waiter, None)
                return Decision(True, len(line.active))
            line.waiting[waiter] = (place, now)
            line.waiting = {w: v for w, v in line.waiting.items() if now - v[1] <= self.forget_after}
            order = sorted(line.waiting, key=lambda w: (line.waiting[w][0], w))
            position = order.index(waiter) + 1
            free = self.limit - len(line.active)
            if position <= free:
                line.active.add(holder)
                line.granted_at[holder] = now
                del line.waiting[waiter]
                return Decision(True, len(line.active))
            return Decision(False, len(line.active), position - max(free, 0))

    def release(self, key: str, holder: str) -> None:
        """The holder is done: its slot is free before the next re-read."""
        line = self._line(key)
        with line.lock:
            line.active.discard(holder)
            line.granted_at.pop(holder, None)

    def leave(self, key: str, waiter: str) -> None:
        """The evaluation stopped waiting (deleted, suspended, failed)."""
        line = self._line(key)
        with line.lock:
            line.waiting.pop(waiter, None)

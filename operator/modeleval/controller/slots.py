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

Looking (:meth:`Slots.look`, what a round observes) grants nothing and queues no one: it says
whether a slot is free for the evaluation in its turn. Taking a slot (:meth:`Slots.take`) and
waiting in line (:meth:`Slots.wait`) are actions the controller decides.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# waiter -> (its place in line, when it last asked)
Waiting = dict[str, tuple[Any, float]]


@dataclass(frozen=True)
class SlotAnswer:
    granted: bool
    in_use: int
    position: int = 0  # 1-based place in line when not granted


@dataclass
class _Line:
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: set[str] = field(default_factory=set)
    granted_at: dict[str, float] = field(default_factory=dict)
    read_at: float = float("-inf")
    used_at: float = 0.0  # the last look, take, wait, release or leave
    waiting: Waiting = field(default_factory=dict)

    def refresh(self, source: set[str], now: float, grace: float) -> None:
        """The holders as the source shows them. A grant counts until the source shows it or
        it is released: under load the source (a watch-fed index) can lag by more than any
        fixed delay. One the source never shows (its holder went before it did) is forgotten
        after ``grace``."""
        self.granted_at = {holder: granted for holder, granted in self.granted_at.items()
                           if holder not in source and now - granted < grace}
        self.active = source | set(self.granted_at)
        self.read_at = now

    def answer(self, holder: str, waiter: str, place: Any, now: float, limit: int,
               forget_after: float) -> tuple[SlotAnswer, Waiting]:
        """What taking a slot now would answer, and the line it would leave (the waiter in its
        place, those that stopped asking gone). Changes nothing."""
        if holder in self.active:
            return SlotAnswer(True, len(self.active)), self.waiting
        waiting = {name: value for name, value in {**self.waiting, waiter: (place, now)}.items()
                   if now - value[1] <= forget_after}
        order = sorted(waiting, key=lambda name: (waiting[name][0], name))
        position = order.index(waiter) + 1
        free = limit - len(self.active)
        if position <= free:
            return SlotAnswer(True, len(self.active) + 1), waiting
        return SlotAnswer(False, len(self.active), position - max(free, 0)), waiting


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

    def look(self, key: str, holder: str, waiter: str, place: Any,
             read_active: Callable[[], Iterable[str]]) -> SlotAnswer:
        """Whether ``holder`` (a job's submission id, an evaluation's uid) could go ahead now;
        it takes nothing. ``waiter`` names the evaluation in line; ``place`` orders the line
        (lowest first: the evaluation's creation time, or a tuple such as (slots its namespace
        holds, creation time) for a line that is fair between namespaces). The source of truth
        is read again once its last read is ``refresh`` old."""
        if self.limit <= 0:
            return SlotAnswer(True, 0)
        line = self._line(key)
        with line.lock:
            now = self.clock()
            if now - line.read_at >= self.refresh:
                line.refresh(set(read_active()), now, self.grace)
            return line.answer(holder, waiter, place, now, self.limit, self.forget_after)[0]

    def take(self, key: str, holder: str, waiter: str, place: Any) -> SlotAnswer:
        """Grants ``holder`` a slot when one is free in the waiter's turn (as the source was
        last read), else puts the waiter in line in its place (renewed on every ask)."""
        if self.limit <= 0:
            return SlotAnswer(True, 0)
        line = self._line(key)
        with line.lock:
            now = self.clock()
            answer, line.waiting = line.answer(holder, waiter, place, now, self.limit,
                                               self.forget_after)
            if answer.granted and holder not in line.active:
                line.active.add(holder)
                line.granted_at[holder] = now
            if answer.granted:
                line.waiting.pop(waiter, None)
            return answer

    def wait(self, key: str, waiter: str, place: Any) -> None:
        """The evaluation waits in line in its place (renewed on every ask)."""
        if self.limit <= 0:
            return
        line = self._line(key)
        with line.lock:
            now = self.clock()
            line.waiting = {name: value for name, value in
                            {**line.waiting, waiter: (place, now)}.items()
                            if now - value[1] <= self.forget_after}

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

    def state(self) -> dict[str, tuple[frozenset[str], Waiting]]:
        """Every line's holders and waiters (lines with neither are left out)."""
        with self._guard:
            lines = list(self._lines.items())
        found = {}
        for key, line in lines:
            with line.lock:
                if line.active or line.waiting:
                    found[key] = (frozenset(line.active), dict(line.waiting))
        return found

"""Job slots: at most N modeleval Ray jobs run at once on one Ray head; the rest queue, oldest
first.

An evaluation normally has a RayCluster of its own and so one job per head. Evaluations that
share a RayCluster (``spec.rayClusterName``) would otherwise all start their drivers on one head
at once; the slots keep that head from being overloaded and give the waiting ones an honest
status (queued, with their place in line).

The head's Jobs API is the truth: the set of running jobs is re-read from it at most every
``refresh`` seconds (so an operator that restarts counts the jobs it had started), and this
operator's own submissions count at once in between.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .rayjobs import JobInfo

JOB_PREFIX = "modeleval-"


@dataclass
class _Head:
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: set[str] = field(default_factory=set)
    read_at: float = float("-inf")
    # uid -> (queued since: creation time of the evaluation, last asked)
    waiting: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    granted: bool
    in_use: int
    position: int = 0  # 1-based place in line when not granted


class JobSlots:
    def __init__(self, limit: int, refresh: float = 2.0, forget_after: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.refresh = refresh
        self.forget_after = forget_after  # a waiter that stopped asking (deleted) leaves the line
        self.clock = clock
        self._heads: dict[str, _Head] = {}
        self._guard = threading.Lock()

    def _head(self, url: str) -> _Head:
        with self._guard:
            return self._heads.setdefault(url, _Head())

    def acquire(self, url: str, submission: str, uid: str, created: float,
                list_jobs: Callable[[], list[JobInfo]]) -> Decision:
        """Whether ``submission`` may be submitted to the head at ``url`` now. ``created`` orders
        the line (the evaluation's creation time); ``list_jobs`` reads the head's jobs."""
        if self.limit <= 0:
            return Decision(True, 0)
        head = self._head(url)
        with head.lock:
            now = self.clock()
            if now - head.read_at >= self.refresh:
                head.active = {j.submission_id for j in list_jobs()
                               if j.submission_id.startswith(JOB_PREFIX) and not j.finished}
                head.read_at = now
            if submission in head.active:
                head.waiting.pop(uid, None)
                return Decision(True, len(head.active))
            head.waiting[uid] = (created, now)
            head.waiting = {u: w for u, w in head.waiting.items() if now - w[1] <= self.forget_after}
            line = sorted(head.waiting, key=lambda u: (head.waiting[u][0], u))
            position = line.index(uid) + 1
            free = self.limit - len(head.active)
            if position <= free:
                head.active.add(submission)
                del head.waiting[uid]
                return Decision(True, len(head.active))
            return Decision(False, len(head.active), position - max(free, 0))

    def release(self, url: str, submission: str) -> None:
        """The job finished (or was stopped): its slot is free before the next re-read."""
        head = self._head(url)
        with head.lock:
            head.active.discard(submission)

    def leave(self, url: str, uid: str) -> None:
        """The evaluation stopped waiting (deleted, suspended, failed)."""
        head = self._head(url)
        with head.lock:
            head.waiting.pop(uid, None)

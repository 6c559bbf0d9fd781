"""Slots: a limit per key, oldest first, counted from a source of truth (a head's job list)."""

from __future__ import annotations

from modeleval.controller.rayjobs import running_jobs
from modeleval.controller.rayjobs import JobInfo
from modeleval.controller.slots import SlotAnswer, Slots


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def acquire(slots: Slots, key: str, holder: str, waiter: str, place, read) -> SlotAnswer:
    """What one round does: it looks at the line while observing, then takes the slot (or waits
    in line) when acting."""
    slots.look(key, holder, waiter, place, read)
    return slots.take(key, holder, waiter, place)


def jobs(*running: str, finished: tuple[str, ...] = ()) -> set[str]:
    listed = ([JobInfo(s, "RUNNING", "") for s in running]
              + [JobInfo(s, "SUCCEEDED", "") for s in finished]
              + [JobInfo("", "RUNNING", "a driver started by hand")])
    return running_jobs(listed)


def test_grants_up_to_the_limit_then_queues_oldest_first():
    clock = Clock()
    slots = Slots(2, refresh=60, clock=clock)

    def ask(uid: str, created: float):
        return acquire(slots, "h", f"modeleval-{uid}-1", uid, created, jobs)

    assert ask("a", 1).granted and ask("b", 2).granted
    late, early = ask("d", 4), ask("c", 3)
    assert not late.granted and not early.granted
    assert (early.in_use, early.position) == (2, 1) and ask("d", 4).position == 2
    slots.release("h", "modeleval-a-1")
    assert not ask("d", 4).granted  # c is older: the free slot is c's
    assert ask("c", 3).granted and not ask("d", 4).granted


def test_the_heads_job_list_is_the_truth_after_a_restart():
    clock = Clock()
    slots = Slots(2, refresh=2, clock=clock)
    listed = jobs("modeleval-x-1", "modeleval-y-1", finished=("modeleval-z-1",))
    decision = acquire(slots, "h", "modeleval-n-1", "n", 5, lambda: listed)
    assert not decision.granted and decision.in_use == 2  # the finished one and the hand-started one do not count
    # A job already running under this id (submitted before a restart) keeps its slot.
    assert acquire(slots, "h", "modeleval-x-1", "x", 1, lambda: listed).granted
    listed = jobs("modeleval-y-1", finished=("modeleval-x-1",))
    assert not acquire(slots, "h", "modeleval-n-1", "n", 5, lambda: listed).granted  # not re-read yet
    clock.now = 2.5
    assert acquire(slots, "h", "modeleval-n-1", "n", 5, lambda: listed).granted


def test_heads_are_counted_apart_and_zero_means_no_limit():
    slots = Slots(1, refresh=60, clock=Clock())
    assert acquire(slots, "h1", "modeleval-a-1", "a", 1, jobs).granted
    assert acquire(slots, "h2", "modeleval-b-1", "b", 2, jobs).granted
    assert not acquire(slots, "h1", "modeleval-c-1", "c", 3, jobs).granted
    unlimited = Slots(0)
    assert all(acquire(unlimited, "h", f"modeleval-{i}-1", str(i), i, jobs).granted for i in range(50))


def test_a_waiter_that_left_or_stopped_asking_does_not_hold_the_line():
    clock = Clock()
    slots = Slots(1, refresh=60, forget_after=10, clock=clock)
    assert acquire(slots, "h", "modeleval-a-1", "a", 1, jobs).granted
    assert not acquire(slots, "h", "modeleval-old-1", "old", 2, jobs).granted
    assert not acquire(slots, "h", "modeleval-gone-1", "gone", 3, jobs).granted
    assert acquire(slots, "h", "modeleval-new-1", "new", 4, jobs).position == 3
    slots.leave("h", "old")  # deleted while it waited
    slots.release("h", "modeleval-a-1")
    clock.now = 11  # "gone" never asked again
    assert acquire(slots, "h", "modeleval-new-1", "new", 4, jobs).granted


def test_a_grant_counts_until_the_lagging_source_shows_it_or_it_is_released():
    """A watch-fed index may lag far behind under load; a grant it does not show yet still holds
    its slot, however long that takes (up to the grace), and the limit is never passed."""
    clock = Clock()
    slots = Slots(2, refresh=0.0, grace=900.0, clock=clock)
    index: set[str] = set()
    assert acquire(slots, "clusters", "a", "a", 1.0, lambda: index).granted
    assert acquire(slots, "clusters", "b", "b", 2.0, lambda: index).granted
    clock.now = 120.0  # far past any fixed watch delay; the index still shows neither
    assert not acquire(slots, "clusters", "c", "c", 3.0, lambda: index).granted
    index.add("a")  # the index catches up with one, then it finishes and is released
    assert not acquire(slots, "clusters", "c", "c", 3.0, lambda: index).granted
    index.discard("a")
    slots.release("clusters", "a")
    assert acquire(slots, "clusters", "c", "c", 3.0, lambda: index).granted
    assert not acquire(slots, "clusters", "d", "d", 4.0, lambda: index).granted

"""The batcher's queue: each call's items by (task, width bucket), and whose turn it is.

Serving the oldest items first over the whole queue lets one huge call (thousands of inputs,
all queued a moment before a short request) fill every batch until the last of them has run,
so the short request waits for all of them. Here calls take turns leading a batch: first a
call with nothing in flight (earliest arrival first), then, between calls that already have
items in flight, the one that led least recently (round-robin). The leader's oldest bucket
decides the batch: its items of that bucket and of narrower ones (same task) are the first
candidates; the other calls' items of the same buckets follow, in turn order, to fill the room
the leader leaves (not wider ones: they would make a short leader's batch as wide and as slow
as a long one's; the price is that a short leader behind a wide call runs a small batch of its
own, measured in the README). A call alone leads every batch with the same candidates the oldest-first
queue gave it, so a single huge call's batches (and throughput) are what they were.

Not thread-safe: the scheduler holds its lock around every call. Which candidates one batch
takes is the shape planner's choice (`ShapePolicy.pack`); this module only says who goes first.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from concurrent.futures import Future
from typing import Callable, Iterable, Iterator

from .tokenization import Encoded

Bucket = tuple[str, int]  # (task, width)


@dataclasses.dataclass(eq=False)
class Caller:
    """One submit's items: they take their turns together."""

    turn: int  # arrival, then the last batch it led: the lower, the sooner it leads again
    groups: dict[Bucket, deque["Entry"]] = dataclasses.field(default_factory=dict)
    queued: int = 0
    in_flight: int = 0  # items in batches dispatched and not yet answered


@dataclasses.dataclass(eq=False)
class Entry:
    """One queued item."""

    task: str
    item: Encoded
    width: int
    future: Future
    enqueued: float
    caller: Caller
    live: bool = True  # False once its future was found cancelled after placement
    queued: bool = True  # False once taken into a batch or failed by stop()

    @property
    def bucket(self) -> Bucket:
        return self.task, self.width


@dataclasses.dataclass
class Candidates:
    """The next batch's candidates: the leader's items (its oldest first), then other calls'."""

    lead: list[Entry]
    others: list[Entry]


class FairQueue:
    """Items of many calls; `candidates()` for the next batch, `take` / `finished` around it."""

    def __init__(self, token_budget: int, max_requests: int | None = None,
                 on_drop: Callable[[int], None] | None = None):
        """Candidates stop at about two batches' worth of tokens (`token_budget` each) or at
        `max_requests` items; `on_drop(n)` hears of cancelled items dropped unrun."""
        self._budget = 2 * token_budget
        self._cap = max_requests
        self._on_drop = on_drop
        self._callers: list[Caller] = []  # those with items queued
        self._turns = itertools.count()
        self._queued = 0

    def __len__(self) -> int:
        return self._queued

    def __iter__(self) -> Iterator[Entry]:
        """Every queued entry, call by call (for inspection; cancelled ones included until dropped)."""
        for caller in self._callers:
            for group in caller.groups.values():
                yield from group

    def caller(self) -> Caller:
        """A new call's place in the turn order (behind every call that arrived before it)."""
        return Caller(turn=next(self._turns))

    def add(self, entry: Entry) -> None:
        caller = entry.caller
        if not caller.queued:
            self._callers.append(caller)
        caller.groups.setdefault(entry.bucket, deque()).append(entry)
        caller.queued += 1
        self._queued += 1

    def candidates(self) -> Candidates | None:
        """The next batch's candidates (None when nothing is queued); the leader's turn moves
        to the back of the line."""
        self._drop_cancelled_heads()
        if not self._callers:
            return None
        leader = min(self._callers, key=lambda c: (c.in_flight > 0, c.turn))
        leader.turn = next(self._turns)
        task, width = min((group[0].enqueued, key) for key, group in leader.groups.items() if group)[1]
        budget = [self._budget, self._cap]
        lead = list(self._gather(leader, task, width, first=width, left=budget))
        others = [entry for caller in sorted(self._callers, key=lambda c: (c.in_flight > 0, c.turn))
                  if caller is not leader for entry in self._gather(caller, task, width, None, budget)]
        return Candidates(lead, others)

    def take(self, entries: Iterable[Entry]) -> None:
        """These entries went into a batch: off the queue, in flight for their calls."""
        taken: dict[int, Entry] = {id(entry): entry for entry in entries}
        touched = {(id(e.caller), e.bucket): (e.caller, e.bucket) for e in taken.values()}
        for caller, bucket in touched.values():
            group = caller.groups[bucket]
            kept = [entry for entry in group if id(entry) not in taken]
            caller.queued -= len(group) - len(kept)
            group.clear()
            group.extend(kept)
        for entry in taken.values():
            entry.queued = False
            entry.caller.in_flight += 1
        self._queued -= len(taken)
        self._forget_empty()

    @staticmethod
    def finished(entries: Iterable[Entry]) -> None:
        """Their batch is answered (or failed): no longer in flight."""
        for entry in entries:
            entry.caller.in_flight -= 1

    def clear(self) -> list[Entry]:
        """Take every queued entry off the queue (stop without drain); returns them."""
        cleared = []
        for caller in self._callers:
            for group in caller.groups.values():
                cleared.extend(group)
                group.clear()
            caller.queued = 0
        for entry in cleared:
            entry.queued = False
        self._callers.clear()
        self._queued = 0
        return cleared

    # Helpers ----------------------------------------------------------------------------------
    def _gather(self, caller: Caller, task: str, width: int, first: int | None,
                left: list) -> Iterator[Entry]:
        """A caller's queued items of `task` in buckets no wider than `width` (bucket `first`
        before the others, then the others by their oldest item), while `left` ([tokens,
        items], shared across callers) has room; cancelled ones met on the way are dropped."""
        keys = sorted(((group[0].enqueued, w) for (t, w), group in caller.groups.items()
                       if t == task and w <= width and w != first and group))
        order = ([first] if first is not None else []) + [w for _, w in keys]
        for w in order:
            group = caller.groups.get((task, w))
            if not group:
                continue
            self._drop_cancelled(caller, group)
            for entry in group:
                if left[0] <= 0 or (left[1] is not None and left[1] <= 0):
                    return
                left[0] -= len(entry.item)
                if left[1] is not None:
                    left[1] -= 1
                yield entry

    def _drop_cancelled(self, caller: Caller, group: deque[Entry]) -> None:
        if any(entry.future.cancelled() for entry in group):
            kept = [entry for entry in group if not entry.future.cancelled()]
            self._dropped(caller, len(group) - len(kept))
            group.clear()
            group.extend(kept)

    def _drop_cancelled_heads(self) -> None:
        for caller in self._callers:
            for group in caller.groups.values():
                while group and group[0].future.cancelled():
                    group.popleft().queued = False
                    self._dropped(caller, 1)
        self._forget_empty()

    def _dropped(self, caller: Caller, count: int) -> None:
        if not count:
            return
        caller.queued -= count
        self._queued -= count
        if self._on_drop is not None:
            self._on_drop(count)

    def _forget_empty(self) -> None:
        if any(not caller.queued for caller in self._callers):
            self._callers = [caller for caller in self._callers if caller.queued]

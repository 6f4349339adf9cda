"""The population of calls over time, and the window-by-window generation loop.

A fixed number of calls run concurrently. Some were already running when the capture began; the
others start in its first seconds; each lasts an exponentially distributed time and is replaced
by a new call when it ends. Each window of capture time yields the media of all live streams
(vectorized) and the control events of all live sessions (per packet), sorted by arrival time.
Packets that arrive after the window (network delay) are carried over to the next one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from bench.batch import Batch, Event, events_batch
from bench.sessions import Session, World, build_session
from bench.streams import MediaTable
from bench.timelines import MS, SECOND

WINDOW_NS = 200 * MS
MID_STREAM_SHARE = 0.5  # calls already running when the capture starts
RAMP_NS = 2 * SECOND  # the other calls start within this time
MIN_LIFETIME_NS = 5 * SECOND
LINGER_NS = 10 * SECOND  # after its end a session may still send FIN/BYE


class Cursor:
    """A timeline with its next event looked at."""

    def __init__(self, events: Iterator[Event]) -> None:
        self.events = events
        self.head: Event | None = next(events, None)

    def take_until(self, until_ns: int, out: list[Event]) -> None:
        while self.head is not None and self.head.time_ns < until_ns:
            out.append(self.head)
            self.head = next(self.events, None)


@dataclass
class Scenario:
    world: World
    calls: int
    mean_lifetime_ns: int
    media: MediaTable = field(default_factory=MediaTable)
    sessions: list[Session] = field(default_factory=list)
    cursors: list[Cursor] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        for _ in range(self.calls):
            if self.world.clock.rng.random() < MID_STREAM_SHARE:
                self.spawn(0, fresh=False)
            else:
                self.spawn(int(self.world.clock.rng.uniform(0, RAMP_NS)), fresh=True)

    def spawn(self, start: int, fresh: bool) -> None:
        lifetime = MIN_LIFETIME_NS + int(self.world.clock.rng.exponential(self.mean_lifetime_ns))
        session = build_session(self.world, start, start + lifetime, fresh)
        self.sessions.append(session)
        self.media.add(session.streams)
        self.cursors.extend(Cursor(t) for t in session.timelines)
        self.kinds[f"{session.kind}{'' if fresh else ' (mid-stream)'}"] += 1

    def window(self, t0: int, t1: int) -> Batch:
        """All packets whose send time is in [t0, t1) (media arrive later by network delay)."""
        self._replace_ending(t0, t1)
        events: list[Event] = []
        for cursor in self.cursors:
            cursor.take_until(t1, events)
        self.cursors = [c for c in self.cursors if c.head is not None]
        media = self.media.generate(t0, t1, self.world.clock.rng)
        return Batch.concat([media, events_batch(events)])

    def _replace_ending(self, t0: int, t1: int) -> None:
        for session in [s for s in self.sessions if s.end_ns < t1 and not s.replaced]:
            session.replaced = True
            gap = int(self.world.clock.rng.uniform(50 * MS, SECOND))
            self.spawn(max(session.end_ns + gap, t0), fresh=True)

    def retire(self, now: int) -> None:
        """Forget sessions long over, and free their templates."""
        self.media.drop_finished()
        done = [s for s in self.sessions if s.end_ns + LINGER_NS < now]
        for session in done:
            self.world.templates.retire(session.templates)
        self.sessions = [s for s in self.sessions if s.end_ns + LINGER_NS >= now]


@dataclass
class Budget:
    """Stop after this many packets or bytes (whichever is given)."""

    packets: int | None
    size: int | None

    def cut(self, record_sizes: np.ndarray, packets_done: int, bytes_done: int) -> int:
        """How many of these records still fit."""
        n = len(record_sizes)
        if self.packets is not None:
            n = min(n, self.packets - packets_done)
        if self.size is not None:
            total = np.cumsum(record_sizes)
            n = min(n, int(np.searchsorted(total, self.size - bytes_done, side="right")))
        return max(n, 0)


def windows(scenario: Scenario) -> Iterator[Batch]:
    """Time-sorted batches of packets, one per window, forever."""
    carry = Batch.build(0)
    t0 = 0
    while True:
        t1 = t0 + WINDOW_NS
        batch = Batch.concat([carry, scenario.window(t0, t1)])
        batch.time_ns -= batch.time_ns % 1000  # whole microseconds: pcap's and eth0's resolution
        batch = batch.take(np.argsort(batch.time_ns, kind="stable"))
        ready = int(np.searchsorted(batch.time_ns, t1))
        carry = batch.take(np.arange(ready, len(batch)))
        yield batch.take(np.arange(ready))
        scenario.world.templates.recycle()
        scenario.retire(t1)
        t0 = t1

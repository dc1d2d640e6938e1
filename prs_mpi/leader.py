"""Node leaders: relay ranks that bundle a group's messages to and from rank 0.

At thousands of ranks, rank 0 pays for every MPI message it receives or sends. With leaders on,
each group of ranks (a node, by default) has a leader, its lowest rank, that relays between its
group and rank 0: upward it packs the logical messages of its group into one Bundle, downward it
splits rank 0's Bundle of the loop pass into one message per worker. The dispatcher still sees
every logical message with its real source, in order, so none of its rules change (protocol.py
describes the messages). Rank 0's own group talks to it directly. A leader is a worker too.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterator, Sequence

from .protocol import Bundle, Goodbye, Report, Request, Revoked

log = logging.getLogger(__name__)
AUTO_GROUP = 64          # "auto": at most this many ranks of one node per leader
MAX_DELAY = 0.05         # a leader holds non-urgent messages at most this long (its workers
                         # hold a long mini-batch in reserve: worker.py) ...
MAX_BUNDLE = 64          # ... or until it holds this many


def leaders_for(hosts: Sequence[str], ranks_per_leader: int | str) -> tuple[int, ...]:
    """The leader of every rank; 0 means "talks to rank 0 directly" (no leader)."""
    size = len(hosts)
    if ranks_per_leader == "auto":
        if len(set(hosts)) < 2 and size <= AUTO_GROUP:
            return (0,) * size
        first: dict[tuple[str, int], int] = {}
        seen: dict[str, int] = {}
        out = []
        for rank, host in enumerate(hosts):
            index = seen.get(host, 0)
            seen[host] = index + 1
            out.append(first.setdefault((host, index // AUTO_GROUP), rank))
    elif ranks_per_leader == 0:
        return (0,) * size
    else:
        out = [rank - rank % int(ranks_per_leader) for rank in range(size)]
    group0 = {r for r in range(size) if out[r] == out[0]}
    return tuple(0 if r in group0 else out[r] for r in range(size))


class Router:
    """A Channel that routes through leaders: same `send`/`poll` as Channel, plus `flush()` each
    loop pass and `relay_done` (a leader stays until its group said Goodbye and all is sent)."""

    def __init__(self, channel: Any, leaders: Sequence[int], max_delay: float = MAX_DELAY,
                 max_bundle: int = MAX_BUNDLE) -> None:
        self.channel, self.leaders = channel, tuple(leaders)
        self.rank = channel.rank
        self.leader = self.leaders[self.rank]
        self.is_leader = self.rank != 0 and self.leader == self.rank
        self.members = [r for r, lead in enumerate(self.leaders) if lead == self.rank and r != self.rank]
        self.max_delay, self.max_bundle = max_delay, max_bundle
        self.down: dict[int, list] = {}            # rank 0: leader -> (dest, msg) of this pass
        self.up: list[tuple[int, Any]] = []        # leader: (src, msg) not yet sent to rank 0
        self.up_since = 0.0
        self.urgent = False
        self.goodbyes: set[int] = set()
        self.bundles_sent = self.bundles_received = 0

    # ------------------------------------------------------------------ sending
    def send(self, dest: int, msg: object) -> None:
        if self.rank == 0:
            lead = self.leaders[dest]
            if lead == 0:
                self.channel.send(dest, msg)
            else:
                self.down.setdefault(lead, []).append((dest, msg))
        elif self.is_leader:
            self._hold(self.rank, msg)
        else:
            self.channel.send(self.leader, msg)     # 0 in rank 0's own group

    def _hold(self, src: int, msg: object) -> None:
        if not self.up:
            self.up_since = time.monotonic()
        self.up.append((src, msg))
        kind = type(msg)      # someone may wait for work: a Request, an urgent Report, a steal
        self.urgent |= kind is Request or kind is Revoked or (kind is Report and msg.urgent)
        if isinstance(msg, Goodbye):
            self.goodbyes.add(src)

    def flush(self, force: bool = False) -> None:
        """End of a loop pass: rank 0 sends each leader its bundle; a leader sends its bundle
        when it holds something urgent (a Request, a Revoked, an urgent Report), is old or is
        full."""
        if self.down:
            for lead, items in self.down.items():
                self.channel.send(lead, Bundle(tuple(items)))
                self.bundles_sent += 1
            self.down = {}
        if self.up and (force or self.urgent or len(self.up) >= self.max_bundle
                        or time.monotonic() - self.up_since >= self.max_delay):
            self.channel.send(0, Bundle(tuple(self.up)))
            self.bundles_sent += 1
            self.up, self.urgent = [], False

    # ------------------------------------------------------------------ receiving
    def poll(self, source: int | None = None) -> Iterator[tuple[int, object]]:
        """Yield (logical source, message): bundles are opened, a leader's relaying is done here."""
        for src, msg in self.channel.poll(source):
            if type(msg) is Bundle:
                self.bundles_received += 1
                if self.rank == 0:
                    yield from msg.items
                    continue
                for dest, inner in msg.items:      # from rank 0, for this leader's group
                    if dest == self.rank:
                        yield 0, inner
                    else:
                        self.channel.send(dest, inner)
            elif self.is_leader and src != 0:
                self._hold(src, msg)               # a member's message, on its way to rank 0
            else:
                yield src, msg

    @property
    def relay_done(self) -> bool:
        return not self.is_leader or (not self.up and self.goodbyes.issuperset(self.members))

    # ------------------------------------------------------------------ Channel's other methods
    def progress(self) -> None:
        self.channel.progress()

    def drain(self, timeout: float) -> bool:
        self.flush(force=True)
        return self.channel.drain(timeout)

    @property
    def sent(self) -> int:
        return self.channel.sent

    @property
    def received(self) -> int:
        return self.channel.received


def make_router(channel: Any, hosts: Sequence[str], ranks_per_leader: int | str) -> Any:
    """The plain channel when no rank has a leader, else a Router."""
    leaders = leaders_for(hosts, ranks_per_leader)
    if not any(leaders):
        return channel
    if channel.rank == 0:
        groups = sorted(set(leaders) - {0})
        log.info("leaders: %d relay rank(s) %s; %d rank(s) talk to rank 0 directly", len(groups),
                 groups[:8] + (["..."] if len(groups) > 8 else []), leaders.count(0))
    return Router(channel, leaders)

"""Which job goes to which server next: the dispatch decisions of ``charpack run``, nothing else.

Owns the queue of jobs waiting for a server and each server's slot (healthy or not, prompts in
flight, the model group it last ran). It does no I/O and knows no ComfyUI: the runner tells it
what happened (a job was added, a server went down, a prompt finished) and asks it for
assignments. The rules, in the order they apply:

- **backlog**: a server holds at most ``backlog + 1`` prompts (one running, ``backlog`` queued
  behind it), so its GPU never waits for the client, and no server hoards the pack's tail;
- **least loaded**: each assignment goes to the healthy server with the fewest prompts in flight
  (ties by the order the servers were given);
- **model groups stay together**: jobs sharing a checkpoint/LoRA form a group; a server keeps
  taking jobs of the group it last ran, and when that group runs dry it moves to a group no
  other server is on (largest first), else helps with the largest one, so models are loaded as
  rarely as possible;
- **front of the queue**: retries and jobs taken back from a dead server go first in their
  group, so a pack's last images are not stuck behind new work.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass


@dataclass
class ServerSlot:
    """What the scheduler knows about one server."""

    name: str
    order: int
    healthy: bool = True
    load: int = 0  # prompts in flight on it (submitted and not finished)
    capacity: int = 3  # prompts it holds at most (backlog + 1; more for a Serverless endpoint)
    group: Hashable | None = None  # the model group it ran last


class Scheduler:
    """Assigns waiting jobs (by key) to servers; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        servers: Sequence[str],
        backlog: int = 2,
        capacities: Mapping[str, int] | None = None,
    ) -> None:
        if backlog < 0:
            raise ValueError(f"backlog must be 0 or more, got {backlog}")
        if len(set(servers)) != len(servers):
            raise ValueError(f"server names must be unique, got {list(servers)}")
        self.capacity = backlog + 1
        # A server named in ``capacities`` (an endpoint of many GPUs) holds that many instead.
        room = dict(capacities or {})
        self.slots = {
            name: ServerSlot(name, i, capacity=room.get(name, self.capacity))
            for i, name in enumerate(servers)
        }
        self._groups: OrderedDict[Hashable, deque[str]] = OrderedDict()
        self._group_of: dict[str, Hashable] = {}

    # -- the waiting jobs ------------------------------------------------------------------

    def add(self, key: str, group: Hashable, *, front: bool = False) -> None:
        """Queue job ``key`` (once); ``front`` puts it before the others of its group."""
        if key in self._group_of:
            raise ValueError(f"job {key} is already waiting")
        queue = self._groups.setdefault(group, deque())
        if front:
            queue.appendleft(key)
        else:
            queue.append(key)
        self._group_of[key] = group

    def remove(self, key: str) -> bool:
        """Take ``key`` out of the queue (it failed without running); False if not waiting."""
        group = self._group_of.pop(key, None)
        if group is None:
            return False
        self._groups[group].remove(key)
        if not self._groups[group]:
            del self._groups[group]
        return True

    def waiting(self) -> int:
        """Jobs not yet assigned to any server."""
        return len(self._group_of)

    # -- the servers -----------------------------------------------------------------------

    def set_healthy(self, server: str, healthy: bool) -> None:
        self.slots[server].healthy = healthy

    def healthy(self) -> list[str]:
        return [s.name for s in self.slots.values() if s.healthy]

    def started(self, server: str) -> None:
        """A prompt is in flight on ``server`` without an assignment (adopted on resume)."""
        self.slots[server].load += 1

    def finished(self, server: str) -> None:
        """A prompt on ``server`` left it: finished, failed, lost or cancelled."""
        slot = self.slots[server]
        if slot.load <= 0:
            raise ValueError(f"{server} has no prompt in flight")
        slot.load -= 1

    # -- decisions -------------------------------------------------------------------------

    def assign(self) -> list[tuple[str, str]]:
        """Hand waiting jobs to servers with room; returns ``(server, key)`` in dispatch order.

        Each returned job counts as in flight on its server until :meth:`finished`.
        """
        out: list[tuple[str, str]] = []
        while self._group_of:
            room = [s for s in self.slots.values() if s.healthy and s.load < s.capacity]
            if not room:
                break
            slot = min(room, key=lambda s: (s.load, s.order))
            key = self._take(slot)
            slot.load += 1
            out.append((slot.name, key))
        return out

    def _take(self, slot: ServerSlot) -> str:
        group = slot.group if slot.group in self._groups else self._pick_group(slot)
        slot.group = group
        queue = self._groups[group]
        key = queue.popleft()
        if not queue:
            del self._groups[group]
        del self._group_of[key]
        return key

    def _pick_group(self, slot: ServerSlot) -> Hashable:
        busy = {s.group for s in self.slots.values() if s is not slot and s.healthy and s.load}
        free = [g for g in self._groups if g not in busy]
        pool = free or list(self._groups)
        # Largest first; the queue's order breaks ties (max keeps the first of equals).
        return max(pool, key=lambda g: len(self._groups[g]))

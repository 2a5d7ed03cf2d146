"""Items gathered to be handled together, the one batching primitive of the server.

Two uses: the booking script's calls that arrive while a trip to Redis is in flight leave together
(script_batch.py), and an upload's received reads are sealed about a mebibyte at a time (documents).
Both gather items in arrival order, know when they weigh enough, and hand them over oldest first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def _one(_: object) -> int:
    return 1


class Batch(Generic[T]):
    """Items in arrival order, with their weight (by default one each) against a batch's `limit`."""

    def __init__(self, limit: int, weigh: Callable[[T], int] = _one) -> None:
        if limit <= 0:
            raise ValueError("a batch holds something")
        self.limit = limit
        self._weigh = weigh
        self._items: deque[tuple[T, int]] = deque()
        self.weight = 0

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def add(self, item: T) -> bool:
        """Gather `item`; True once what is gathered weighs a batch or more."""
        w = self._weigh(item)
        self._items.append((item, w))
        self.weight += w
        return self.weight >= self.limit

    def take(self) -> list[T]:
        """The oldest items up to one batch (the item that reaches the limit included)."""
        out: list[T] = []
        taken = 0
        while self._items and taken < self.limit:
            item, w = self._items.popleft()
            out.append(item)
            taken += w
        self.weight -= taken
        return out

    def drain(self) -> list[T]:
        """Everything gathered, whatever it weighs."""
        out = [item for item, _ in self._items]
        self._items.clear()
        self.weight = 0
        return out

"""The reschedule offers' clock: each offer's "expires soon" reminder, then its expiry, by the app's clock.

Every process runs the job (it is cheap, and each step is a compare-and-set script: an offer is reminded
once and expires once, whichever process gets there first). Its runs follow the app's clock, looked at
every TICK_S, so a test that moves a ManualClock past an offer's end sees it expire at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..clock import Clock
from .service import RescheduleService

TICK_S = 1.0


@dataclass
class OfferClockJob:
    service: RescheduleService
    clock: Clock
    interval_s: float = 60.0
    _due: float | None = field(default=None, init=False)

    @property
    def tick_s(self) -> float:
        return min(TICK_S, self.interval_s)

    async def run_once(self, now: int) -> tuple[list[str], list[str]]:
        """The offers reminded and the offers expired by this run."""
        return await self.service.remind_due(now), await self.service.expire_due(now)

    async def step(self) -> None:
        mono = self.clock.monotonic()
        if self._due is not None and mono < self._due:
            return
        self._due = mono + self.interval_s
        await self.run_once(int(self.clock.now()))

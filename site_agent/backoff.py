"""Waiting between retries: exponential backoff with full jitter, and a sleep that ends
early when the agent is asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
import random


class Backoff:
    """Exponential backoff with full jitter, capped; a server's Retry-After wins."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next_delay(self, hint: float | None = None) -> float:
        self.failures += 1
        delay = random.uniform(0, min(self.cap, self.base * 2 ** (self.failures - 1)))  # noqa: S311 (jitter, not crypto)
        return max(delay, hint or 0.0)

    def reset(self) -> None:
        self.failures = 0


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stopping`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)

"""Exponential backoff with full jitter: the one retry policy for devices and the hub."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.minimum * (2 ** self.attempt))
        self.attempt += 1
        # jitter between half and the whole ceiling: spreads reconnect storms, never zero
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0

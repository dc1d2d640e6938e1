"""Seeded log-normal (heavy-tailed) task durations, written as item names for ``sleep_items``."""
import math
from dataclasses import dataclass

import numpy as np

DEFAULT_SIGMA = 1.0  # log-space standard deviation: the longest of 1000 draws is ~20x the mean


@dataclass(frozen=True)
class Durations:
    """A recorded set of durations and the parameters that generated it."""

    seconds: tuple[float, ...]
    mean: float
    sigma: float
    seed: int

    @property
    def total(self) -> float:
        return float(sum(self.seconds))

    @property
    def longest(self) -> float:
        return max(self.seconds)

    def lower_bound(self, workers: int) -> float:
        """No schedule on ``workers`` workers can finish sooner than this."""
        return max(self.total / workers, self.longest)

    def greedy_makespan(self, workers: int, overhead: float = 0.0) -> float:
        """Makespan of greedy list scheduling in listing order (each free worker takes the next
        duration), with ``overhead`` seconds per task: what a perfect non-clairvoyant dynamic
        scheduler gets, since it cannot know which tasks are long before running them."""
        import heapq
        free = [0.0] * workers
        for s in self.seconds:
            heapq.heappush(free, heapq.heappop(free) + s + overhead)
        return max(free)

    def item_names(self) -> list[str]:
        """One item string per duration, decoded by ``sleep_items.item_seconds``."""
        return [f"d{i:07d}-{s:.6f}" for i, s in enumerate(self.seconds)]


def lognormal(count: int, mean: float, sigma: float = DEFAULT_SIGMA, seed: int = 0) -> Durations:
    """``count`` durations whose expected value is ``mean`` seconds (rounded to 1 µs)."""
    if count < 1 or mean <= 0 or sigma < 0:
        raise ValueError(f"need count >= 1, mean > 0, sigma >= 0; got {count}, {mean}, {sigma}")
    mu = math.log(mean) - sigma * sigma / 2
    draws = np.random.default_rng(seed).lognormal(mu, sigma, count)
    return Durations(tuple(round(float(d), 6) for d in draws), mean, sigma, seed)

"""Run-wide settings: quick or full sizes, repetitions, per-subprocess timeouts."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    quick: bool = False
    reps: int = 3
    timeout: float = 600.0  # seconds allowed to any one subprocess
    keep: bool = False  # keep bench/work afterwards (for debugging)

    def size(self, quick: int, full: int) -> int:
        return quick if self.quick else full

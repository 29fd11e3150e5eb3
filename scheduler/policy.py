"""Planning policy: which sharing modes, plugin weights and limits (a frozen value)."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.config import DEFAULT_SCORE_WEIGHTS, SchedulerConfig

DEFAULT_WEIGHTS: tuple[tuple[str, int], ...] = tuple(DEFAULT_SCORE_WEIGHTS.items())


@dataclass(frozen=True)
class Policy:
    """How ``plan`` packs: modes tried, score weights, limits and the improvement pass."""

    modes: tuple[str, ...] = ("gpu", "mig", "mps", "timeslice")
    weights: tuple[tuple[str, int], ...] = DEFAULT_WEIGHTS
    max_mps_clients: int = 48
    max_timeslice_replicas: int = 16
    improve: bool = True
    improve_rounds: int = 2
    mps_shares: str = "equal"  # "equal": device-plugin MPS; "per-claim": DRA claims

    @classmethod
    def from_config(cls, config: SchedulerConfig) -> Policy:
        """The policy the settings describe."""
        return cls(
            modes=tuple(config.modes),
            weights=tuple(sorted(config.score_weights.items())),
            max_mps_clients=config.max_mps_clients,
            max_timeslice_replicas=config.max_timeslice_replicas,
            mps_shares=config.mps_shares,
        )

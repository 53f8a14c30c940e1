"""Learning-rate and loss-prefactor schedules, all pure functions of the step so that a resumed run
reproduces an uninterrupted one exactly."""
from __future__ import annotations

import math
from typing import Any, Dict, Union


class LRSchedule:
    """`exp`: DeePMD-kit's staircase decay lr = start · rate^(step // decay_steps), with rate chosen so
    that lr reaches `stop` at `total_steps`; `cosine`: cosine from start to stop; `constant`."""

    def __init__(self, cfg: Dict[str, Any], total_steps: int) -> None:
        self.kind = str(cfg.get("schedule", "exp"))
        self.start = float(cfg.get("start", 1e-3))
        self.stop = float(cfg.get("stop", self.start * 1e-3))
        self.decay_steps = int(cfg.get("decay_steps", max(1, total_steps // 100)))
        self.warmup = int(cfg.get("warmup_steps", 0))
        self.total = max(1, int(total_steps))
        if self.kind not in ("exp", "cosine", "constant"):
            raise ValueError(f"optimizer.lr.schedule: unknown schedule '{self.kind}' (exp, cosine, constant)")
        if self.start <= 0 or self.stop <= 0:
            raise ValueError("optimizer.lr: start and stop must be positive")
        n_decays = max(1, self.total // self.decay_steps)
        self.rate = (self.stop / self.start) ** (1.0 / n_decays)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start * (step + 1) / self.warmup
        if self.kind == "constant":
            return self.start
        if self.kind == "exp":
            return max(self.stop, self.start * self.rate ** (step // self.decay_steps))
        t = min(1.0, step / self.total)
        return self.stop + 0.5 * (self.start - self.stop) * (1 + math.cos(math.pi * t))


class Prefactor:
    """A loss weight: a fixed number, or DeePMD-kit's schedule
    p(t) = limit + (start − limit) · lr(t) / lr(0)."""

    def __init__(self, spec: Union[float, Dict[str, float], None], name: str) -> None:
        if spec is None:
            self.start = self.limit = 0.0
        elif isinstance(spec, (int, float)):
            self.start = self.limit = float(spec)
        elif isinstance(spec, dict):
            unknown = set(spec) - {"start", "limit"}
            if unknown:
                raise ValueError(f"loss.{name}: unknown keys {sorted(unknown)} (use start, limit)")
            self.start = float(spec.get("start", 0.0))
            self.limit = float(spec.get("limit", self.start))
        else:
            raise ValueError(f"loss.{name} must be a number or {{start, limit}}, got {spec!r}")
        if self.start < 0 or self.limit < 0:
            raise ValueError(f"loss.{name}: prefactors must be non-negative")

    @property
    def active(self) -> bool:
        return self.start > 0 or self.limit > 0

    def __call__(self, lr: float, lr0: float) -> float:
        return self.limit + (self.start - self.limit) * lr / lr0

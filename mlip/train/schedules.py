"""Learning-rate and loss-prefactor schedules, and the one validation criterion (`validation_loss`)
that picks the best checkpoint and drives the `plateau` schedule.

A schedule is a function of its *progress* through the run: the step count over `training.steps`, or,
with a wall-clock budget and `training.schedule_by_time`, the training seconds over the budget — so a
clock-driven schedule completes its decay at the end of the budget whatever the machine's speed (its
staircase stairs are then `decay_steps / steps` of the budget each). The only state is the `plateau`
schedule's count of reductions, kept in the checkpoint (`state_dict`), so a resumed run reproduces an
uninterrupted one exactly.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Union

BASES = ("exp", "cosine", "constant")
SCHEDULES = BASES + ("plateau",)
PLATEAU_DEFAULTS = {"base": "constant", "factor": 0.5, "patience": 5, "threshold": 0.01}


class LRSchedule:
    """`exp`: DeePMD-kit's staircase lr = start · rate^(step // decay_steps), with rate chosen so that
    lr reaches `stop` at `total_steps`; `cosine`: cosine from start to stop; `constant`;
    `plateau`: the `base` schedule (default constant) times factor^k, where k counts the validations
    after which the validation loss had not improved by the relative `threshold` for `patience`
    validations in a row (as ReduceLROnPlateau); never below `stop`. Combined with a clock-driven base
    the decay is never slower than the clock's, and faster when validation stalls.

    `max_time` (seconds): drive the progress by the training seconds instead of the step count.
    Warm-up (`warmup_steps`) always counts steps."""

    def __init__(self, cfg: Mapping[str, Any], total_steps: int, max_time: Optional[float] = None) -> None:
        self.kind = str(cfg.get("schedule", "exp"))
        if self.kind not in SCHEDULES:
            raise ValueError(f"optimizer.lr.schedule: unknown schedule '{self.kind}' ({', '.join(SCHEDULES)})")
        plateau = {k: cfg.get(k, v) for k, v in PLATEAU_DEFAULTS.items()}
        self.base = str(plateau["base"]) if self.kind == "plateau" else self.kind
        self.factor, self.patience = float(plateau["factor"]), int(plateau["patience"])
        self.threshold = float(plateau["threshold"])
        self.start = float(cfg.get("start", 1e-3))
        self.stop = float(cfg.get("stop", self.start * 1e-3))
        self.decay_steps = int(cfg.get("decay_steps") or max(1, total_steps // 100))
        self.warmup = int(cfg.get("warmup_steps") or 0)
        self.total = max(1, int(total_steps))
        self.max_time = float(max_time) if max_time else None
        if self.start <= 0 or self.stop <= 0:
            raise ValueError("optimizer.lr: start and stop must be positive")
        n_decays = max(1, self.total // self.decay_steps)
        self.rate = (self.stop / self.start) ** (1.0 / n_decays)
        # plateau state: reductions so far, the best monitored value, validations without improvement
        self.reductions, self.best, self.bad = 0, math.inf, 0

    @property
    def by_time(self) -> bool:
        return self.max_time is not None

    def progress(self, step: int, seconds: float = 0.0) -> float:
        """Fraction of the schedule done: step / total steps, or seconds / budget when clock-driven."""
        return min(1.0, seconds / self.max_time) if self.by_time else min(1.0, step / self.total)

    def base_lr(self, step: int, seconds: float = 0.0) -> float:
        """The step- or clock-driven part (no warm-up, no plateau reductions)."""
        if self.base == "constant":
            return self.start
        if self.base == "exp":
            # the nominal step: the real one, or the budget fraction mapped onto `total` steps
            nominal = int(self.total * self.progress(step, seconds)) if self.by_time else step
            return max(self.stop, self.start * self.rate ** (nominal // self.decay_steps))
        t = self.progress(step, seconds)
        return self.stop + 0.5 * (self.start - self.stop) * (1 + math.cos(math.pi * t))

    def __call__(self, step: int, seconds: float = 0.0) -> float:
        if step < self.warmup:
            return self.start * (step + 1) / self.warmup
        lr = self.base_lr(step, seconds)
        if self.reductions:
            lr = max(self.stop, lr * self.factor ** self.reductions)
        return lr

    def observe(self, metric: float) -> bool:
        """Feed one validation value (lower is better); True when the plateau schedule reduced the
        learning rate. Other schedules ignore it."""
        if self.kind != "plateau" or not math.isfinite(metric):
            return False
        if metric < self.best * (1.0 - self.threshold):
            self.best, self.bad = metric, 0
            return False
        self.bad += 1
        if self.bad < self.patience or self.start * self.factor ** self.reductions <= self.stop:
            return False
        self.reductions, self.bad = self.reductions + 1, 0
        return True

    def state_dict(self) -> Dict[str, Any]:
        return {"reductions": self.reductions, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: Optional[Mapping[str, Any]]) -> None:
        """Restore `state_dict()` (None, from a checkpoint written before plateau schedules: fresh)."""
        if state:
            self.reductions, self.best, self.bad = int(state["reductions"]), float(state["best"]), int(state["bad"])


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


def validation_loss(errors: Mapping[str, float], pref: Mapping[str, Prefactor]) -> float:
    """The best-checkpoint and plateau criterion: the training loss's own form at its final (limit)
    prefactors, on validation RMSEs — p_e·E_rmse² + p_f·F_rmse² + p_v·W_rmse² with E per atom (eV),
    F per component (eV/Å), W per atom and component (eV). One number in the loss's units, weighting
    energies and forces as the end of training does (a raw E + F sum adds eV/atom to eV/Å)."""
    terms = (("energy", "energy_rmse"), ("forces", "force_rmse"), ("virial", "virial_rmse_per_atom"))
    return sum(pref[k].limit * errors[m] ** 2 for k, m in terms if pref[k].limit > 0 and m in errors)

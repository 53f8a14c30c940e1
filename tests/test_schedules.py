"""Learning-rate schedules driven by the clock and by validation (issue 13 items 2, 5, 7): a clock-driven
schedule completes inside the budget whatever the machine's speed (a fake clock, no timed tests); the
plateau schedule; the best-checkpoint criterion; exact resume of plateau runs and of clock-budgeted
runs whose budget counts only the seconds trained."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from mlip.train.schedules import LRSchedule, Prefactor, validation_loss
from test_training import _params, cu_config

EXP = {"schedule": "exp", "start": 5e-3, "stop": 1e-5, "decay_steps": 2000}


class FakeClock:
    """A clock that advances `dt` seconds each time it is read (the trainer reads it twice a step)."""

    def __init__(self, dt: float, t0: float = 1000.0) -> None:
        self.t, self.dt = t0, dt

    def __call__(self) -> float:
        self.t += self.dt
        return self.t


@pytest.mark.parametrize("speed", [1 / 3, 1.0, 3.0])
def test_clock_driven_exp_reaches_stop_whatever_the_speed(speed):
    """nequip_water's staircase (100000 nominal steps, decay_steps 2000: 50 stairs) over a 900 s budget
    with an estimate of 526 steps; the machine runs at `speed` times the estimate. Every stair is
    descended, the last step runs on the last stair, and the schedule is at `stop` at the budget end."""
    budget, estimate = 900.0, 526
    lr = LRSchedule(EXP, 100000, max_time=budget)
    dt = budget / (estimate * speed)
    seen, t, step = [], 0.0, 0
    while t < budget:
        seen.append(lr(step, t))
        t, step = t + dt, step + 1
    n = 100000 // 2000
    assert seen[0] == pytest.approx(5e-3)
    assert seen[-1] == pytest.approx(5e-3 * lr.rate ** (n - 1))  # the last stair
    assert len(set(seen)) == n and seen == sorted(seen, reverse=True)
    assert lr(step, budget) == pytest.approx(1e-5)
    assert 5e-3 * lr.rate ** 26 <= seen[len(seen) // 2] <= 5e-3 * lr.rate ** 24  # half way: half decayed


def test_clock_driven_cosine_and_step_driven_unchanged():
    cos = LRSchedule({"schedule": "cosine", "start": 1e-3, "stop": 1e-5}, 10, max_time=60.0)
    assert cos(3, 30.0) == pytest.approx(5.05e-4) and cos(0, 60.0) == pytest.approx(1e-5)
    step = LRSchedule({"schedule": "exp", "start": 1e-3, "stop": 1e-5, "decay_steps": 10}, 100)
    assert [step(k) for k in (0, 9, 10, 99, 100)] == [1e-3, 1e-3, 1e-3 * step.rate, 1e-3 * step.rate ** 9, 1e-5]


def test_clock_staircase_that_cannot_decay_is_a_recipe_error():
    from mlip.train.config import load_config

    # the measured bug: the bench replaced training.steps by a 526-step estimate, decay_steps stayed 2000
    with pytest.raises(ValueError, match=r"optimizer.lr.decay_steps: must be at most training.steps \(526\) "
                                         r"with training.schedule_by_time .*got 2000"):
        load_config(None, {"optimizer": {"lr": EXP}, "training": {"steps": 526, "max_time": 900,
                                                                 "schedule_by_time": True}})
    for over, msg in [({"schedule": "exp", "patience": 3}, "optimizer.lr.patience: only with schedule plateau"),
                      ({"schedule": "plateau", "factor": 1.0}, r"optimizer.lr.factor: must be a number in \(0, 1\)"),
                      ({"schedule": "plateau", "base": "plateau"}, "optimizer.lr.base: must be one of exp, cosine"),
                      ({"schedule": "plateau", "pateince": 3}, "optimizer.lr.pateince: unknown key")]:
        with pytest.raises(ValueError, match=msg):
            load_config(None, {"optimizer": {"lr": over}})


def test_plateau_reduces_after_patience_with_floor_and_under_its_base():
    lr = LRSchedule({"schedule": "plateau", "start": 1e-2, "stop": 3e-3, "factor": 0.5, "patience": 2,
                     "threshold": 0.1}, 100)
    assert lr(5) == 1e-2
    assert [lr.observe(v) for v in (1.0, 0.95, 0.92)] == [False, False, True]  # 5 %, 8 %: not 10 % better
    assert lr(5) == 5e-3 and lr.state_dict() == {"reductions": 1, "best": 1.0, "bad": 0}
    assert [lr.observe(v) for v in (0.5, 0.6, 0.7)] == [False, False, True]
    assert lr(5) == 3e-3  # floor
    assert not any(lr.observe(1.0) for _ in range(6)) and lr.reductions == 2
    combined = LRSchedule({"schedule": "plateau", "base": "exp", "start": 1e-2, "stop": 1e-5, "decay_steps": 10,
                           "patience": 1}, 100, max_time=100.0)
    base = [combined(0, t) for t in range(0, 100, 7)]
    combined.observe(1.0), combined.observe(1.0)
    assert all(combined(0, t) == pytest.approx(max(1e-5, 0.5 * b)) for t, b in zip(range(0, 100, 7), base))
    assert combined(0, 100.0) == pytest.approx(1e-5)  # never slower than the clock-driven base
    fresh = LRSchedule({"schedule": "plateau"}, 10)
    fresh.load_state_dict(combined.state_dict())
    assert fresh.state_dict() == combined.state_dict()


def test_validation_loss_uses_the_limit_prefactors():
    pref = {"energy": Prefactor({"start": 0.02, "limit": 1.0}, "energy"),
            "forces": Prefactor({"start": 1000, "limit": 100.0}, "forces"), "virial": Prefactor(0.0, "virial")}
    errors = {"energy_rmse": 2e-3, "force_rmse": 0.05, "virial_rmse_per_atom": 1.0}
    assert validation_loss(errors, pref) == pytest.approx(1.0 * 4e-6 + 100.0 * 2.5e-3)
    assert validation_loss({"force_rmse": 0.05}, pref) == pytest.approx(0.25)  # terms without data drop out


def _rows(run):
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_best_checkpoint_is_the_lowest_validation_loss(tmp_path):
    from mlip.train.trainer import Trainer

    Trainer(cu_config(tmp_path, steps=30, val_every=5)).run()
    run = tmp_path / "run"
    val = [r for r in _rows(run) if r["val_loss"]]
    best = min(val, key=lambda r: float(r["val_loss"]))
    ck = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    assert ck["step"] == int(best["step"]) and ck["best"] == pytest.approx(float(best["val_loss"]), rel=1e-6)
    assert ck["best_by"] == "validation_loss"


def test_plateau_schedule_resumes_exactly(tmp_path):
    """A plateau schedule that reduces during the run: stopped at step 15 and resumed, the same
    parameters and learning rates as uninterrupted (its state travels in the checkpoint)."""
    from mlip.train.trainer import Trainer

    lr = {"schedule": "plateau", "base": "exp", "start": 0.003, "stop": 1e-4, "decay_steps": 10, "patience": 1,
          "threshold": 0.5, "factor": 0.5}

    def config(where):
        cfg = cu_config(where, steps=30, val_every=3)
        cfg["optimizer"]["lr"] = dict(lr)
        return cfg

    Trainer(config(tmp_path / "a")).run()
    full = _params(tmp_path / "a" / "run" / "checkpoints" / "last.pt")
    state = torch.load(tmp_path / "a" / "run" / "checkpoints" / "last.pt", weights_only=False)["lr_state"]
    assert state["reductions"] >= 2
    Trainer(config(tmp_path / "b")).run(stop_at=15)
    mid = torch.load(tmp_path / "b" / "run" / "checkpoints" / "last.pt", weights_only=False)["lr_state"]
    assert 1 <= mid["reductions"] < state["reductions"]
    tr = Trainer(config(tmp_path / "b"), resume=True)
    assert tr.lr.state_dict() == mid
    tr.run()
    assert torch.equal(full, _params(tmp_path / "b" / "run" / "checkpoints" / "last.pt"))
    lrs = lambda run: [r["lr"] for r in _rows(run)]  # noqa: E731
    assert lrs(tmp_path / "a" / "run") == lrs(tmp_path / "b" / "run")


@pytest.mark.parametrize("speed", [3.0, 1 / 3])
def test_trainer_clock_budget_decays_fully_and_resumes(tmp_path, speed):
    """Trainer with a fake clock: a 15 s budget, the schedule laid over 30 nominal steps (3 stairs);
    the machine takes `speed` × the estimated 0.5 s a step. The run descends every stair whatever the
    speed; interrupted and resumed after a long pause, it takes the same steps, learning rates and
    parameters, the budget counting only the training seconds."""
    from mlip.train.trainer import Trainer

    dt = 0.25 * speed  # the trainer reads the clock twice a step

    def config(where):
        return cu_config(where, steps=30, max_time=15.0, schedule_by_time=True, val_every=4, checkpoint_every=2,
                         log_every=1)

    tr = Trainer(config(tmp_path / "a"))
    tr.clock = FakeClock(dt)
    summary = tr.run()
    n = summary["steps"]
    assert n == math.ceil(15.0 / (2 * dt) - 0.5)
    rows = _rows(tmp_path / "a" / "run")
    lrs = sorted({float(r["lr"]) for r in rows}, reverse=True)
    assert float(rows[-1]["lr"]) == pytest.approx(0.003 * tr.lr.rate ** 2, rel=1e-3)  # the last of 3 stairs
    assert len(lrs) == 3 and lrs[0] == pytest.approx(0.003) and summary["elapsed_s"] <= 15.0 + 2 * dt
    # interrupted after `half` steps, resumed after a pause of 10^6 s of wall time
    half = n // 2
    b = Trainer(config(tmp_path / "b"))
    b.clock = FakeClock(dt)
    b.run(stop_at=half)
    b = Trainer(config(tmp_path / "b"), resume=True)
    b.clock = FakeClock(dt, t0=1e6)
    assert b.run()["steps"] == n
    assert torch.equal(_params(tmp_path / "a" / "run" / "checkpoints" / "last.pt"),
                       _params(tmp_path / "b" / "run" / "checkpoints" / "last.pt"))
    assert [(r["step"], r["lr"], r["val_loss"]) for r in rows] == \
        [(r["step"], r["lr"], r["val_loss"]) for r in _rows(tmp_path / "b" / "run")]

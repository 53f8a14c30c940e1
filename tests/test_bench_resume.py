"""Resumable benchmark runs (issue 13 item 5): bench_mlearn.py killed with SIGKILL mid-run and given
the same command again continues from its last checkpoint and ends with the same steps, learning curve
and test errors as an uninterrupted run. A tiny Deep Potential on EMT data written as mlearn JSON
(seconds, not minutes)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from test_training import CU_MODEL

REPO = Path(__file__).resolve().parents[1]
STEPS = 240


def _mlearn_records(frames) -> list:
    """Frames as mlearn JSON records (pymatgen-style structure, outputs.energy/forces); the EMT Cu
    frames are labelled Mo so that bench_mlearn's element choice applies."""
    out = []
    for f in frames:
        out.append({"structure": {"lattice": {"matrix": f.cell.tolist()},
                                  "sites": [{"species": [{"element": "Mo", "occu": 1}], "xyz": p.tolist()}
                                            for p in f.positions]},
                    "outputs": {"energy": float(f.energy), "forces": f.forces.tolist()}, "group": "md"})
    return out


def _setup(tmp_path: Path) -> tuple:
    from mlip.datagen import generate_frames

    data = tmp_path / "shared" / "mlearn" / "Mo"
    data.mkdir(parents=True)
    frames = generate_frames(n_frames=16, size=2, md_steps=5, seed=3)
    (data / "training.json").write_text(json.dumps(_mlearn_records(frames[:12])))
    (data / "test.json").write_text(json.dumps(_mlearn_records(frames[12:])))
    recipe = tmp_path / "tiny_mo.yaml"
    recipe.write_text(yaml.safe_dump({
        "seed": 5, "dtype": "float64", "data": {"val_fraction": 0.25},
        "model": {**CU_MODEL, "species": ["Mo"]},
        "loss": {"energy": {"start": 0.1, "limit": 1}, "forces": {"start": 100, "limit": 1}, "virial": 0.0},
        "optimizer": {"lr": {"start": 0.003, "stop": 1e-4, "decay_steps": 40}, "ema": 0.9},
        "training": {"steps": STEPS, "batch_size": 2, "val_every": 20, "checkpoint_every": 10, "log_every": 10}}))
    env = dict(os.environ, MLIP_SHARED_DATA=str(tmp_path / "shared"), OMP_NUM_THREADS="1")
    return recipe, env


def _cmd(recipe: Path, out: Path) -> list:
    return [sys.executable, str(REPO / "benchmarks" / "bench_mlearn.py"), "--recipe", str(recipe), "--element", "Mo",
            "--steps", str(STEPS), "--threads", "1", "--output", str(out)]


def _result(results: Path) -> dict:
    d = json.loads((results / "mlearn_Mo_tiny_mo.json").read_text())
    d["curve"] = [(r["step"], r["lr"], r["energy_rmse_meV"], r["force_rmse"], r["val_loss"]) for r in d["learning_curve"]]
    return d


def test_killed_bench_run_resumes_to_the_same_curve(tmp_path):
    recipe, env = _setup(tmp_path)
    done = subprocess.run(_cmd(recipe, tmp_path / "a"), env=dict(env, MLIP_BENCH_RESULTS=str(tmp_path / "ra")),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    whole = _result(tmp_path / "ra")
    assert whole["steps"] == STEPS and len(whole["curve"]) == STEPS // 20

    env_b = dict(env, MLIP_BENCH_RESULTS=str(tmp_path / "rb"))
    proc = subprocess.Popen(_cmd(recipe, tmp_path / "b"), env=env_b, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = tmp_path / "b" / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if last.exists() and torch.load(last, weights_only=False)["step"] >= 50:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = torch.load(last, weights_only=False)["step"]
    assert 50 <= killed_at < STEPS
    again = subprocess.run(_cmd(recipe, tmp_path / "b"), env=env_b, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming the run" in again.stdout
    resumed = _result(tmp_path / "rb")
    assert resumed["steps"] == whole["steps"] and resumed["curve"] == whole["curve"]
    assert resumed["test_force_rmse"] == whole["test_force_rmse"]
    assert resumed["test_energy_rmse_meV"] == whole["test_energy_rmse_meV"]
    # the same command once more: the finished run is continued (nothing left to train), not restarted
    third = subprocess.run(_cmd(recipe, tmp_path / "b"), env=env_b, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and _result(tmp_path / "rb")["curve"] == whole["curve"]
    # another budget in the same directory starts again; --resume of it is one clear error
    cmd = _cmd(recipe, tmp_path / "b")
    cmd[cmd.index("--steps") + 1] = "20"
    other = subprocess.run(cmd + ["--resume"], env=env_b, capture_output=True, text=True, timeout=300)
    assert other.returncode != 0 and other.stderr.strip().startswith("--resume:")
    assert len(other.stderr.strip().splitlines()) == 1

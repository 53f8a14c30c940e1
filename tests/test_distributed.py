"""Data-parallel training (torch.distributed, gloo on the CPU): 2 ranks give the parameters of 1 rank,
every family; a killed rank stops the job with one clear message and --resume (any number of ranks)
continues to the parameters of an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from tests.conftest import REPO

MODELS = {
    "deepmd": {"family": "deepmd", "rcut": 4.0, "rcut_smth": 2.0, "sel": [50], "neuron": [8, 16],
               "axis_neuron": 4, "fitting_neuron": [24, 24], "seed": 2},
    "mtp": {"family": "mtp", "level": 8, "cutoff": 4.5, "radial_basis_size": 6},
    "nequip": {"family": "nequip", "cutoff": 4.0, "num_layers": 2, "num_features": 8, "l_max": 1,
               "num_basis": 6, "radial_hidden": 16},
}


def recipe(tmp_path, family="deepmd", steps=50, **training):
    cfg = {
        "seed": 5, "dtype": "float64", "threads": 1,
        "data": {"generate": {"n_frames": 14, "size": 2, "md_steps": 5}, "val_fraction": 0.25},
        "model": dict(MODELS[family]),
        "loss": {"energy": {"start": 0.1, "limit": 1}, "forces": {"start": 100, "limit": 1}, "virial": 0.01},
        "optimizer": {"lr": {"start": 0.003, "stop": 1e-4, "decay_steps": 10}, "ema": 0.9, "clip_grad": 50.0},
        "training": {"steps": steps, "batch_size": 4, "val_every": 10, "checkpoint_every": 10,
                     "bias_refit_every": 7, "log_every": 5, **training},
    }
    path = tmp_path / f"{family}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def train(args, check=True):
    """`python -m mlip train ARGS` in a fresh process (the launcher spawns the ranks)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    for k in ("RANK", "WORLD_SIZE", "MASTER_PORT"):
        env.pop(k, None)
    res = subprocess.run([sys.executable, "-m", "mlip", "train", *args, "--quiet"], capture_output=True,
                         text=True, timeout=900, env=env, cwd=str(REPO))
    if check and res.returncode != 0:
        raise AssertionError(f"mlip train {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def params(run_dir, which="last.pt"):
    ck = torch.load(os.path.join(run_dir, "checkpoints", which), weights_only=False)
    flat = lambda sd: torch.cat([v.flatten() for v in sd.values() if v.dtype.is_floating_point])  # noqa: E731
    return flat(ck["model"]), flat(ck["ema"]) if ck["ema"] is not None else None, ck["step"]


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("family", ["deepmd", "mtp", "nequip"])
def test_two_ranks_give_the_parameters_of_one(tmp_path, family):
    cfg = recipe(tmp_path, family)
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    train([cfg, "-o", one])
    res = train([cfg, "-o", two, "--nproc", "2"])
    p1, e1, s1 = params(one)
    p2, e2, s2 = params(two)
    assert s1 == s2 == 50
    assert rel(p2, p1) <= 1e-10 and rel(e2, e1) <= 1e-10, (rel(p2, p1), rel(e2, e1))
    assert "exported" in res.stdout and os.path.isfile(os.path.join(two, "model.pt"))
    # rank 0 alone writes metrics.csv: the same rows as one process
    rows1 = open(os.path.join(one, "metrics.csv")).read().splitlines()
    rows2 = open(os.path.join(two, "metrics.csv")).read().splitlines()
    assert [r.split(",")[0] for r in rows1] == [r.split(",")[0] for r in rows2]


def _rank_pids(launcher_pid):
    """{rank: pid} of the launcher's children, read from their environment."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            if ppid != launcher_pid:
                continue
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = dict(kv.split(b"=", 1) for kv in fh.read().split(b"\0") if b"=" in kv)
            out[int(env[b"RANK"])] = int(pid)
        except (OSError, KeyError, ValueError, IndexError):
            continue
    return out


def test_killed_rank_stops_the_job_and_resume_matches(tmp_path):
    cfg = recipe(tmp_path, steps=300, val_every=50, checkpoint_every=20)
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    train([cfg, "-o", ref])
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    job = subprocess.Popen([sys.executable, "-m", "mlip", "train", cfg, "-o", run, "--nproc", "2", "--quiet"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
    last = os.path.join(run, "checkpoints", "last.pt")
    t0 = time.time()
    while not os.path.exists(last) and time.time() - t0 < 300 and job.poll() is None:
        time.sleep(0.05)
    ranks = _rank_pids(job.pid)
    assert set(ranks) == {0, 1}, ranks
    os.kill(ranks[1], signal.SIGKILL)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 2, (out, err)
    assert "rank 1 of 2 was killed by SIGKILL" in err and "--resume" in err
    assert "Traceback" not in err and "c10::" not in err
    _, _, stopped = params(run)
    assert 0 < stopped < 300
    train([cfg, "-o", run, "--resume"])  # one rank continues what two began
    p_ref, e_ref, _ = params(ref)
    p_run, e_run, step = params(run)
    assert step == 300 and rel(p_run, p_ref) <= 1e-10 and rel(e_run, e_ref) <= 1e-10, rel(p_run, p_ref)
    steps = [r.split(",")[0] for r in open(os.path.join(run, "metrics.csv")).read().splitlines()[1:]]
    assert len(steps) == len(set(steps)), "rows written twice"


def test_full_batch_optimiser_refuses_several_ranks(tmp_path):
    cfg = yaml.safe_load(open(recipe(tmp_path, "mtp")))
    cfg["optimizer"] = {"name": "varpro"}
    path = tmp_path / "varpro.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = train([str(path), "-o", str(tmp_path / "vp"), "--nproc", "2"], check=False)
    assert res.returncode == 2
    assert "optimizer varpro runs in one process" in res.stderr and "Traceback" not in res.stderr


def test_device_option(tmp_path):
    """device: auto trains (on the CPU here); device: cuda without a GPU is one clear error."""
    from mlip.train.distributed import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = yaml.safe_load(open(recipe(tmp_path, steps=3)))
    for device in ("auto", "cuda"):
        cfg["device"] = device
        path = tmp_path / f"{device}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        res = train([str(path), "-o", str(tmp_path / device)], check=False)
        if device == "auto" or torch.cuda.is_available():
            assert res.returncode == 0, res.stderr
        else:
            assert res.returncode == 2 and "Traceback" not in res.stderr
            assert "device: cuda, but torch.cuda.is_available() is False here" in res.stderr
    cfg["device"] = "gpu"
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = train([str(path), "-o", str(tmp_path / "gpu")], check=False)
    assert res.returncode == 2 and "device" in res.stderr and "'gpu'" in res.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine (CPU-only torch or no GPU)")
def test_cuda_training_matches_cpu(tmp_path):  # pragma: no cover - needs a GPU
    cfg = yaml.safe_load(open(recipe(tmp_path, steps=20)))
    for device in ("cpu", "cuda"):
        cfg["device"] = device
        path = tmp_path / f"{device}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        train([str(path), "-o", str(tmp_path / device)])
    assert rel(params(str(tmp_path / "cuda"))[0], params(str(tmp_path / "cpu"))[0]) <= 1e-8


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("launcher", ["torchrun", "mpirun"])
def test_other_launchers(tmp_path, launcher):
    """torchrun (RANK/WORLD_SIZE) and MPICH's mpirun (PMI_RANK/PMI_SIZE, MASTER_* from the job) start the
    same data-parallel run as --nproc."""
    exe = os.path.join(os.path.dirname(sys.executable), launcher)
    if not os.path.exists(exe):
        pytest.skip(f"{launcher} is not installed next to {sys.executable}")
    cfg = recipe(tmp_path, steps=12)
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    train([cfg, "-o", one])
    args = ["-m", "mlip", "train", cfg, "-o", two, "--quiet"]
    if launcher == "torchrun":
        cmd = [exe, "--standalone", "--nproc-per-node", "2", *args]
    else:
        cmd = [exe, "-n", "2", "-prepend-rank", "-env", "MASTER_ADDR", "127.0.0.1",
               "-env", "MASTER_PORT", str(_free_port()),
               sys.executable, *args]
    # faulthandler: should a rank abort at exit again (seen once in a full suite), its Python stacks are shown
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=str(REPO))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("exported") == 1  # rank 0 alone exports
    assert rel(params(two)[0], params(one)[0]) <= 1e-10

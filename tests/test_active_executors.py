"""Labelling executors of the active-learning loop (`label.executor`: local | process | dask): the same
label files whatever computes them; SIGKILL of the loop while dask labels, and of one dask worker in
the middle of a label, both end with the labelled set of an uninterrupted run; a real quantum-chemistry
oracle (GFN1-xTB through tblite) that does not converge is recorded and the loop goes on."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from ase.calculators.emt import EMT

from tests.test_active_loop import check_kill_and_resume

HERE = os.path.dirname(os.path.abspath(__file__))


def _need(module: str, extra: str = "xtb"):
    try:
        __import__(module)
    except ImportError:
        pytest.skip(f"{module} is not installed (pip install 'mlip[{extra}]')")


class SlowEMT(EMT):
    """EMT that takes `delay` seconds per calculation and first leaves its pid in `pid_dir`."""

    def __init__(self, delay: float = 0.0, pid_dir: str = "", **kwargs):
        super().__init__(**kwargs)
        self.delay, self.pid_dir = delay, pid_dir

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if self.pid_dir and atoms is not None:
            with open(os.path.join(self.pid_dir, f"{atoms.info.get('al_index')}.{os.getpid()}"), "w"):
                pass
        time.sleep(self.delay)
        super().calculate(atoms, properties, system_changes) if system_changes is not None else \
            super().calculate(atoms, properties)


def _tasks(out_dir, n=6):
    from ase.build import bulk

    tasks = []
    for j in range(n):
        at = bulk("Cu", "fcc", a=3.6 + 0.02 * j, cubic=True).repeat(2)
        at.rattle(0.05, seed=j)
        tasks.append((at, os.path.join(out_dir, f"{j:04d}.xyz"), os.path.join(out_dir, f"{j:04d}.failed.json"),
                      {"al_id": f"t{j}", "al_index": j, "al_iteration": 0}))
    return tasks


def _run(tmp_path, name, executor, oracle=None, n=6, **label):
    from mlip.active.executors import run_labels

    d = tmp_path / name
    d.mkdir()
    cfg = {"oracle": oracle or {"class": "ase.calculators.emt:EMT", "kwargs": {}},
           "label": {"executor": executor, "workers": 2, "address": None, "threads": 1, **label}}
    seen = []
    run_labels(cfg, _tasks(str(d), n), lambda i, status: seen.append((i, status)))
    return d, seen


@pytest.mark.parametrize("executor", ["process", "dask"])
def test_executors_write_the_labels_of_local(tmp_path, executor, monkeypatch):
    if executor == "dask":
        _need("distributed")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    ref, _ = _run(tmp_path, "local", "local")
    got, seen = _run(tmp_path, executor, executor)
    assert sorted(seen) == [(i, "done") for i in range(6)]
    for j in range(6):
        assert (ref / f"{j:04d}.xyz").read_bytes() == (got / f"{j:04d}.xyz").read_bytes()
        assert (got / f"{j:04d}.time.json").is_file()
    assert not list(got.glob("*.tmp*"))


def test_dask_worker_killed_mid_label(tmp_path, monkeypatch):
    """SIGKILL one dask worker while it computes a label: the task runs again elsewhere and the label
    files are those of an uninterrupted local run."""
    _need("distributed")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    ref, _ = _run(tmp_path, "local", "local", n=4)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    killed = []

    def killer():
        t0 = time.time()
        while time.time() - t0 < 120 and not killed:
            started = sorted(os.listdir(pid_dir))
            if started:
                j, pid = started[0].split(".")
                time.sleep(0.5)  # well inside its 3 s label
                os.kill(int(pid), 9)
                killed.append((int(j), int(pid)))
            time.sleep(0.05)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    oracle = {"class": "tests.test_active_executors:SlowEMT", "kwargs": {"delay": 3.0, "pid_dir": str(pid_dir)}}
    got, seen = _run(tmp_path, "dask", "dask", oracle=oracle, n=4)
    th.join()
    assert killed, "no worker was killed"
    j, pid = killed[0]
    assert len([f for f in os.listdir(pid_dir) if f.startswith(f"{j}.")]) >= 2  # label j started twice
    assert sorted(i for i, _ in seen) == [0, 1, 2, 3] and {s for _, s in seen} == {"done"}
    for k in range(4):
        assert (ref / f"{k:04d}.xyz").read_bytes() == (got / f"{k:04d}.xyz").read_bytes()


def test_loop_killed_while_dask_labels_then_resumed(tmp_path):
    """The whole loop (subprocess `mlip al`) SIGKILLed as the 2nd label comes back from the dask
    workers, then resumed: the labelled set, the models and the summary equal an uninterrupted run; only
    the label the other worker was computing at the kill may be computed again (that dask writes the
    labels of a local run is the test above)."""
    _need("distributed")
    check_kill_and_resume(tmp_path, kills=("label:0:2", "train:1:2"), in_flight=1,
                          label={"executor": "dask", "workers": 2})


@pytest.mark.parametrize("n", [8, 16, 32])
def test_water_box_has_no_overlapping_molecules(n):
    """The generated liquid-water start (the xTB recipes' initial set and test-set MD) keeps molecules
    apart: every intermolecular distance >= 1.5 Å (minimum image), intact H2O geometry, the density asked
    for. Before orientations were drawn against the molecules already placed, hydrogens of neighbouring
    molecules came as close as 0.64 Å, and the loop's exploration pool was mostly their relaxation."""
    from mlip.datagen import water_box

    for seed in range(3):
        box = water_box(n, density=1.0, seed=seed)
        assert box.get_chemical_formula() == f"H{2 * n}O{n}"
        d = box.get_all_distances(mic=True)
        mol = np.repeat(np.arange(n), 3)
        assert d[mol[:, None] != mol[None, :]].min() >= 1.5
        assert np.allclose(d[0, 1:3], 0.9686, atol=1e-3)  # O-H of ase's H2O, unchanged by rotation
        mass = box.get_masses().sum() / 6.02214076e23  # g
        assert abs(mass / (box.get_volume() * 1e-24) - 1.0) < 1e-6  # g/cm³


def test_xtb_oracle_not_converging_is_recorded(tmp_path):
    """GFN1-xTB with one SCF iteration does not converge: the label is recorded as failed with the
    oracle's error and the others go on; a converged xTB label has finite energy, forces and stress."""
    _need("tblite")
    from mlip.active.executors import label_one
    from mlip.datagen import water_box

    xtb = {"class": "tblite.ase:TBLite", "kwargs": {"method": "GFN1-xTB", "verbosity": 0}}
    box = water_box(8, seed=1, rattle=0.05)
    ok = label_one(xtb, box, str(tmp_path / "0000.xyz"), str(tmp_path / "0000.failed.json"), {"al_index": 0})
    bad = label_one({**xtb, "kwargs": {**xtb["kwargs"], "max_iterations": 1}}, box, str(tmp_path / "0001.xyz"),
                    str(tmp_path / "0001.failed.json"), {"al_index": 1, "al_id": "x"})
    assert (ok, bad) == ("done", "failed")
    import json

    from ase.io import read

    err = json.load(open(tmp_path / "0001.failed.json"))["error"]
    assert "converge" in err.lower() or "scf" in err.lower(), err
    a = read(tmp_path / "0000.xyz")
    assert np.isfinite(a.get_potential_energy()) and np.isfinite(a.get_forces()).all()
    assert np.isfinite(a.get_stress()).all()


@pytest.mark.parametrize("recipe", ["al_water_xtb.yaml", "al_water_xtb_mtp.yaml", "al_water_xtb_mtp_info.yaml"])
def test_al_water_xtb_recipe_end_to_end(tmp_path, recipe):
    """`mlip al training/<recipe>`, reduced (2 iterations, short trainings and MD): xTB labels
    from a pool of 2 processes, γ-halted exploration, a model at the end; the labelled set also holds
    the oracle's CPU time per label. The DP recipe (Adam steps), the MTP one (variable projection,
    γ from the MTP's own linear basis) and the MTP one selecting by information with a burn-in."""
    _need("tblite")
    import json

    import yaml

    from tests.test_active_loop import run_cli

    cfg = yaml.safe_load(open(os.path.join(os.path.dirname(HERE), "training", recipe)))
    cfg.update(output=str(tmp_path / "al"), iterations=2)
    if cfg["train"]["model"]["family"] == "mtp":
        cfg["first_steps"] = 10  # full-batch evaluations
        cfg["train"]["optimizer"]["max_iter"] = 5
    else:
        cfg["first_steps"] = 300
        cfg["train"]["training"]["steps"] = 150
    cfg["explore"].update(steps=100, runs=3)
    if cfg["explore"].get("burn_in"):  # the information recipe: a burn-in that fits the shortened runs
        cfg["explore"]["burn_in"] = 40
    cfg["select"]["max_labels"] = 4
    proc = run_cli(cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = open(tmp_path / "al" / "al.log").read()
    # iteration 1 labels, or the MTP's grade finds nothing left to learn (a converged loop stops there)
    iters = (0,) if "converged at iteration 1" in log else (0, 1)
    done = [json.load(open(tmp_path / "al" / f"iter_{k:03d}" / "label" / "done.json")) for k in iters]
    assert all(d["labelled"] >= 1 for d in done) and all(d["oracle_cpu_s"] > 0 for d in done)
    assert (tmp_path / "al" / "model.pt").is_file()
    assert "with tblite.ase:TBLite (process, 2 workers)" in log

"""The resumable active-learning loop (issue 5, part 3): SIGKILL during the train, explore and label
stages, then a re-run, gives the very labelled set of an uninterrupted run with no label computed
twice — with a Deep Potential (Adam), an MTP with γ and an MTP committee (varpro); an oracle that
raises or returns NaN only fails that configuration; config errors are clear."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from ase.calculators.emt import EMT

HERE = os.path.dirname(os.path.abspath(__file__))


class CountingEMT(EMT):
    """EMT that appends the `al_id` of every finished calculation to a log file."""

    def __init__(self, log: str = "", **kwargs):
        super().__init__(**kwargs)
        self.log = log

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if system_changes is None:
            super().calculate(atoms, properties)
        else:
            super().calculate(atoms, properties, system_changes)
        if self.log:
            with open(self.log, "a") as fh:
                fh.write(f"{atoms.info.get('al_id')}\n")


class FlakyEMT(EMT):
    """Raises for the first selected configuration, returns NaN forces for the second."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if atoms is not None and atoms.info.get("al_index") == 0:
            raise RuntimeError("SCF did not converge (simulated)")
        super().calculate(atoms, properties, system_changes) if system_changes is not None else \
            super().calculate(atoms, properties)
        if atoms is not None and atoms.info.get("al_index") == 1:
            self.results["forces"] = self.results["forces"] * np.nan


def tiny_config(out, oracle, iterations=2, **over):
    cfg = {
        "output": str(out), "seed": 3, "threads": 1, "iterations": iterations,
        "init": {"generate": {"kind": "emt", "element": "Cu", "n_frames": 6, "size": 2,
                              "temperatures": [300, 600], "strain": 0.02, "md_steps": 5}},
        "train": {
            "model": {"family": "deepmd", "rcut": 4.0, "rcut_smth": 2.0, "sel": [60], "neuron": [8, 16],
                      "axis_neuron": 4, "fitting_neuron": [24, 24], "type_one_side": True},
            "loss": {"energy": {"start": 0.2, "limit": 1.0}, "forces": {"start": 100.0, "limit": 1.0}},
            "optimizer": {"lr": {"schedule": "exp", "start": 0.003, "stop": 1.0e-4, "decay_steps": 20}},
            "training": {"steps": 30, "batch_size": 2, "val_every": 1000, "checkpoint_every": 10,
                         "log_every": 10},
        },
        "first_steps": 60,
        "explore": {"temperatures": [600, 1500], "strains": [0.0, 0.05], "steps": 30, "every": 10, "runs": 4},
        "select": {"gamma_lo": 1.2, "gamma_hi": 1000, "max_labels": 3},
        "oracle": oracle,
    }
    for k, v in over.items():
        cfg[k] = v
    return cfg


def run_cli(cfg, kill=None):
    path = os.path.join(cfg["output"] + ".yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]),
               MLIP_NUM_THREADS="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env.pop("MLIP_AL_TEST_KILL", None)
    if kill:
        env["MLIP_AL_TEST_KILL"] = kill
    proc = subprocess.run([sys.executable, "-m", "mlip", "al", path, "-q"], env=env, capture_output=True,
                          text=True, timeout=600)
    return proc


def labelled(out):
    from ase.io import read

    rows = {}
    for p in sorted(glob.glob(os.path.join(out, "iter_*", "label", "labels.xyz"))):
        for a in read(p, ":"):
            rows[a.info["al_id"]] = (a.get_positions(), a.get_potential_energy(), a.get_forces(), a.cell[:].copy())
    return rows


KILLS = ("train:0:3", "explore:0:45", "label:0:2", "train:1:2", "explore:1:70")


def check_kill_and_resume(tmp_path, kills=KILLS, in_flight: int = 0, **over):
    """An uninterrupted run and one SIGKILLed at each of `kills` then resumed label the very same
    configurations, compute no label twice, lose none, and end with identical models and summaries.
    `in_flight`: labels that a pool of workers may have been computing when the loop was killed; they
    are computed again after the resume (at most that many repeats)."""
    ref_log, kill_log = str(tmp_path / "ref_calls.txt"), str(tmp_path / "kill_calls.txt")
    ref = tiny_config(tmp_path / "ref", {"class": "test_active_loop:CountingEMT", "kwargs": {"log": ref_log}}, **over)
    proc = run_cli(ref)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = tiny_config(tmp_path / "killed", {"class": "test_active_loop:CountingEMT", "kwargs": {"log": kill_log}},
                      **over)
    for kill in kills:
        proc = run_cli(cfg, kill)
        assert proc.returncode == -9, (kill, proc.returncode, proc.stderr[-3000:])
    state = json.load(open(tmp_path / "killed" / "iter_000" / "label" / "done.json"))
    assert state["labelled"] >= 2
    proc = run_cli(cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = labelled(str(tmp_path / "ref")), labelled(str(tmp_path / "killed"))
    assert len(a) >= 3 and sorted(a) == sorted(b)
    for key in a:
        for x, y in zip(a[key], b[key]):
            np.testing.assert_array_equal(x, y)
    # no label computed twice, none lost
    calls = open(kill_log).read().split()
    assert sorted(set(calls)) == sorted(b) and len(calls) - len(set(calls)) <= in_flight * len(kills)
    assert sorted(open(ref_log).read().split()) == sorted(a)
    # the same models at the end: exports identical in their predictions (and γ with grade gamma)
    from mlip import MLIPCalculator
    from ase.build import bulk

    at = bulk("Cu", "fcc", a=3.63, cubic=True).repeat(2)
    at.rattle(0.1, seed=1)
    e = []
    models = ["model.pt"] + [f"model_{m}.pt" for m in range(1, int(over.get("committee", 1)))]
    for run in ("ref", "killed"):
        at.calc = MLIPCalculator([str(tmp_path / run / name) for name in models])
        e.append((at.get_potential_energy(), at.get_forces().copy(), at.calc.results.get("gamma")))
    assert e[0][0] == e[1][0] and np.array_equal(e[0][1], e[1][1]) and e[0][2] == e[1][2]
    if over.get("grade", "gamma") == "gamma":
        assert e[0][2] is not None
    import csv

    rows = [list(csv.DictReader(open(tmp_path / run / "summary.csv"))) for run in ("ref", "killed")]
    for r in rows:
        for x in r:
            x.pop("seconds")
    assert rows[0] == rows[1]
    return rows[0]


def test_sigkill_in_every_stage_then_resume_gives_the_same_labels(tmp_path):
    # SIGKILL: iteration 0 training (3rd checkpoint), exploration (MD step 45: inside the 2nd run),
    # labelling (as the 2nd oracle call begins), iteration 1 training, iteration 1 exploration
    check_kill_and_resume(tmp_path)


# MTP through `mlip train`'s variable-projection optimiser (full batch; a killed member is retrained
# from its start, see mlip.active.loop), low level so that a fit takes a fraction of a second
MTP_TRAIN = {"model": {"family": "mtp", "level": 6, "cutoff": 4.0, "radial_basis_size": 6},
             "loss": {"energy": 1.0, "forces": 0.01, "virial": 0.0},
             "optimizer": {"name": "varpro", "max_iter": 15},
             "training": {"checkpoint_every": 5}}


def test_mtp_gamma_kill_and_resume(tmp_path):
    rows = check_kill_and_resume(tmp_path, train=MTP_TRAIN, first_steps=30)
    assert float(rows[0]["grade_max"]) > 1.2  # γ of the MTP's active set drove the selection
    cfg = yaml.safe_load(open(tmp_path / "ref" / "iter_001" / "train" / "m0" / "config.yaml"))
    assert cfg["optimizer"]["name"] == "varpro" and cfg["model"]["init_from"].endswith(
        os.path.join("iter_000", "train", "m0", "checkpoints", "last.pt"))


def test_mtp_committee_kill_and_resume(tmp_path):
    rows = check_kill_and_resume(tmp_path, train=MTP_TRAIN, first_steps=30, committee=2, grade="deviation",
                                 select={"deviation_lo": 0.02, "deviation_hi": 5.0, "max_labels": 3})
    assert float(rows[0]["grade_max"]) > 0.02  # the members differ (their model seeds do)
    seeds = [yaml.safe_load(open(tmp_path / "ref" / "iter_000" / "train" / f"m{m}" / "config.yaml"))["model"]
             .get("seed", 0) for m in (0, 1)]
    assert seeds == [0, 1000]


def test_failing_oracle_records_the_configuration_and_continues(tmp_path, capsys):
    from mlip.active.loop import load_al_config, run_loop

    cfg = tiny_config(tmp_path / "flaky", {"class": "test_active_loop:FlakyEMT"}, iterations=1,
                      first_steps=30)
    path = tmp_path / "flaky.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rows = run_loop(load_al_config(str(path)), log=False)
    out = capsys.readouterr().out
    d = tmp_path / "flaky" / "iter_000" / "label"
    f0 = json.load(open(d / "0000.failed.json"))
    f1 = json.load(open(d / "0001.failed.json"))
    assert "SCF did not converge" in f0["error"] and f0["al_id"]
    assert "non-finite forces" in f1["error"]
    done = json.load(open(d / "done.json"))
    assert done["failed"] == 2 and done["labelled"] == done["selected"] - 2 >= 1
    assert rows[0]["failed"] == 2
    # the loop went on: the final training used the good label(s)
    assert rows[-1]["iteration"] == 1 and rows[-1]["train_frames"] == 6 + done["labelled"]
    assert "fail" in out


def test_first_iteration_can_fine_tune_a_trained_model(tmp_path):
    """`train.model.init_from` (relative to the configuration's folder): iteration 0 fine-tunes that
    model instead of training from scratch; later iterations fine-tune their predecessor."""
    from mlip.active.loop import load_al_config, run_loop

    first = tiny_config(tmp_path / "first", {}, iterations=1, first_steps=20, select={"max_labels": 0})
    (tmp_path / "first.yaml").write_text(yaml.safe_dump(first))
    run_loop(load_al_config(str(tmp_path / "first.yaml")), log=False)
    cfg = tiny_config(tmp_path / "second", {}, iterations=1, first_steps=20)
    cfg["train"]["model"]["init_from"] = os.path.join("first", "iter_000", "train", "m0")
    (tmp_path / "second.yaml").write_text(yaml.safe_dump(cfg))
    run_loop(load_al_config(str(tmp_path / "second.yaml")), log=False)
    log = open(tmp_path / "second" / "al.log").read()
    assert "iteration 0: train model 0 on 6 configurations (fine-tune from " in log
    saved = [yaml.safe_load(open(tmp_path / "second" / f"iter_00{k}" / "train" / "m0" / "config.yaml"))
             for k in (0, 1)]
    assert saved[0]["model"]["init_from"] == str(tmp_path / "first" / "iter_000" / "train" / "m0")
    assert saved[1]["model"]["init_from"].endswith(os.path.join("second", "iter_000", "train", "m0",
                                                                "checkpoints", "last.pt"))


def test_config_errors(tmp_path):
    from mlip.active.loop import load_al_config
    from mlip.cli import main

    base = tiny_config(tmp_path / "x", {})
    for change, msg in [({"grade": "entropy"}, "grade must be"),
                        ({"grade": "deviation"}, "committee >= 2"),
                        ({"select": {"gamma_lo": 0.5}}, "gamma_lo must be >= 1"),
                        ({"select": {"gamma_lo": 5, "gamma_hi": 2}}, "lo < hi"),
                        ({"explore": {"enginee": "ase"}}, "explore.enginee: unknown active-learning configuration key")]:
        cfg = dict(base, **change)
        p = tmp_path / "c.yaml"
        p.write_text(yaml.safe_dump(cfg))
        with pytest.raises(ValueError, match=msg):
            load_al_config(str(p))
    assert main(["al", str(tmp_path / "missing.yaml")]) == 2


def test_explore_continue_starts_from_each_seeds_last_state(tmp_path):
    """`explore.continue`: a seed's run starts from the final snapshot of its latest unhalted run of an
    earlier iteration, with that run's strain undone; halted runs and other seeds keep their start."""
    from ase.build import bulk

    from mlip.active.explore import Explorer
    from mlip.active.store import KillSwitch, RunStore, atomic_atoms, atomic_json, bare

    seeds = [bulk("Cu", "fcc", a=3.6, cubic=True), bulk("Cu", "fcc", a=3.7, cubic=True)]
    store = RunStore(str(tmp_path), verbose=False)

    def run(k, r, seed, strain, halted, shift):
        d = store.it_dir(k, "explore")
        os.makedirs(d, exist_ok=True)
        snaps = []
        for step in (10, 20):
            a = seeds[seed].copy()
            a.set_cell(a.cell[:] * (1 + strain), scale_atoms=True)
            a.positions += shift * step
            snaps.append(bare(a, {"step": step, "strain": strain}))
        atomic_atoms(os.path.join(d, f"run_{r:03d}.xyz"), snaps)
        atomic_json(os.path.join(d, f"run_{r:03d}.json"),
                    {"steps": 20, "halted": halted, "snapshots": 2, "max_grade": 1.0, "seed": seed,
                     "temperature": 300.0, "strain": strain, "pressure": None})

    run(0, 0, 0, 0.02, False, 0.001)
    run(0, 1, 1, 0.0, True, 0.002)  # halted: never a start
    run(1, 0, 0, -0.01, False, 0.003)
    cfg = {"seed": 0, "grade": "gamma", "explore": {"continue": True},
           "select": {"gamma_lo": 2.0, "gamma_hi": 50.0, "gamma_break": None}}
    ex = Explorer(cfg, store, KillSwitch(), lambda: [bare(a) for a in seeds], lambda: ["Cu"])
    s1, s2 = ex.starts(1), ex.starts(2)
    expect1 = (seeds[0].positions * 1.02 + 0.001 * 20) / 1.02  # iteration 0's final state, strain undone
    expect2 = (seeds[0].positions * 0.99 + 0.003 * 20) / 0.99  # iteration 1's final state
    assert np.allclose(s1[0].positions, expect1) and np.allclose(s1[0].cell[:], seeds[0].cell[:])
    assert np.allclose(s2[0].positions, expect2) and np.allclose(s2[0].cell[:], seeds[0].cell[:])
    assert np.allclose(s2[1].positions, seeds[1].positions)  # its only run halted
    assert np.allclose(ex.starts(0)[0].positions, seeds[0].positions)
    cfg["explore"]["continue"] = False
    assert np.allclose(ex.starts(2)[0].positions, seeds[0].positions)


def test_explore_continue_halted_and_trajectory_age(tmp_path):
    """`explore.continue_halted`: a halted run's seed goes on from its last snapshot below lo; every start
    carries its trajectory's age (0 for a seed), which a run adds its steps to."""
    from ase.build import bulk

    from mlip.active.explore import Explorer
    from mlip.active.store import KillSwitch, RunStore, atomic_atoms, atomic_json, bare

    seed = bulk("Cu", "fcc", a=3.6, cubic=True)
    store = RunStore(str(tmp_path), verbose=False)
    d = store.it_dir(0, "explore")
    os.makedirs(d)
    snaps = []
    for step, grade in ((10, 1.0), (20, 1.5), (25, 12.0)):  # halted at step 25 (γ ≥ break)
        a = seed.copy()
        a.positions += 0.001 * step
        snaps.append(bare(a, {"step": step, "strain": 0.0, "grade": grade, "age": 100 + step}))
    atomic_atoms(os.path.join(d, "run_000.xyz"), snaps)
    atomic_json(os.path.join(d, "run_000.json"), {"steps": 25, "halted": True, "snapshots": 3, "max_grade": 12.0,
                                                  "seed": 0, "temperature": 300.0, "strain": 0.0, "pressure": None})
    cfg = {"seed": 0, "grade": "gamma", "explore": {"continue": True, "continue_halted": True},
           "select": {"gamma_lo": 2.0, "gamma_hi": 10.0, "gamma_break": None}}
    ex = Explorer(cfg, store, KillSwitch(), lambda: [bare(seed)], lambda: ["Cu"])
    start = ex.starts(1)[0]
    assert np.allclose(start.positions, seed.positions + 0.02) and start.info["age"] == 120
    cfg["explore"]["continue_halted"] = False
    start = ex.starts(1)[0]
    assert np.allclose(start.positions, seed.positions) and start.info["age"] == 0


def test_information_strategy_with_burn_in_end_to_end(tmp_path):
    """`select.strategy: information` with `explore.burn_in`: a loop runs; no labelled configuration is
    younger than the burn-in; the selection reports its informative fraction."""
    out = tmp_path / "info"
    cfg = tiny_config(out, {"class": "ase.calculators.emt:EMT", "kwargs": {}}, iterations=2)
    cfg["explore"].update({"burn_in": 20, "every": 5, "continue": True, "continue_halted": True})
    cfg["select"].update(strategy="information", leverage_lo=1.5)
    proc = run_cli(cfg)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    from ase.io import read

    done = json.load(open(os.path.join(out, "iter_000", "select", "done.json")))
    assert "frac_informative" in done and 0.0 <= done["frac_informative"] <= 1.0
    picked = [a for p in sorted(glob.glob(os.path.join(out, "iter_*", "select", "selected.xyz"))) for a in read(p, ":")]
    assert all(int(a.info["age"]) >= 20 for a in picked)
    assert done["selected"] <= 3

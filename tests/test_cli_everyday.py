"""The everyday CLI on the quick-start Cu model: `mlip test --plot/--json` per group, `mlip info`,
`mlip md` in every ensemble with `--plot`, checked against physics (NPT lattice constant against a
direct minimisation of E(a), NVT temperature against its target) and bad MD numbers."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def qs(tmp_path_factory):
    """The quick-start recipe (training/quickstart_cu.yaml) trained as the quick start trains it, and
    independent EMT test data with data groups."""
    from mlip.cli import main
    from mlip.data import write_extxyz
    from mlip.datagen import generate_frames

    out = tmp_path_factory.mktemp("qs")
    run = out / "run"
    assert main(["train", str(REPO / "training" / "quickstart_cu.yaml"), "-o", str(run),
                 "--set", "training.progress=false"]) == 0
    write_extxyz(generate_frames(n_frames=10, size=2, seed=1234), str(out / "test.xyz"))
    return {"dir": out, "model": str(run / "model.pt"), "test": str(out / "test.xyz"), "run": run}


def _png_ok(path):
    from PIL import Image

    assert os.path.getsize(path) > 10_000
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 300


def test_test_plot_and_groups(qs, capsys):
    from mlip.cli import main
    from mlip.cli.test import accumulate_export
    from mlip.data import read_frames
    from mlip.plots import parity_figure

    png = str(qs["dir"] / "parity.png")
    assert main(["test", qs["model"], qs["test"], "--plot", png, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    _png_ok(png)
    groups = rep["groups"]
    assert {"strained+rattled", "md 300 K"} <= set(groups)
    assert sum(g["n_frames"] for g in groups.values()) == rep["n_frames"] == 10
    # per-group errors are the overall errors restricted to the group's frames
    frames = read_frames(qs["test"])
    sub = [f for f in frames if f.group == "strained+rattled"]
    acc = accumulate_export(qs["model"], sub)
    assert acc.summary()["force_rmse"] == pytest.approx(groups["strained+rattled"]["force_rmse"], rel=1e-12)
    # the panels and their axes
    labels = parity_figure(accumulate_export(qs["model"], frames), str(qs["dir"] / "p2.png"))
    assert labels == [("reference energy (eV/atom)", "model energy (eV/atom)"),
                      ("reference force component (eV/Å)", "model force component (eV/Å)"),
                      ("reference stress component (GPa)", "model stress component (GPa)")]
    # the table form names the groups; the progress bar is on stderr unless --quiet
    assert main(["test", qs["model"], qs["test"]]) == 0
    cap = capsys.readouterr()
    assert "strained+rattled" in cap.out and "mlip test" in cap.err
    assert main(["test", qs["model"], qs["test"], "--quiet"]) == 0
    assert "mlip test" not in capsys.readouterr().err


def test_test_committee_mean(qs, capsys):
    """--committee scores the committee's mean: a committee of one model twice has that model's errors."""
    from mlip.cli import main

    assert main(["test", qs["model"], qs["test"], "--json", "--quiet"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert main(["test", qs["model"], qs["test"], "--committee", qs["model"], "--json", "--quiet"]) == 0
    two = json.loads(capsys.readouterr().out)
    for key in ("energy_mae", "force_rmse", "stress_rmse_gpa"):
        assert two[key] == pytest.approx(one[key], rel=1e-12, abs=1e-15)
    assert main(["test", qs["model"], qs["test"], "--committee", qs["model"], "--quiet"]) == 0
    assert f"the mean of {qs['model']}, {qs['model']}" in capsys.readouterr().out


def test_info(qs, capsys):
    import torch

    from mlip.cli import main

    assert main(["info", qs["model"], "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    n = sum(p.numel() for p in torch.jit.load(qs["model"]).parameters())
    assert meta["family"] == "mtp" and meta["species"] == ["Cu"] and meta["cutoff"] == 4.5
    assert meta["n_parameters"] == n and meta["dtype"] == "float64" and meta["has_grade"] is False
    train = meta["training"]["data"]["train"]
    # RUN/model.pt is the best validated checkpoint: an evaluation of the full-batch fit (max_iter 100)
    assert meta["training"]["checkpoint"] == "best.pt" and train["n_frames"] == 68
    assert 0 < meta["training"]["step"] <= 100
    assert train["elements"] == {"Cu": train["n_atoms"]} and train["labelled"]["virial"] == 68
    assert main(["info", qs["model"]]) == 0
    out = capsys.readouterr().out
    for text in ("family             mtp", "cutoff             4.5 Å", f"parameters         {n:,}",
                 "active set         none"):
        assert text in out
    assert re.search(r"\n  train data +68 frames, 2164 atoms \(Cu 2164\); labels: energy 68, forces 68, virial 68; "
                     r"groups: md 1500 K", out)
    assert main(["info", str(qs["dir"] / "missing.pt")]) == 2


def _fcc(a, n):
    from ase.build import bulk

    return bulk("Cu", "fcc", a=a, cubic=True).repeat(n)


def test_npt_lattice_constant_matches_energy_minimum(qs):
    """NPT (MTK, isotropic) at 30 K and 0 GPa from a strained start converges to the lattice constant
    that minimises the model's E(a) (classical thermal expansion at 30 K is ~0.05%)."""
    from scipy.optimize import minimize_scalar

    from mlip.calculator import MLIPCalculator
    from mlip.md import run_md

    calc = MLIPCalculator(qs["model"])

    def e_per_atom(a):
        atoms = _fcc(a, 1)
        atoms.calc = calc
        return atoms.get_potential_energy() / len(atoms)

    grid = np.linspace(3.3, 3.9, 31)
    k = int(np.argmin([e_per_atom(a) for a in grid]))
    assert 0 < k < len(grid) - 1, "E(a) has no minimum inside 3.3–3.9 Å"
    a0 = minimize_scalar(e_per_atom, bracket=(grid[k - 1], grid[k], grid[k + 1]), tol=1e-10).x
    start = a0 * 1.02  # 2% too large: the barostat has to do the work
    res = run_md(_fcc(start, 3), calc, steps=3000, temperature_K=30, ensemble="npt", tdamp_fs=50,
                 pdamp_fs=300, progress=False, log=str(qs["dir"] / "npt.log"), every=5)
    a_md = (res["mean_volume_A3"] / 27) ** (1 / 3)
    assert abs(a_md / a0 - 1) < 3e-3, (a_md, a0)
    assert abs(a_md / start - 1) > 0.01  # it moved
    assert abs(res["mean_pressure_GPa"]) < 0.1


@pytest.mark.parametrize("ensemble", ["nvt-nhc", "bussi"])
def test_nvt_temperature(qs, ensemble):
    """2000 steps of 1 fs at 300 K, 256 atoms: the mean temperature over the second half is within
    5% of the target, and the ensemble's conserved quantity is conserved."""
    from mlip.calculator import MLIPCalculator
    from mlip.md import run_md

    res = run_md(_fcc(3.63, 4), MLIPCalculator(qs["model"]), steps=2000, temperature_K=300,
                 ensemble=ensemble, tdamp_fs=50, progress=False, every=5)
    assert abs(res["mean_temperature_K"] / 300 - 1) < 0.05, res
    assert res["max_dev_per_atom"] < 1e-3, res


def test_md_cli_plot_and_log(qs, capsys):
    from mlip.cli import main
    from mlip.plots import md_figure, read_md_log

    d = qs["dir"]
    _fcc(3.63, 2).write(str(d / "cu32.xyz"))
    png, log = str(d / "md.png"), str(d / "md.log")
    assert main(["md", qs["model"], str(d / "cu32.xyz"), "--ensemble", "npt-aniso", "--steps", "40",
                 "--pressure", "10000", "--pressure-unit", "bar", "--tdamp", "50", "--pdamp", "200",
                 "--log", log, "--trajectory", str(d / "md.extxyz"), "--every", "2", "--plot", png,
                 "--quiet"]) == 0
    out = capsys.readouterr()
    assert f"MD plot: {png}" in out.out and "md npt-aniso" not in out.err  # --quiet: no bar
    _png_ok(png)
    cols = read_md_log(log)
    assert len(cols["step"]) == 21 and np.all(cols["volume_A3"] > 0)
    assert md_figure(log, str(d / "md2.png")) == [
        ("time (ps)", "temperature (K)"), ("time (ps)", "total energy (eV)"),
        ("time (ps)", "pressure (GPa)"), ("time (ps)", "volume (Å³)")]


def test_pressure_units(monkeypatch, qs):
    """--pressure 10000 --pressure-unit bar reaches the integrator as 1 GPa (in eV/Å³)."""
    import mlip.md
    from mlip.cli import main

    seen = {}
    real = mlip.md.make_dynamics

    def spy(atoms, ensemble, *args):
        dyn = real(atoms, ensemble, *args)
        seen["p"] = args[-2]
        return dyn

    monkeypatch.setattr(mlip.md, "make_dynamics", spy)
    d = qs["dir"]
    _fcc(3.63, 2).write(str(d / "cu32b.xyz"))
    assert main(["md", qs["model"], str(d / "cu32b.xyz"), "--ensemble", "npt", "--steps", "2", "--quiet",
                 "--pressure", "10000", "--pressure-unit", "bar", "--log", str(d / "b.log"),
                 "--trajectory", str(d / "b.extxyz")]) == 0
    assert seen["p"] == pytest.approx(1.0)


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-300"], "temperature (K) must be >= 0, got -300"),
    (["--dt", "nan"], "timestep (--dt, fs) must be a finite number, got nan"),
    (["--ensemble", "langevin", "--friction", "-1"], "friction (1/fs) must be > 0, got -1"),
    (["--ensemble", "nvt-nhc", "--tdamp", "0"], "tdamp (fs) must be > 0, got 0"),
    (["--ensemble", "npt", "--pdamp", "-5"], "pdamp (fs) must be > 0, got -5"),
    (["--ensemble", "npt", "--pressure", "inf"], "pressure (GPa) must be a finite number, got inf"),
    (["--index", "99"], "--index 99: '{xyz}' has 1 frame(s) (valid: -1 … 0)"),
    (["--repeat", "0", "1", "1"], "--repeat needs three integers >= 1, got 0 1 1"),
])
def test_md_bad_numbers(qs, capsys, args, message):
    from mlip.cli import main

    d = qs["dir"]
    xyz = str(d / "one.xyz")
    _fcc(3.63, 1).write(xyz)
    rc = main(["md", qs["model"], xyz, "--steps", "3", "--quiet", "--log", str(d / "bad.log"),
               "--trajectory", str(d / "bad.extxyz"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"mlip md: error: {message.format(xyz=xyz)}"]


def test_quiet_and_progress_bars(qs, capsys, tmp_path):
    """Long commands draw a progress bar on stderr; --quiet removes it (output on stdout unchanged)."""
    from mlip.cli import main

    recipe = str(REPO / "training" / "dp_cu.yaml")  # Adam steps draw the bar (varpro prints its evaluations)
    small = ["--set", "training.steps=4", "--set", "data.generate.n_frames=6", "--overwrite"]
    for quiet, label in ((False, "train"), (True, "train")):
        assert main(["train", recipe, "-o", str(tmp_path / "run"), *small, *(["--quiet"] if quiet else [])]) == 0
        cap = capsys.readouterr()
        assert (f"{label}:" in cap.err) != quiet and "exported" in cap.out
    for quiet in (False, True):
        assert main(["select", qs["model"], "--train", qs["test"], "-u", str(tmp_path / "al.pt"),
                     *(["--quiet"] if quiet else [])]) == 0
        cap = capsys.readouterr()
        assert ("training set" in cap.err) != quiet and "active set from 10 training" in cap.out


def test_md_onto_a_full_file_system(qs, tmp_path):
    """A full disk during `mlip md` (a file-size limit in a subprocess) stops it with one line naming
    the file; the log keeps whole rows only."""
    from tests.test_bad_input_cli import _mlip, _one_line

    _fcc(3.63, 2).write(str(tmp_path / "cu32.xyz"))
    log, traj = tmp_path / "md.log", tmp_path / "md.extxyz"
    proc = _mlip(["md", qs["model"], str(tmp_path / "cu32.xyz"), "--steps", "400", "--every", "1", "--quiet",
                  "--log", str(log), "--trajectory", str(traj), "--plot", str(tmp_path / "md.png")], limit=60000)
    assert _one_line(proc, "md") == f"cannot write {traj}: File too large"
    rows = log.read_text().splitlines()
    assert rows[0].startswith("# step") and len(rows) > 2 and all(len(r.split()) == 10 for r in rows[1:])

"""Fast checks of the benchmark entry point and the peer scripts: argument parsing, dry runs, clear
SKIP messages when the peers venv or the data are missing, parsers, the report on partial results.
Nothing here trains or installs; the only peer code run is peer_nequip.py --quick (seconds), and only
when the NequIP peer venv is already installed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import peers  # noqa: E402
import peer_deepmd  # noqa: E402
import report  # noqa: E402


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["MLIP_PEERS_VENV"] = str(tmp_path / "no-such-venv")
    env["MLIP_BENCH_RESULTS"] = str(tmp_path / "results")
    return env


def _run(args, tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)


def test_entry_point_help():
    p = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for word in ("all", "water", "lammps", "ase", "accuracy", "--dry-run", "--quick"):
        assert word in p.stdout


def test_entry_point_rejects_unknown_section():
    p = subprocess.run([sys.executable, "-m", "benchmarks", "nonsense"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "invalid choice" in p.stderr


def test_all_dry_run_without_peers(tmp_path):
    p = _run(["-m", "benchmarks", "all", "--dry-run", "--no-install"], tmp_path)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for section in ("[water]", "[lammps]", "[ase]", "[accuracy]"):
        assert section in out
    # every peer job is skipped with a reason and the install command
    import argparse

    import benchmarks.__main__ as bm

    defaults = argparse.Namespace(quick=False, threads=1, minutes=None, dtypes=["float64"])
    peer_jobs = [j for j in bm.plan(list(bm.SECTIONS), defaults) if j.peer]
    assert len(peer_jobs) == 9  # DeePMD-kit water, equivalence, lammps, ase, mlearn Mo and Si; MACE ase; NequIP ase and water
    assert out.count("SKIP: peers venv not found") == len(peer_jobs)
    assert "python benchmarks/peers.py install" in out
    # every job either shows its command or says it is not available yet
    for line in out.splitlines():
        if line.startswith("=== [") and "not yet available" in line:
            script = line.split("benchmarks/")[1].split(" ")[0]
            assert not (BENCH / script).exists()
    assert "=== summary" in out
    assert not (tmp_path / "results" / "README.md").exists()  # dry run writes nothing


def test_dry_run_would_install(tmp_path):
    p = _run(["-m", "benchmarks", "water", "--dry-run", "--quick"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "would install the peer codes" in p.stdout and "deepmd-kit[cpu,lmp]" in p.stdout
    assert "peer_deepmd.py water --minutes 1.0" in p.stdout
    assert not (tmp_path / "no-such-venv").exists()


def test_peer_scripts_skip_without_venv(tmp_path):
    p = _run([str(BENCH / "peer_deepmd.py"), "water", "--minutes", "0.1"], tmp_path)
    assert p.returncode == 0 and "SKIP: DeePMD-kit benchmark: peers venv not found" in p.stdout, p.stdout + p.stderr
    p = _run([str(BENCH / "peer_deepmd.py"), "lammps", "--sizes", "100"], tmp_path)
    assert p.returncode == 0 and "SKIP" in p.stdout
    try:
        import mace  # noqa: F401
        has_mace = True
    except ImportError:
        has_mace = False
    if not has_mace:
        p = _run([str(BENCH / "peer_mace.py"), "--sizes", "50"], tmp_path)
        assert p.returncode == 0 and "SKIP: MACE: peers venv not found" in p.stdout, p.stdout + p.stderr
        assert not (tmp_path / "results").exists()
    p = _run([str(BENCH / "peer_nequip.py"), "--quick"], tmp_path)
    assert p.returncode == 0 and "SKIP: NequIP: peers venv not found" in p.stdout, p.stdout + p.stderr
    assert not (tmp_path / "results").exists()
    p = _run([str(BENCH / "peers.py"), "status"], tmp_path)
    assert p.returncode == 0 and "SKIP: no peers venv" in p.stdout


@pytest.mark.skipif(peers.unavailable_reason("nequip") is not None, reason="NequIP peer venv not installed")
def test_peer_nequip_quick(tmp_path):
    """End to end in seconds: NequIP (eager, 32 atoms, float32) in its venv and ours here, one JSON."""
    env = dict(os.environ)
    env["MLIP_BENCH_RESULTS"] = str(tmp_path)
    p = subprocess.run([sys.executable, str(BENCH / "peer_nequip.py"), "--quick"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads((tmp_path / "quick_ase_nequip.json").read_text())
    assert res["quick"] and res["nequip_version"].startswith("0.19.")
    codes = {r["code"] for r in res["rows"]}
    assert "NequIP" in codes
    if "mlip" in codes:  # ours needs the compiled extension of this venv
        (c,) = res["comparison"]
        assert c["atoms"] == 32 and c["dtype"] == "float32" and c["ratio_ours_over_theirs"] > 0
        assert res["n_parameters"]["ours"] > 0 and res["n_parameters"]["theirs"] > 0
    assert res["lammps_pair_style"]["pair_nequip"]["per_atom_virial"] is False
    assert "quick_" not in report.render(tmp_path)  # quick results stay out of the README


def test_require_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("MLIP_PEERS_VENV", str(tmp_path / "nothing"))
    for peer in ("deepmd", "mace", "nequip"):
        with pytest.raises(peers.PeerUnavailable, match="peers.py install --only " + peer):
            peers.require(peer)
    with pytest.raises(ValueError):
        peers.require("allegro")
    # NequIP (e3nn 0.6) cannot share MACE's venv (e3nn 0.4.4): its own, next to the main one
    assert peers.venv_dir("nequip") == (tmp_path / "nothing-nequip").resolve()
    assert peers.venv_dir("mace") == peers.venv_dir() == (tmp_path / "nothing").resolve()


def test_missing_water_data(tmp_path, monkeypatch):
    monkeypatch.setattr(peer_deepmd, "SHARED", tmp_path)
    with pytest.raises(peer_deepmd.Skip, match="water data not found"):
        peer_deepmd._water_systems()


def test_deepmd_input_matches_recipe():
    rec = yaml.safe_load((REPO / "training" / "water_dp.yaml").read_text())
    m, lr, loss = rec["model"], rec["optimizer"]["lr"], rec["loss"]
    cfg = peer_deepmd.dp_input(["a"], ["b"], 1000, 5, precision="float32")
    d, f = cfg["model"]["descriptor"], cfg["model"]["fitting_net"]
    assert cfg["model"]["type_map"] == m["species"]
    assert (d["type"], d["rcut"], d["rcut_smth"], d["sel"], d["neuron"], d["axis_neuron"], d["type_one_side"]) == \
        ("se_e2_a", m["rcut"], m["rcut_smth"], m["sel"], m["neuron"], m["axis_neuron"], m["type_one_side"])
    assert f["neuron"] == m["fitting_neuron"] and f["resnet_dt"] == m["resnet_dt"] and d["resnet_dt"] is False
    assert d["precision"] == f["precision"] == "float32"
    assert (cfg["learning_rate"]["start_lr"], cfg["learning_rate"]["stop_lr"]) == (lr["start"], lr["stop"])
    l = cfg["loss"]
    assert (l["start_pref_e"], l["limit_pref_e"], l["start_pref_f"], l["limit_pref_f"]) == \
        (loss["energy"]["start"], loss["energy"]["limit"], loss["forces"]["start"], loss["forces"]["limit"])
    assert cfg["training"]["training_data"]["batch_size"] == rec["training"]["batch_size"] == 1
    assert peer_deepmd.n_parameters() == 1014182  # DeePMD-kit's count for this architecture


def test_deepmd_mlearn_input_and_systems(tmp_path):
    """The mlearn peer gets the DP recipe's hyper-parameters (with --set applied) and our loss's per-atom
    normalisation, and its DeePMD systems read back as the frames they were written from."""
    import numpy as np

    import peer_deepmd_mlearn as pm
    from mlip.data import Frame, read_frames

    cfg = pm.recipe_config("mo_dp.yaml", ["loss.energy.limit=20", "training.batch_size=3"])
    rec = yaml.safe_load((REPO / "training" / "mo_dp.yaml").read_text())
    m = rec["model"]
    inp = pm.dp_input(cfg, "Mo", [tmp_path / "a"], [tmp_path / "b"], 10000, 100, 100)
    d, f = inp["model"]["descriptor"], inp["model"]["fitting_net"]
    assert (d["rcut"], d["rcut_smth"], d["sel"], d["neuron"], d["axis_neuron"]) == \
        (m["rcut"], m["rcut_smth"], m["sel"], m["neuron"], m["axis_neuron"])
    assert f["neuron"] == m["fitting_neuron"] and d["precision"] == f["precision"] == rec["dtype"]
    l = inp["loss"]
    assert l["intensive_ener_virial"] is True and l["limit_pref_e"] == 20.0 and l["start_pref_f"] == 10.0
    assert (l["start_pref_v"], l["limit_pref_v"]) == (0.1, 0.5)
    stairs = rec["training"]["steps"] // rec["optimizer"]["lr"]["decay_steps"]
    assert inp["learning_rate"]["decay_steps"] == 10000 // stairs
    assert inp["learning_rate"]["start_lr"] == rec["optimizer"]["lr"]["start"]
    assert inp["training"]["training_data"]["batch_size"] == 3

    rng = np.random.default_rng(0)
    frames = [Frame(symbols=["Mo"] * n, positions=rng.random((n, 3)) * 3, cell=np.eye(3) * 3.0 + 0.1 * rng.random((3, 3)),
                    pbc=np.ones(3, bool), energy=float(rng.random()), forces=rng.random((n, 3)),
                    virial=rng.random((3, 3))) for n in (2, 3, 2)]
    systems = pm.write_systems(frames, tmp_path / "sys", "Mo")
    assert [s.name for s in systems] == ["n2", "n3"]
    back = read_frames(str(systems[0])) + read_frames(str(systems[1]))
    for a, b in zip([frames[0], frames[2], frames[1]], back):
        assert b.symbols == a.symbols and b.energy == a.energy
        np.testing.assert_array_equal(b.positions, a.positions)
        np.testing.assert_array_equal(b.cell, a.cell)
        np.testing.assert_array_equal(b.forces, a.forces)
        np.testing.assert_array_equal(b.virial, a.virial)
    with pytest.raises(ValueError, match="expected only Mo"):
        pm.write_systems([Frame(symbols=["Si"], positions=np.zeros((1, 3)), cell=np.eye(3), pbc=np.ones(3, bool))],
                         tmp_path / "bad", "Mo")


def test_parsers():
    log = ("[x] DEEPMD INFO    Batch      10: total wall time = 8.05 s, eta = 0:00:16\n"
           "[x] DEEPMD INFO    Batch      20: total wall time = 5.77 s, eta = 0:00:05\n")
    assert peer_deepmd.training_times(log) == [(10, 8.05), (20, 5.77)]
    lmp = ("Loop time of 3.66848 on 1 procs for 20 steps with 192 atoms\n\n41.4% CPU use with 1 MPI tasks x 1 OpenMP threads\n"
           "Section |  min time  |  avg time  |  max time  |%varavg| %total\n"
           "---------------------------------------------------------------\n"
           "Pair    | 3.6676     | 3.6676     | 3.6676     |   0.0 | 99.98\n")
    r = peer_deepmd.parse_lammps(lmp)
    assert r["atoms"] == 192 and r["steps"] == 20 and r["ranks"] == 1
    assert r["us_per_atom_step"] == pytest.approx(3.66848 / (20 * 192) * 1e6)
    assert r["pair_ms_per_step"] == pytest.approx(3.6676 / 20 * 1e3) and r["cpu_use_pct"] == 41.4


def test_water_box():
    atoms = peer_deepmd.water_box(192)
    assert len(atoms) == 192 and atoms.get_chemical_symbols()[:3] == ["O", "H", "H"]
    mass = atoms.get_masses().sum() / 6.02214076e23  # g
    assert mass / (atoms.get_volume() * 1e-24) == pytest.approx(1.0, rel=1e-3)
    d = atoms.get_distances(0, [1, 2], mic=True)
    assert d == pytest.approx([0.9572, 0.9572], abs=1e-6)


def test_report_partial_and_broken(tmp_path):
    (tmp_path / "water_deepmd_float64.json").write_text(json.dumps({
        "dtype": "float64", "threads": 1, "minutes": 30, "steps": 1000, "frames_per_s": 2.0,
        "val_energy_rmse_meV_per_atom": 1.5, "val_force_rmse_eV_A": 0.1,
        "compressed": {"val_energy_rmse_meV_per_atom": 1.5, "val_force_rmse_eV_A": 0.1}}))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "smoke_water_dp_float64.json").write_text("{}")
    text = report.render(tmp_path)
    assert "DeePMD-kit (TF)" in text and "compressed" in text
    assert text.count("_Not measured yet._") == 4  # accuracy, LAMMPS, ASE, NequIP vs ours
    assert "Unreadable result files: broken" in text
    assert "smoke_" not in text
    assert report.render(tmp_path / "missing").count("_Not measured yet._") == 5


def test_entry_point_helpers(tmp_path):
    sys.path.insert(0, str(REPO))
    from benchmarks.__main__ import _expand, _QuickResults

    assert _expand(["--ours", "{m}", "--x"], "{m}", ["a", "b"]) == ["--ours", "a", "b", "--x"]
    assert _expand(["--threads", "1", "--ours", "{m}"], "{m}", []) == ["--threads", "1"]
    # a quick run never overwrites a real result: what it writes is renamed quick_*.json
    (tmp_path / "water_dp_float64.json").write_text('{"real": 1}')
    with _QuickResults(tmp_path, True):
        (tmp_path / "water_dp_float64.json").write_text('{"quick": 1}')
        (tmp_path / "mo_dp.json").write_text('{"quick": 2}')
    assert json.loads((tmp_path / "water_dp_float64.json").read_text()) == {"real": 1}
    assert json.loads((tmp_path / "quick_water_dp_float64.json").read_text()) == {"quick": 1}
    assert not (tmp_path / "mo_dp.json").exists() and (tmp_path / "quick_mo_dp.json").exists()


def test_bench_ab_runs_variants_at_equal_steps(tmp_path):
    """bench_ab.py: two variants of a recipe, same steps, one results JSON with both; a second call reads
    the finished variants back instead of training again."""
    args = ["benchmarks/bench_ab.py", "--recipe", "dp_cu.yaml", "--steps", "4", "--jobs", "1", "--name", "smoke",
            "--workdir", str(tmp_path / "ab"), "--variant", "base",
            "--variant", "e_x5: loss.energy.start=1.0 loss.energy.limit=5.0"]
    env = {**_env(tmp_path), "MLIP_BENCH_RESULTS": str(tmp_path / "results")}
    p = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads((tmp_path / "results" / "ab_smoke.json").read_text())
    assert set(res["variants"]) == {"base", "e_x5"}
    for v in res["variants"].values():
        assert v["steps"] == 4 and v["val_force_rmse_eV_A"] > 0
    assert res["variants"]["e_x5"]["assignments"] == ["loss.energy.start=1.0", "loss.energy.limit=5.0"]
    again = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "training" not in again.stdout


def test_bench_ab_bad_variant_is_one_line(tmp_path):
    p = _run(["benchmarks/bench_ab.py", "--recipe", "dp_cu.yaml", "--variant", "x: loss.energy",
              "--workdir", str(tmp_path / "ab")], tmp_path)
    assert p.returncode == 2 and "variant 'x': --set expects KEY=VALUE, got 'loss.energy'" in p.stderr
    assert "Traceback" not in p.stderr


def test_al_bench_settings_reach_both_loops(tmp_path):
    """bench_al_xtb.py --set: the settings are applied to the recipe the AL and random loops load (here one
    that makes the AL strategy random, refused before any work)."""
    import bench_al
    from mlip.train.config import parse_settings

    with pytest.raises(SystemExit, match="select.strategy is random"):
        bench_al.run_pairs(str(REPO / "training" / "al_water_xtb_mtp_info.yaml"), [1], {}, str(tmp_path),
                           str(tmp_path / "test.xyz"), settings=parse_settings(["select.strategy=random"]))
    assert not any(tmp_path.iterdir())


def test_force_errors_by_contact_table_and_report(tmp_path):
    """The bins partition the atoms, each bin's MAE is its atoms' mean, the shares add up to the whole,
    and the report shows the table."""
    import numpy as np

    import force_errors_by_contact as fe

    atoms = {"group": np.array(["hot", "hot", "hot", "cold"]), "rmin": np.array([2.1, 2.4, 2.7, 2.9]),
             "fref": np.array([5.0, 3.5, 0.5, 0.2]), "err": np.array([0.4, 0.2, 0.1, 0.1])}
    t = fe.table(atoms)
    assert t["atoms"] == 4 and t["force_mae"] == pytest.approx(0.2)
    by_r = t["all"]["by_nearest_neighbour"]
    assert sum(r["atoms"] for r in by_r) == 4
    assert [r["force_mae"] for r in by_r] == pytest.approx([0.4, 0.2, 0.1, 0.1])
    assert sum(r["share_of_total_mae"] for r in by_r) == pytest.approx(1.0)
    assert sum(r["share_of_total_mae"] for r in t["all"]["by_reference_force"]) == pytest.approx(1.0)
    assert t["hot"]["atoms"] == 3 and t["cold"]["force_mae"] == pytest.approx(0.1)
    (tmp_path / "force_errors_x.json").write_text(json.dumps({"model": "m.pt", "files": {"a/test.json": t}}))
    text = report.render(tmp_path)
    assert "## Force errors by nearest-neighbour distance" in text
    assert "| force_errors_x | test.json | [0, 2.3) | 1 | 0.400 | 50 |" in text
    assert "| force_errors_x | test.json | hot | 3 | 0.233 |" in text
    assert fe.group_of("AIMD-NVT", "Snapshot 7 of 40 of AIMD NVT simulation at 3000 K") == "AIMD-NVT 3000 K"
    assert fe.group_of("Elastic", "Mo 3x3x3 cell, mode 2, strain 0.01") == "Elastic"
    assert fe.group_of(None, None) == ""

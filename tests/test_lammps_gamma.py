"""Extrapolation grade γ in LAMMPS (pair_style mlip with an export that carries an active set):
per-atom γ (compute mlip/gamma, fix pair) and max γ equal the ASE calculator's `atom_gamma`/`gamma`
on the same structures (1e-8 relative; MTP, Deep Potential, NequIP; 1 and 2 MPI ranks);
γ ≤ 1 + 1e-6 on the training configurations and > 2 on strained / hot ones; gamma_select writes the
extrapolative configurations to an extxyz file and gamma_break stops the run; fix halt on c_ID."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_lammps_util import read_dump, requires_lammps, run, write_data  # noqa: E402

from mlip import lammps_support as ls  # noqa: E402

pytestmark = [requires_lammps, pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")]

TOL = 1e-8


def _engine_has_grade() -> bool:
    try:
        from mlip._core import Engine

        return hasattr(Engine, "grade")
    except Exception:
        return False


if not _engine_has_grade():
    pytestmark.append(pytest.mark.skip(reason="the installed engine has no extrapolation grade (C API v2)"))


def cu_frames(n=4, a=3.61, rattle=0.06, seed=0, size=2):
    """Training configurations: rattled fcc Cu 2x2x2 cubic cells (32 atoms)."""
    from ase.build import bulk

    from mlip.data import Frame

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        at = bulk("Cu", "fcc", a=a * rng.uniform(0.985, 1.015), cubic=True).repeat(size)
        at.rattle(rattle, seed=int(rng.integers(1 << 30)))
        out.append(Frame.from_atoms(at, source=f"train:{k}"))
    return out


def far_atoms(kind):
    from ase.build import bulk

    at = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    if kind == "hot":
        at.rattle(0.35, seed=5)
    else:  # strained
        at.set_cell(at.cell[:] * 1.12, scale_atoms=True)
        at.rattle(0.05, seed=6)
    at.wrap()
    return at


def make_export(family: str, path: str) -> str:
    import torch

    from mlip.active.grade import build_active_set, export_graded

    torch.manual_seed(0)
    frames = cu_frames()
    if family == "mtp":
        from mlip.models.mtp import MTP

        m = MTP(["Cu"], level=8, cutoff=4.0, seed=0)
        m.fit_statistics(frames)
        m = m.double()
    elif family == "deepmd":
        from mlip.models.deepmd import DeepPotSeA

        m = DeepPotSeA(["Cu"], rcut=4.0, rcut_smth=2.0, sel=[60], neuron=[8, 16], axis_neuron=4,
                       fitting_neuron=[24, 24], seed=1).double()
    else:
        from mlip.models.nequip import NequIP

        m = NequIP(["Cu"], cutoff=3.6, l_max=1, num_features=8, num_layers=2, head_hidden=8,
                   avg_num_neighbors=12.0).double()
    export_graded(m, path, build_active_set(m, frames))
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    d = tmp_path_factory.mktemp("gamma_models")
    return {f: make_export(f, str(d / f"{f}.pt")) for f in ("mtp", "deepmd", "nequip")}


def structures():
    out = {f"train{k}": fr.to_atoms() for k, fr in enumerate(cu_frames()[:2])}
    out["hot"] = far_atoms("hot")
    out["strained"] = far_atoms("strained")
    for at in out.values():
        at.wrap()
    return out


def calculator_gamma(model: str, atoms):
    from mlip.calculator import MLIPCalculator

    a = atoms.copy()
    a.calc = MLIPCalculator(model, num_threads=1)
    a.get_potential_energy()
    return np.asarray(a.calc.results["atom_gamma"]), float(a.calc.results["gamma"])


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def single_points(tmp_path, model, structs, nprocs):
    """One lmp process, `run 0` on each structure: max γ (thermo c_g), per-atom γ from compute
    mlip/gamma and from fix pair."""
    blocks = []
    for name, at in structs.items():
        write_data(at, str(tmp_path / f"{name}.data"), ["Cu"])
        blocks.append(f"""
clear
units metal
atom_style atomic
atom_modify map array
read_data {name}.data
pair_style mlip {model}
pair_coeff * * Cu
compute g all mlip/gamma
fix fp all pair 1 mlip gamma 1
thermo_style custom step pe c_g
thermo_modify format float %.17g
dump d all custom 1 dump_{name}.txt id x y z c_g f_fp
dump_modify d format float %.17g sort id
run 0
""")
    out = run("".join(blocks), tmp_path, nprocs=nprocs).stdout
    rows = ls.parse_thermo(out)
    assert len(rows) == len(structs), out[-2000:]
    res = {}
    for (name, at), row in zip(structs.items(), rows):
        d = read_dump(str(tmp_path / f"dump_{name}.txt"))
        a = at.copy()
        a.set_positions(np.stack([d["x"], d["y"], d["z"]], axis=1))
        res[name] = dict(atoms=a, gmax=row["c_g"], atom_gamma=d["c_g"], fix_pair=d["f_fp"])
    return res


@pytest.mark.parametrize("nprocs", [1, 2])
@pytest.mark.parametrize("family", ["mtp", "deepmd", "nequip"])
def test_gamma_matches_calculator(tmp_path, exports, family, nprocs):
    res = single_points(tmp_path, exports[family], structures(), nprocs)
    report = []
    for name, r in res.items():
        ref_atom, ref_max = calculator_gamma(exports[family], r["atoms"])
        e_atom, e_max = rel(r["atom_gamma"], ref_atom), rel(r["gmax"], ref_max)
        report.append(f"{name}: γ = {r['gmax']:.6g} (rel. err. max {e_max:.1e}, per atom {e_atom:.1e})")
        assert e_atom <= TOL and e_max <= TOL, (name, e_atom, e_max)
        assert np.array_equal(r["fix_pair"], r["atom_gamma"]), name
        if name.startswith("train"):
            assert r["gmax"] <= 1.0 + 1e-6, (name, r["gmax"])
        else:
            assert r["gmax"] > 2.0, (name, r["gmax"])
    print(f"{family}, {nprocs} rank(s): " + "; ".join(report))


def strain_ramp_script(model: str, pair_extra: str, steps: int = 60, extra: str = "") -> str:
    """Training-like start, box stretched by 1 % per 10 steps (remap x): γ grows steadily."""
    return f"""
units metal
atom_style atomic
atom_modify map array
read_data start.data
pair_style mlip {model} {pair_extra}
pair_coeff * * Cu
compute g all mlip/gamma
timestep 0.001
fix 1 all nve
fix 2 all deform 1 x erate 1.0 y erate 1.0 z erate 1.0 remap x
{extra}
thermo 1
thermo_style custom step pe c_g
thermo_modify format float %.17g
run {steps}
"""


@pytest.mark.parametrize("nprocs", [1, 2])
def test_select_and_break(tmp_path, exports, nprocs):
    """gamma_select writes every evaluated configuration with γ > G (positions, cell, step, per-atom
    γ: the calculator gives the same γ on them), gamma_break stops the run with a clear message."""
    from ase.io import read

    model = exports["mtp"]
    write_data(cu_frames()[0].to_atoms(), str(tmp_path / "start.data"), ["Cu"])
    # thresholds from a dry run of the same ramp (γ per step from thermo)
    dry = ls.parse_thermo(run(strain_ramp_script(model, ""), tmp_path).stdout)
    g = np.array([r["c_g"] for r in dry])
    assert g[0] <= 1.0 + 1e-4 and g[-1] > 2.0, g
    select, brk = 1.5, float(0.5 * (1.5 + g[-1])) if g[-1] < 4 else 3.0
    first_sel = int(np.argmax(g > select))
    first_brk = int(np.argmax(g > brk))
    assert 0 < first_sel < first_brk

    proc = run(strain_ramp_script(model, f"gamma_select {select} sel.extxyz gamma_break {brk}"), tmp_path,
               nprocs=nprocs, check=False)
    out = proc.stdout
    assert proc.returncode != 0
    msg = ls.error_message(out)
    assert msg and "exceeds gamma_break" in msg and f"on step {first_brk}" in msg, msg
    rows = ls.parse_thermo(out)
    frames = read(str(tmp_path / "sel.extxyz"), index=":")
    steps = [int(f.info["step"]) for f in frames]
    assert steps == list(range(first_sel, first_brk + 1)), (steps, first_sel, first_brk)
    worst = 0.0
    for f in frames:
        assert f.info["gamma"] > select
        ref_atom, ref_max = calculator_gamma(model, f)
        worst = max(worst, rel(f.arrays["gamma"], ref_atom), rel(f.info["gamma"], ref_max))
        assert list(f.arrays["id"]) == list(range(1, len(f) + 1))
        assert f.get_chemical_symbols() == ["Cu"] * len(f)
    assert worst <= TOL, worst
    print(f"{nprocs} rank(s): γ crosses {select} at step {first_sel} and {brk:.3g} at step {first_brk}; "
          f"{len(frames)} configurations written, calculator γ on them to {worst:.1e}; "
          f"last thermo step {int(rows[-1]['Step']) if rows else None}")
    assert frames[-1].info["gamma"] > brk


def test_fix_halt_on_compute(tmp_path, exports):
    """The global max γ of compute mlip/gamma drives fix halt (soft stop, the input continues)."""
    model = exports["mtp"]
    write_data(cu_frames()[0].to_atoms(), str(tmp_path / "start.data"), ["Cu"])
    script = strain_ramp_script(model, "gamma_every 5", extra="variable gmax equal c_g\n"
                                "fix h all halt 1 v_gmax > 2.0 error continue") + 'print "AFTER HALT"\n'
    out = run(script, tmp_path).stdout
    rows = ls.parse_thermo(out)
    assert "AFTER HALT" in out and rows[-1]["c_g"] > 2.0 and all(r["c_g"] <= 2.0 for r in rows[:-1])
    assert int(rows[-1]["Step"]) < 60


def test_errors(tmp_path):
    """Clear errors: gamma keywords or compute mlip/gamma without an active set."""
    from test_lammps_util import export_toy, fcc_structure

    plain = export_toy(str(tmp_path / "plain.pt"), "eam", species=("Cu",), cutoff=4.0)
    write_data(fcc_structure(3.61, (2, 2, 2), species=("Cu", "Cu"), seed=1), str(tmp_path / "d.data"), ["Cu"])
    base = "units metal\natom_style atomic\nread_data d.data\n"
    proc = run(base + f"pair_style mlip {plain} gamma_break 3\npair_coeff * * Cu\n", tmp_path, check=False)
    assert "need a model exported with an active set" in (ls.error_message(proc.stdout) or "")
    proc = run(base + f"pair_style mlip {plain}\npair_coeff * * Cu\ncompute g all mlip/gamma\n"
               "thermo_style custom step c_g\nrun 0\n", tmp_path, check=False)
    assert "carries an active set" in (ls.error_message(proc.stdout) or ""), proc.stdout[-1500:]


def test_committee_gamma_is_max_over_members(tmp_path, exports):
    """A committee of graded exports (MTP + DP; NequIP's smaller cutoff gets an edge subset): γ_i is
    the element-wise maximum over the members, as in the ASE committee calculator; 2 ranks."""
    from mlip.calculator import MLIPCalculator

    models = [exports["deepmd"], exports["mtp"], exports["nequip"]]
    at = structures()["hot"]
    write_data(at, str(tmp_path / "hot.data"), ["Cu"])
    script = f"""
units metal
atom_style atomic
atom_modify map array
read_data hot.data
pair_style mlip {' '.join(models)} out_freq 1 out_file devi.out
pair_coeff * * Cu
compute g all mlip/gamma
thermo_style custom step pe c_g
thermo_modify format float %.17g
dump d all custom 1 dump.txt id x y z c_g
dump_modify d format float %.17g sort id
run 0
"""
    out = run(script, tmp_path, nprocs=2).stdout
    d = read_dump(str(tmp_path / "dump.txt"))
    a = at.copy()
    a.set_positions(np.stack([d["x"], d["y"], d["z"]], axis=1))
    a.calc = MLIPCalculator(models, num_threads=1)
    a.get_potential_energy()
    assert rel(d["c_g"], a.calc.results["atom_gamma"]) <= TOL
    assert rel(ls.parse_thermo(out)[-1]["c_g"], a.calc.results["gamma"]) <= TOL
    dev = ls.read_model_devi(str(tmp_path / "devi.out"))[-1]
    assert rel(dev["max_devi_f"], a.calc.results["max_force_deviation"]) <= TOL

"""Message passing in LAMMPS on a one-cutoff ghost shell with per-layer feature exchange
(docs/CONTRACT.md, "Layer split"): energy, forces, global and per-atom virials, per-atom energies on
1, 2 and 4 ranks equal the ASE calculator's to 1e-10 (float64); sub-domains thinner than the cutoff;
a committee and the extrapolation grade with message-passing members; and the fallback of an export
without the layer split to the deep ghost shell, with its log line."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_lammps_pair import ELEMENTS, STRUCTURES, compare_to_calculator, lammps_single_point  # noqa: E402
from test_lammps_util import engine_reference, export_toy, fcc_structure, requires_lammps  # noqa: E402

pytestmark = [requires_lammps, pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")]

ONE_CUTOFF = "ghost shell of one cutoff, features exchanged between layers"
DEEP = "message passing on a deep ghost shell"


def nequip_export(path: str, num_layers: int = 3, cutoff: float = 3.5, dtype: str = "float64", graded: bool = False,
                  seed: int = 0) -> str:
    pytest.importorskip("e3nn", reason="the NequIP-style model needs e3nn")
    import torch

    from mlip.export import export_model
    from mlip.models.nequip import NequIP

    torch.manual_seed(seed)
    m = NequIP(ELEMENTS, cutoff=cutoff, l_max=2, num_features=8, num_layers=num_layers, num_basis=4,
               radial_hidden=8, head_hidden=8, avg_num_neighbors=20.0)
    with torch.no_grad():
        m.energy_scale.copy_(torch.tensor([0.8, 1.3]))
        m.energy_shift.copy_(torch.tensor([-1.0, 0.5]))
    if graded:
        from mlip.active.grade import build_active_set, export_graded

        frames = [fcc_structure(4.2, (2, 2, 2), seed=40 + s, rattle=0.12) for s in range(3)]
        export_graded(m, path, build_active_set(m, frames, "nbh"))
    else:
        export_model(m, path, dtype)
    return path


@pytest.fixture(scope="module")
def nequip3(tmp_path_factory):
    return nequip_export(str(tmp_path_factory.mktemp("mp") / "nequip3.pt"))


# a two-species triclinic box about 1.2 cutoffs wide per sub-domain on 2 and 4 ranks (8.4 A, cutoff
# 3.5 A, split in two along x and y), and the slab of test_lammps_pair (one open direction)
SYSTEMS = {
    "triclinic_thin": (dict(a0=4.2, reps=(2, 2, 2), tilt=(0.11, -0.06, 0.08), seed=21, rattle=0.12), "p p p"),
    "slab": STRUCTURES["slab"],
}


@pytest.mark.parametrize("system", list(SYSTEMS))
@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_run0_matches_ase_on_1_2_4_ranks(tmp_path, nequip3, system, nprocs):
    kw, boundary = SYSTEMS[system]
    atoms = fcc_structure(**kw)
    lmp = lammps_single_point(tmp_path, atoms, nequip3, boundary=boundary, nprocs=nprocs)
    assert ONE_CUTOFF in lmp["log"], lmp["log"][-2000:]
    errs = compare_to_calculator(lmp, atoms, nequip3)
    assert max(errs.values()) <= 1e-10


def test_subdomains_thinner_than_the_cutoff(tmp_path, nequip3):
    """4 ranks along x on an 8.4 A box: sub-domains of 2.1 A, 0.6 cutoff. LAMMPS then needs several
    communication hops; the result must still be exact (never a wrong force)."""
    kw, boundary = SYSTEMS["triclinic_thin"]
    atoms = fcc_structure(**kw)
    lmp = lammps_single_point(tmp_path, atoms, nequip3, boundary=boundary, nprocs=4, pre="processors 4 1 1")
    compare_to_calculator(lmp, atoms, nequip3)


def test_one_cutoff_equals_deep_shell(tmp_path, nequip3, monkeypatch):
    """The deep ghost shell (MLIP_LAMMPS_EXCHANGE=0) and the exchange give the same numbers."""
    kw, boundary = SYSTEMS["triclinic_thin"]
    atoms = fcc_structure(**kw)
    one = lammps_single_point(tmp_path, atoms, nequip3, boundary=boundary, nprocs=2)
    monkeypatch.setenv("MLIP_LAMMPS_EXCHANGE", "0")
    deep = lammps_single_point(tmp_path, atoms, nequip3, boundary=boundary, nprocs=2)
    assert DEEP in deep["log"] and "MLIP_LAMMPS_EXCHANGE=0" in deep["log"]
    scale = np.abs(deep["forces"]).max()
    assert np.abs(one["forces"] - deep["forces"]).max() <= 1e-10 * scale
    assert abs(one["energy"] - deep["energy"]) <= 1e-10 * abs(deep["energy"])


def test_export_without_layer_split_uses_deep_shell(tmp_path):
    """A hand-written message-passing export (no layer_forward/layer_vjp) still runs, on the deep
    ghost shell, and the log says so in one line."""
    model = export_toy(str(tmp_path / "toy_mp.pt"), "mp", cutoff=4.0)
    kw, boundary = STRUCTURES["triclinic"]
    atoms = fcc_structure(**kw)
    lmp = lammps_single_point(tmp_path, atoms, model, boundary=boundary, nprocs=2)
    line = [ln for ln in lmp["log"].splitlines() if DEEP in ln]
    assert len(line) == 1 and "has no layer split" in line[0], lmp["log"][-2000:]
    compare_to_calculator(lmp, atoms, model)


def test_float32_export_on_two_ranks(tmp_path):
    path = nequip_export(str(tmp_path / "n32.pt"), num_layers=2, dtype="float32")
    kw, boundary = SYSTEMS["triclinic_thin"]
    atoms = fcc_structure(**kw)
    lmp = lammps_single_point(tmp_path, atoms, path, boundary=boundary, nprocs=2)
    assert ONE_CUTOFF in lmp["log"]
    compare_to_calculator(lmp, atoms, path, tol=1e-5)


def test_committee_and_gamma_with_message_passing_members(tmp_path):
    """Committee deviation and γ with two message-passing members on 2 ranks equal the ASE
    committee calculator's."""
    from mlip.calculator import MLIPCalculator
    from test_lammps_util import last_thermo, run, write_data

    m0 = nequip_export(str(tmp_path / "m0.pt"), num_layers=2, graded=True, seed=1)
    m1 = nequip_export(str(tmp_path / "m1.pt"), num_layers=3, seed=2)
    kw, boundary = SYSTEMS["triclinic_thin"]
    atoms = fcc_structure(**kw)
    write_data(atoms, str(tmp_path / "data.lmp"), ELEMENTS)
    script = f"""
units metal
atom_style atomic
boundary {boundary}
atom_modify map array
read_data data.lmp
pair_style mlip m0.pt m1.pt out_freq 1 out_file devi.out
pair_coeff * * {' '.join(ELEMENTS)}
compute g all mlip/gamma
thermo_style custom step pe c_g
thermo_modify format float %.17g
run 0
"""
    out = run(script, tmp_path, nprocs=2)
    assert ONE_CUTOFF in out.stdout
    row = last_thermo(out.stdout)
    devi = np.loadtxt(str(tmp_path / "devi.out"), ndmin=2)
    a = atoms.copy()
    a.calc = MLIPCalculator([str(tmp_path / "m0.pt"), str(tmp_path / "m1.pt")], num_threads=1)
    a.get_potential_energy()
    r = a.calc.results
    assert abs(devi[0, 4] - r["max_force_deviation"]) <= 1e-8 * r["max_force_deviation"]
    assert abs(devi[0, 6] - r["avg_force_deviation"]) <= 1e-8 * r["avg_force_deviation"]
    assert abs(devi[0, 7] - r["energy_deviation"]) <= 1e-8 * max(r["energy_deviation"], 1e-12)
    assert abs(row["c_g"] - r["gamma"]) <= 1e-8 * r["gamma"]
    ref0 = engine_reference(str(tmp_path / "m0.pt"), atoms, atom_virial=False)
    assert abs(row["PotEng"] - ref0["energy"]) <= 1e-10 * abs(ref0["energy"])


def test_hybrid_overlay_with_null_types_two_ranks(tmp_path, nequip3):
    """Under pair_style hybrid/overlay (its own comm buffers) with a NULL type handled by lj/cut:
    the mlip part equals the ASE calculator on the Cu/Ag sub-system, on 2 ranks."""
    from ase import Atoms
    from test_lammps_util import last_thermo, rel, run, write_data

    atoms = fcc_structure(4.2, (2, 2, 2), tilt=(0.11, -0.06, 0.08), seed=23, rattle=0.12)
    sym = atoms.get_chemical_symbols()
    for k in range(0, len(sym), 5):
        sym[k] = "Au"
    atoms.set_chemical_symbols(sym)
    write_data(atoms, str(tmp_path / "data.lmp"), ["Cu", "Ag", "Au"])
    script = f"""
units metal
atom_style atomic
atom_modify map array
read_data data.lmp
pair_style hybrid/overlay mlip {nequip3} lj/cut 6.0
pair_coeff * * mlip Cu Ag NULL
pair_coeff * * lj/cut 0.0 1.0
pair_coeff 3 3 lj/cut 0.01 2.5
compute pm all pair mlip
thermo_style custom step pe c_pm
thermo_modify format float %.17g
run 0
"""
    out = run(script, tmp_path, nprocs=2)
    assert ONE_CUTOFF in out.stdout
    row = last_thermo(out.stdout)
    keep = [s != "Au" for s in sym]
    sub = Atoms([s for s in sym if s != "Au"], positions=atoms.positions[keep], cell=atoms.cell, pbc=True)
    ref = engine_reference(nequip3, sub, atom_virial=False)
    assert rel(row["c_pm"], ref["energy"]) <= 1e-10

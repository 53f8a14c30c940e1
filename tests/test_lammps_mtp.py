"""MLIP-2's level16.mtp through our whole stack: `.mtp` → export → C++ engine (native MTP kernel) in
the ASE calculator and in `pair_style mlip`, against the energies, forces and stresses MLIP-2 itself
printed (1001 configurations; LAMMPS on a sample of them, one process per configuration)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import shared_path  # noqa: E402
from test_lammps_util import last_thermo, read_dump, requires_lammps, run, single_point_script  # noqa: E402
from test_lammps_util import virial_from_thermo, write_data  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

# MLIP-2 prints energies with 12 decimals, forces with 6, PlusStress with 5
TOL_E, TOL_F, TOL_W = 1e-9, 0.5e-6 + 1e-9, 0.5e-5 + 1e-9


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from mlip.data import read_cfg
    from mlip.export import export_model
    from mlip.models.mtp import MTP

    pot = shared_path("mtp_reference", "level16.mtp")
    frames = read_cfg(str(shared_path("mtp_reference", "level16_mlip2_efs.cfg")), type_map=["Cu"])
    path = str(tmp_path_factory.mktemp("l16") / "level16.pt")
    export_model(MTP.from_mtp_file(str(pot), species=["Cu"]), path, dtype="float64")
    return path, frames


def test_ase_calculator_native_kernel_all_1001(reference):
    from mlip.calculator import MLIPCalculator

    path, frames = reference
    calc = MLIPCalculator(path)
    assert calc.engine.backend == "native-mtp"
    err = np.zeros(3)
    for fr in frames:
        atoms = fr.to_atoms()
        atoms.calc = calc
        w = -atoms.get_stress(voigt=False) * atoms.get_volume()
        err = np.maximum(err, [abs(atoms.get_potential_energy() - fr.energy),
                               np.abs(atoms.get_forces() - fr.forces).max(), np.abs(w - fr.virial).max()])
    assert len(frames) == 1001
    assert err[0] <= TOL_E and err[1] <= TOL_F and err[2] <= TOL_W, err


@requires_lammps
def test_lammps_pair_style(reference, tmp_path):
    path, frames = reference
    for k in range(0, len(frames), 200):  # 6 configurations
        fr = frames[k]
        d = tmp_path / f"c{k}"
        d.mkdir()
        atoms = fr.to_atoms()
        assert np.allclose(atoms.cell[:], np.diag(np.diag(atoms.cell[:])))  # cubic: no rotation needed
        write_data(atoms, str(d / "data.lmp"), ["Cu"])
        out = run(single_point_script("data.lmp", path, ["Cu"]), d)
        row = last_thermo(out.stdout)
        dump = read_dump(str(d / "dump.txt"))
        forces = np.stack([dump["fx"], dump["fy"], dump["fz"]], axis=1)
        assert abs(row["PotEng"] - fr.energy) <= TOL_E
        assert np.abs(forces - fr.forces).max() <= TOL_F
        assert np.abs(virial_from_thermo(row) - fr.virial).max() <= TOL_W

"""NequIP export in LAMMPS (pair_style mlip, message passing over a ghost shell num_layers * cutoff
deep) on 2 MPI ranks against the ASE calculator on the same export (float64): energy, forces,
virial, per-atom energies."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_lammps_util import (  # noqa: E402
    NKTV2P_METAL,
    atoms_from_dump,
    engine_reference,
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

pytest.importorskip("e3nn")
pytestmark = requires_lammps

ELEMENTS = ["Cu", "Ag"]


@pytest.mark.parametrize("nprocs", [1, 2])
def test_nequip_ranks_match_ase_calculator(tmp_path, nprocs):
    from mlip.export import export_model
    from mlip.models.nequip import NequIP

    torch.manual_seed(3)
    model = NequIP(ELEMENTS, cutoff=3.2, l_max=2, num_features=8, num_layers=2, radial_hidden=16,
                   head_hidden=8, avg_num_neighbors=12.0).double()
    with torch.no_grad():
        model.energy_shift.copy_(torch.tensor([-3.5, -2.8], dtype=torch.float64))
    path = str(tmp_path / "nequip.pt")
    export_model(model, path, "float64")
    atoms = fcc_structure(3.7, (4, 3, 3), tilt=(0.1, 0.0, 0.05), seed=4)
    write_data(atoms, str(tmp_path / "data.lmp"), ELEMENTS)
    out = run(single_point_script("data.lmp", path, ELEMENTS), tmp_path, nprocs=nprocs)
    row = last_thermo(out.stdout)
    d = read_dump(str(tmp_path / "dump.txt"))
    ref = engine_reference(path, atoms_from_dump(atoms, d), atom_virial=True)
    errs = {
        "energy": rel(row["PotEng"], ref["energy"]),
        "forces": rel(np.stack([d["fx"], d["fy"], d["fz"]], axis=1), ref["forces"]),
        "virial": rel(virial_from_thermo(row), ref["virial"]),
        "energies": rel(d["c_pe"], ref["energies"]),
        # compute stress/atom = −(per-atom virial) in bar·Å³, order xx yy zz xy xz yz
        "atom_virial": rel(-np.stack([d[f"c_s[{k}]"] for k in range(1, 7)], axis=1) / NKTV2P_METAL,
                           ref["atom_virial"][:, [0, 4, 8, 1, 2, 5]]),
    }
    print(errs)
    assert all(v <= 1e-10 for v in errs.values()), errs
    assert "message passing" in out.stdout
    assert np.abs(ref["forces"]).max() > 1e-3

"""The C++ engine's native Deep Potential kernel against the TorchScript graph of the same export.

The TorchScript code is the reference (finite differences and invariances in test_deepmd.py); the
native path must reproduce every output to round-off: both embedding layouts (type_one_side or
not), resnet layers of all three kinds (plain, x + h, [x, x] + h) with and without dt, ghost nodes,
edges beyond the cutoff and an atom without neighbours."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import assert_same_outputs, random_structure, torch_and_native_engines
from mlip import _core
from mlip.export import export_model
from mlip.models.deepmd import DeepPotSeA
from mlip.neighbors import neighbor_list


def _model(type_one_side: bool, species=("H", "O")):
    m = DeepPotSeA(list(species), rcut=3.5, rcut_smth=1.0, sel=[20] * len(species), neuron=[5, 10, 10],
                   axis_neuron=4, fitting_neuron=[12, 24, 24], type_one_side=type_one_side, seed=3).double()
    with torch.no_grad():
        m.s_avg.copy_(torch.tensor([0.3, 0.25, 0.35][: len(species)], dtype=torch.float64))
        m.s_std.copy_(torch.tensor([0.2, 0.3, 0.25][: len(species)], dtype=torch.float64))
        # the angular rows share one scale (as fit_statistics sets them): rotation invariance
        r = torch.rand(len(species), 2, dtype=torch.float64) + 0.3
        m.r_std.copy_(torch.cat([r[:, :1], r[:, 1:].expand(-1, 3)], 1))
        for p in m.parameters():  # make the trainable dt's differ from their 0.1 start
            p.add_(0.05 * torch.randn_like(p))
    m.set_energy_bias(torch.tensor([-1.5, -3.0, -2.0][: len(species)], dtype=torch.float64))
    return m


def _engines(path, monkeypatch):
    return torch_and_native_engines(path, monkeypatch, "native-deepmd")


def _compare(ref, nat, sp, ei, vec, n_local):
    assert_same_outputs(ref, nat, sp, ei, vec, n_local)


@pytest.mark.parametrize("type_one_side", [False, True])
@pytest.mark.parametrize("species", [("H", "O"), ("H", "O", "C")])
def test_native_equals_torchscript(tmp_path, monkeypatch, type_one_side, species):
    m = _model(type_one_side, species)
    path = str(tmp_path / "dp.pt")
    export_model(m, path)
    ref, nat = _engines(path, monkeypatch)
    atoms = random_structure(5, 14, species=species, cell_scale=6.0)
    atoms.positions[-1] = atoms.positions[0] + 40.0  # far away: no neighbours (cell is periodic: put it in vacuum)
    atoms.pbc = (True, True, False)
    atoms.cell[2] = [0, 0, 60.0]
    sym = atoms.get_chemical_symbols()
    sp = np.array([list(species).index(s) for s in sym], dtype=np.int64)
    ei, _, vec = neighbor_list(atoms.positions, atoms.cell[:], np.array(atoms.pbc), 3.5 + 0.8)  # some beyond rcut
    ei, vec = np.asarray(ei), np.asarray(vec)
    assert (np.linalg.norm(vec, axis=1) > 3.5).any()
    _compare(ref, nat, sp, ei, vec, len(sp))
    _compare(ref, nat, sp, ei, vec, len(sp) - 4)  # ghost centres: energies, no gradients


def test_native_float32_export(tmp_path, monkeypatch):
    m = _model(False)
    p64, p32 = str(tmp_path / "m64.pt"), str(tmp_path / "m32.pt")
    export_model(m, p64, dtype="float64")
    export_model(m, p32, dtype="float32")
    monkeypatch.setenv("MLIP_BACKEND", "native")
    atoms = random_structure(2, 10, cell_scale=5.0)
    sp = np.array([["H", "O"].index(s) for s in atoms.get_chemical_symbols()], dtype=np.int64)
    ei, _, vec = neighbor_list(atoms.positions, atoms.cell[:], np.array(atoms.pbc), 3.5)
    a = _core.Engine(p64).compute(sp, np.asarray(ei), np.asarray(vec), len(sp), False)
    b = _core.Engine(p32).compute(sp, np.asarray(ei), np.asarray(vec), len(sp), False)
    assert b["energy"] == pytest.approx(a["energy"], rel=1e-5)
    np.testing.assert_allclose(b["forces"], a["forces"], atol=1e-4 * max(1, np.abs(a["forces"]).max()))


class _ShiftedDP(DeepPotSeA):
    """Same parameters as a DeepPotSeA, different formula: its export must not run natively."""

    def forward(self, species: torch.Tensor, edge_index: torch.Tensor, edge_vec: torch.Tensor) -> torch.Tensor:
        return self.energy_bias[species] + 1.5 * self.descriptor(species, edge_index, edge_vec).sum(1)


def test_export_with_other_code_falls_back_to_torchscript(tmp_path, monkeypatch):
    m = _ShiftedDP(["H", "O"], rcut=3.5, rcut_smth=1.0, sel=[20, 20], neuron=[5, 10], axis_neuron=4,
                   fitting_neuron=[12], seed=1).double()
    path = str(tmp_path / "shifted.pt")
    export_model(m, path)
    monkeypatch.setenv("MLIP_BACKEND", "native")
    assert _core.Engine(path).backend == "torchscript"


def test_table_and_exact_paths(tmp_path, monkeypatch):
    """MLIP_DP_TABLE=0 (exact embedding nets everywhere) equals the tabulated default, and a pair
    closer than the table's 0.5 Å takes the exact path."""
    m = _model(False)
    path = str(tmp_path / "dp.pt")
    export_model(m, path)
    sp = np.array([0, 1, 1, 0], dtype=np.int64)
    pos = np.array([[0.0, 0.0, 0.0], [0.4, 0.1, 0.0], [1.5, -0.3, 0.4], [0.2, 1.6, -0.8]])
    pairs = [(a, b) for a in range(4) for b in range(4) if a != b]
    ei = np.array(pairs, dtype=np.int64).T
    vec = np.array([pos[b] - pos[a] for a, b in pairs])
    ref, nat = _engines(path, monkeypatch)
    _compare(ref, nat, sp, ei, vec, 4)
    monkeypatch.setenv("MLIP_DP_TABLE", "0")
    exact = _core.Engine(path)
    assert exact.backend == "native-deepmd"
    _compare(ref, exact, sp, ei, vec, 4)


def test_native_finite_differences(tmp_path):
    """Forces and stress of the native kernel (tables included) through the ASE calculator against
    finite differences of its own energy (float64)."""
    from conftest import calculator_fd_errors
    from mlip import MLIPCalculator

    m = _model(False)
    export_model(m, str(tmp_path / "dp.pt"))
    calc = MLIPCalculator(str(tmp_path / "dp.pt"))
    assert calc.engine.backend == "native-deepmd"
    ef, ew = calculator_fd_errors(calc, random_structure(4, 10, cell_scale=5.0))
    assert ef < 1e-6 and ew < 1e-6, (ef, ew)

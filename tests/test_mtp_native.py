"""The C++ engine's native MTP kernel against the TorchScript graph of the same export.

The export's TorchScript code is the reference (its formulas are tested against finite differences
and MLIP-2 in test_mtp.py / test_mtp_file.py); the native path must reproduce it to round-off for
every output, with several species, ghost nodes (n_local < n_atoms), edges beyond the cutoff and
distances below min_dist (MLIP evaluates the polynomials there too)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mlip import _core
from mlip.graph import frame_edges
from conftest import assert_same_outputs, torch_and_native_engines
from mlip.export import export_model
from tests.test_mtp import _atoms, _model


def _engines(path, monkeypatch):
    return torch_and_native_engines(path, monkeypatch, "native-mtp")


def _compare(ref, nat, sp, ei, vec, n_local):
    assert_same_outputs(ref, nat, sp, ei, vec, n_local)


@pytest.mark.parametrize("species,level", [(("Mo", "Nb"), 10), (("Mo",), 16), (("Mo", "Nb", "Ta"), 12)])
def test_native_equals_torchscript(tmp_path, monkeypatch, species, level):
    m = _model(species=species, level=level)
    path = str(tmp_path / "mtp.pt")
    export_model(m, path)
    ref, nat = _engines(path, monkeypatch)
    atoms = _atoms(seed=level, n=10, species=species)
    sp, ei, vec = frame_edges(atoms, m.species, m.cutoff + 0.7, torch.float64)  # some edges beyond rc
    sp, ei, vec = sp.numpy(), ei.numpy(), vec.numpy()
    assert (np.linalg.norm(vec, axis=1) > m.cutoff).any()
    _compare(ref, nat, sp, ei, vec, len(sp))
    # ghost nodes: the last three atoms are not local (their energies are computed, not summed,
    # and their own edges must not contribute forces)
    _compare(ref, nat, sp, ei, vec, len(sp) - 3)


def test_native_below_min_dist_and_no_edges(tmp_path, monkeypatch):
    m = _model(species=("Mo", "Nb"), level=8)
    path = str(tmp_path / "mtp.pt")
    export_model(m, path)
    ref, nat = _engines(path, monkeypatch)
    sp = np.array([0, 1, 0], dtype=np.int64)
    ei = np.array([[0, 1], [1, 0]], dtype=np.int64)  # atom 2 has no edges
    vec = np.array([[1.1, 0.2, -0.1], [-1.1, -0.2, 0.1]])  # r < min_dist = 1.5
    _compare(ref, nat, sp, ei, vec, 3)
    out = nat.compute(sp, ei, vec, 3, False)
    assert out["atom_energy"][2] == pytest.approx(-1.0)  # species energy only


def test_native_float32_export_runs_in_float64(tmp_path, monkeypatch):
    m = _model(species=("Mo", "Nb"), level=10)
    p64, p32 = str(tmp_path / "m64.pt"), str(tmp_path / "m32.pt")
    export_model(m, p64, dtype="float64")
    export_model(m, p32, dtype="float32")
    monkeypatch.setenv("MLIP_BACKEND", "native")
    a, b = _core.Engine(p64), _core.Engine(p32)
    atoms = _atoms(seed=5, n=8)
    sp, ei, vec = (x.numpy() for x in frame_edges(atoms, m.species, m.cutoff, torch.float64))
    ra, rb = a.compute(sp, ei, vec, len(sp), False), b.compute(sp, ei, vec, len(sp), False)
    assert rb["energy"] == pytest.approx(ra["energy"], rel=1e-6)  # parameters rounded to float32
    np.testing.assert_allclose(rb["forces"], ra["forces"], atol=1e-4 * max(1, np.abs(ra["forces"]).max()))


def test_bad_backend_name(tmp_path, monkeypatch):
    m = _model(species=("Mo",), level=8)
    path = str(tmp_path / "mtp.pt")
    export_model(m, path)
    monkeypatch.setenv("MLIP_BACKEND", "fast")
    with pytest.raises(RuntimeError, match="MLIP_BACKEND"):
        _core.Engine(path)


def test_native_finite_differences():
    """Forces and stress of the native kernel (through the ASE calculator) against finite
    differences of its own energy, two species, triclinic cell (float64)."""
    import tempfile

    from conftest import calculator_fd_errors
    from mlip import MLIPCalculator

    m = _model(species=("Mo", "Nb"), level=12)
    with tempfile.TemporaryDirectory() as d:
        export_model(m, f"{d}/m.pt")
        calc = MLIPCalculator(f"{d}/m.pt")
        assert calc.engine.backend == "native-mtp"
        ef, ew = calculator_fd_errors(calc, _atoms(seed=7, n=8))
    assert ef < 1e-6 and ew < 1e-6, (ef, ew)


def test_native_edgeless_node_blocks(tmp_path, monkeypatch):
    """Nodes without edges in whole blocks of the kernel (the LAMMPS ghosts of a local model, listed
    after the locals): their energies are the species energies, summed only when local."""
    m = _model(species=("Mo", "Nb"), level=10)
    with torch.no_grad():
        m.species_coeffs.copy_(torch.tensor([-1.3, 0.7], dtype=torch.float64))
    path = str(tmp_path / "mtp.pt")
    export_model(m, path)
    ref, nat = _engines(path, monkeypatch)
    atoms = _atoms(seed=3, n=10, species=("Mo", "Nb"))
    sp, ei, vec = (t.numpy() for t in frame_edges(atoms, m.species, m.cutoff, torch.float64))
    n_with_edges = len(sp)
    extra = np.array([0, 1] * 9, dtype=np.int64)  # 18 edge-less nodes: blocks 16-23 and 24-27 have no edges
    sp_all = np.concatenate([sp, extra])
    _compare(ref, nat, sp_all, ei, vec, n_with_edges)  # as ghosts
    _compare(ref, nat, sp_all, ei, vec, len(sp_all))  # as locals: their energies count
    out = nat.compute(sp_all, ei, vec, n_with_edges, False)
    coeffs = m.species_coeffs.detach().numpy()
    np.testing.assert_allclose(out["atom_energy"][n_with_edges:], coeffs[extra], rtol=0, atol=1e-14)

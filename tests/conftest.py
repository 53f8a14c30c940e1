"""Shared fixtures and numerical checks used by the model-family tests."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MLIP_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test naming what is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"reference data not present: {p} (set MLIP_SHARED_DATA or place ../shared/data)")
    return p


def random_structure(seed: int, n: int, species=("H", "O"), cell_scale: float = 5.0, pbc=(True, True, True),
                     min_dist: float = 0.9):
    """Random triclinic structure with no two atoms closer than min_dist (through images too)."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    # rows = cell vectors: a diagonal part plus random shear, i.e. a genuinely triclinic cell
    cell = np.diag(rng.uniform(0.8, 1.2, 3) * cell_scale) + np.triu(rng.uniform(-0.25, 0.25, (3, 3)) * cell_scale, 1)
    atoms = Atoms(cell=cell, pbc=pbc)
    tries = 0
    while len(atoms) < n:
        tries += 1
        if tries > 20000:
            raise RuntimeError("could not place atoms")
        cand = Atoms([species[len(atoms) % len(species)]], positions=[rng.random(3) @ cell], cell=cell, pbc=pbc)
        trial = atoms + cand
        if len(trial) > 1:
            d = trial.get_distances(len(trial) - 1, list(range(len(trial) - 1)), mic=any(pbc))
            if d.min() < min_dist:
                continue
        atoms = trial
    return atoms


def model_efv(model, atoms) -> Tuple[float, np.ndarray, np.ndarray]:
    """Energy, forces and virial of an eager model on an ASE structure (training code path)."""
    from mlip.graph import Graph, collate
    from mlip.models.base import predict
    from mlip.neighbors import neighbor_list

    idx = model.species_index(atoms.get_chemical_symbols())
    ei, _, ev = neighbor_list(atoms.get_positions(), atoms.cell[:], atoms.pbc, model.cutoff)
    dtype = next(model.parameters()).dtype
    g = Graph(idx, torch.from_numpy(ei), torch.from_numpy(ev).to(dtype), None, None, None, 1.0, "")
    out = predict(model, collate([g]))
    return float(out["energy"][0].detach()), out["forces"].detach().numpy(), out["virial"][0].detach().numpy()


def _energy_fn(model):
    """model: an eager model, or any callable atoms -> energy (e.g. through the ASE calculator)."""
    if isinstance(model, torch.nn.Module):
        return lambda atoms: model_efv(model, atoms)[0]
    return model


def fd_forces(model, atoms, h: float = 1e-5) -> np.ndarray:
    energy = _energy_fn(model)
    pos0 = atoms.get_positions()
    fd = np.zeros_like(pos0)
    for a in range(len(atoms)):
        for c in range(3):
            for sgn in (1, -1):
                p = pos0.copy()
                p[a, c] += sgn * h
                atoms.set_positions(p)
                fd[a, c] -= sgn * energy(atoms) / (2 * h)
    atoms.set_positions(pos0)
    return fd


def fd_virial(model, atoms, h: float = 1e-5) -> np.ndarray:
    """W = −∂E/∂ε by central differences of a homogeneous (symmetric) strain."""
    energy = _energy_fn(model)
    cell0, pos0 = atoms.cell[:].copy(), atoms.get_positions()
    w = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            e = []
            for sgn in (1, -1):
                eps = np.zeros((3, 3))
                eps[a, b] += 0.5 * sgn * h
                eps[b, a] += 0.5 * sgn * h
                atoms.set_cell(cell0 @ (np.eye(3) + eps), scale_atoms=False)
                atoms.set_positions(pos0 @ (np.eye(3) + eps))
                e.append(energy(atoms))
            w[a, b] = -(e[0] - e[1]) / (2 * h)
    atoms.set_cell(cell0)
    atoms.set_positions(pos0)
    return w


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-12))


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(int(os.environ.get("MLIP_TEST_THREADS", "1")))
    yield


def run_python(code: str, timeout: int = 300) -> str:
    """Run code in a fresh interpreter (e.g. to load an export without the training code)."""
    import subprocess

    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"subprocess failed:\n{res.stdout}\n{res.stderr}")
    return res.stdout


def torch_and_native_engines(path: str, monkeypatch, native_backend: str):
    """(TorchScript engine, native engine) on the same export (MLIP_BACKEND switch)."""
    from mlip import _core

    monkeypatch.setenv("MLIP_BACKEND", "torch")
    ref = _core.Engine(path, num_threads=1)
    monkeypatch.setenv("MLIP_BACKEND", "native")
    nat = _core.Engine(path, num_threads=1)
    assert ref.backend == "torchscript" and nat.backend == native_backend
    return ref, nat


def assert_same_outputs(ref, nat, species, edge_index, edge_vec, n_local, virial_atol=1e-10):
    """Every output of two engines on one graph agrees to round-off (per-atom virials included)."""
    import numpy as np

    a = ref.compute(species, edge_index, edge_vec, n_local, True)
    b = nat.compute(species, edge_index, edge_vec, n_local, True)
    scale = max(1.0, np.abs(a["forces"]).max())
    assert b["energy"] == pytest.approx(a["energy"], rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(b["atom_energy"], a["atom_energy"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b["forces"], a["forces"], rtol=0, atol=1e-11 * scale)
    np.testing.assert_allclose(b["virial"], a["virial"], rtol=0, atol=virial_atol * scale)
    np.testing.assert_allclose(b["atom_virial"], a["atom_virial"], rtol=0, atol=virial_atol * scale)


def calculator_fd_errors(calc, atoms) -> Tuple[float, float]:
    """Max relative errors of the calculator's forces and virial (−stress·V) against central finite
    differences of its own energy."""
    atoms = atoms.copy()
    atoms.calc = calc

    def energy(a):
        a.calc = calc
        return a.get_potential_energy()

    f = atoms.get_forces()
    w = -atoms.get_stress(voigt=False) * atoms.get_volume()
    return rel_err(f, fd_forces(energy, atoms.copy())), rel_err(w, fd_virial(energy, atoms.copy()))


def damage_export(src: str, dst: str, nbytes: int = 64) -> str:
    """Copy of the export `src` at `dst` with `nbytes` bytes flipped inside its largest stored tensor
    (the zip's recorded CRC then no longer matches; torch's loader alone does not notice). Returns
    the name of the damaged zip entry."""
    import struct
    import zipfile

    with zipfile.ZipFile(src) as z:
        tensors = [i for i in z.infolist() if "/data/" in i.filename and i.compress_type == zipfile.ZIP_STORED]
        info = max(tensors, key=lambda i: i.file_size)
    data = bytearray(open(src, "rb").read())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    for k in range(start, start + min(nbytes, info.compress_size)):
        data[k] ^= 0xFF
    with open(dst, "wb") as fh:
        fh.write(bytes(data))
    return info.filename

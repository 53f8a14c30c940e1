"""MTP model: basis counts, finite differences, invariances, smooth cutoff, export (float64/float32),
checkpoint round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mlip.graph import frame_edges
from mlip.export import export_model, read_metadata
from mlip.models.base import forces_virials_from_edges
from mlip.models import build_model
from mlip.models.mtp import MTP
from mlip.models.mtp_basis import enumerate_graphs, level_scheme, times_generations

# MLIP-2 template counts (alpha_scalar_moments) by level, single or multi species
KNOWN_COUNTS = {2: 1, 4: 2, 6: 5, 8: 9, 10: 16, 12: 29, 14: 52, 16: 92, 18: 163, 20: 288}


def _atoms(seed=0, n=8, species=("Mo", "Nb"), scale=5.5, pbc=True):
    from ase import Atoms

    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(0.9, 1.1, 3) * scale) + np.triu(rng.uniform(-0.2, 0.2, (3, 3)) * scale, 1)
    pos = []
    while len(pos) < n:
        p = rng.random(3) @ cell
        ok = True
        for q in pos:
            d = p - q
            frac = np.linalg.solve(cell.T, d)
            d = (frac - np.round(frac)) @ cell if pbc else d
            if np.linalg.norm(d) < 2.0:
                ok = False
        if ok:
            pos.append(p)
    return Atoms([species[k % len(species)] for k in range(n)], positions=pos, cell=cell, pbc=pbc)


def efv(model, atoms):
    dtype = model.radial_coeffs.dtype
    sp, ei, vec = frame_edges(atoms, model.species, model.cutoff, dtype)
    vec.requires_grad_(True)
    e = model(sp, ei, vec).sum()
    (g,) = torch.autograd.grad(e, vec)
    f, ev = forces_virials_from_edges(g, ei, vec.detach(), len(sp))
    return float(e.detach()), f.numpy(), ev.sum(0).numpy()


def _model(species=("Mo", "Nb"), level=10, seed=3, noise=0.5):
    m = MTP(list(species), level=level, cutoff=4.5, min_dist=1.5, seed=seed, init_noise=noise, scaling=0.05)
    with torch.no_grad():
        m.moment_coeffs.copy_(torch.randn(m.n_alpha, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
        m.species_coeffs.copy_(torch.tensor([-1.0, -2.0, -3.0][: len(species)], dtype=torch.float64))
    return m


@pytest.mark.parametrize("level", sorted(KNOWN_COUNTS))
def test_basis_counts(level):
    assert len(enumerate_graphs(level)) == KNOWN_COUNTS[level]


def test_scheme_shape_level16():
    s = level_scheme(16)
    assert len(s.alpha_moment_mapping) == 92
    assert s.radial_funcs_count == 4
    assert s.max_nu == 6
    gens = times_generations(len(s.alpha_index_basic), s.alpha_index_times)
    assert sum(len(g) for g in gens) == len(s.alpha_index_times)


@pytest.mark.parametrize("species", [("Mo",), ("Mo", "Nb")])
def test_fd_forces_and_virial(species):
    m = _model(species)
    atoms = _atoms(1, 6, species)
    e0, f, w = efv(m, atoms)
    h = 1e-5
    pos0 = atoms.get_positions()
    fd = np.zeros_like(pos0)
    for a in range(len(atoms)):
        for c in range(3):
            ee = []
            for s in (1, -1):
                p = pos0.copy()
                p[a, c] += s * h
                atoms.set_positions(p)
                ee.append(efv(m, atoms)[0])
            fd[a, c] = -(ee[0] - ee[1]) / (2 * h)
    atoms.set_positions(pos0)
    assert np.abs(f - fd).max() / np.abs(f).max() < 1e-6
    cell0 = atoms.cell[:].copy()
    wfd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            ee = []
            for s in (1, -1):
                eps = np.zeros((3, 3))
                eps[a, b] += 0.5 * s * h
                eps[b, a] += 0.5 * s * h
                atoms.set_cell(cell0 @ (np.eye(3) + eps), scale_atoms=False)
                atoms.set_positions(pos0 @ (np.eye(3) + eps))
                ee.append(efv(m, atoms)[0])
            wfd[a, b] = -(ee[0] - ee[1]) / (2 * h)
    atoms.set_cell(cell0)
    atoms.set_positions(pos0)
    assert np.abs(w - wfd).max() / np.abs(w).max() < 1e-6


def test_invariances():
    m = _model()
    atoms = _atoms(2, 8)
    e0, f0, w0 = efv(m, atoms)
    # translation (and wrapping back into the cell)
    t = atoms.copy()
    t.translate([0.37, -1.2, 2.1])
    e, f, _ = efv(m, t)
    assert abs(e - e0) < 1e-10 * abs(e0) and np.abs(f - f0).max() < 1e-9
    t.wrap()
    assert abs(efv(m, t)[0] - e0) < 1e-10 * abs(e0)
    # periodic image of one atom
    t = atoms.copy()
    p = t.get_positions()
    p[3] += t.cell[0] - 2 * t.cell[2]
    t.set_positions(p)
    assert abs(efv(m, t)[0] - e0) < 1e-10 * abs(e0)
    # rotation of positions and cell
    from scipy.spatial.transform import Rotation

    R = Rotation.random(random_state=4).as_matrix()
    t = atoms.copy()
    t.set_cell(atoms.cell[:] @ R.T, scale_atoms=False)
    t.set_positions(atoms.get_positions() @ R.T)
    e, f, w = efv(m, t)
    assert abs(e - e0) < 1e-10 * abs(e0)
    assert np.abs(f - f0 @ R.T).max() < 1e-9
    assert np.abs(w - R @ w0 @ R.T).max() < 1e-8
    # permutation
    perm = np.random.default_rng(5).permutation(len(atoms))
    e, f, _ = efv(m, atoms[perm])
    assert abs(e - e0) < 1e-10 * abs(e0) and np.abs(f - f0[perm]).max() < 1e-9
    # supercell: extensive energy
    e2 = efv(m, atoms.repeat((2, 1, 1)))[0]
    assert abs(e2 - 2 * e0) < 1e-9 * abs(e0)


def test_smooth_cutoff():
    from ase import Atoms

    m = _model(("Mo",))
    rc = m.cutoff
    es, fs = [], []
    for d in (1e-2, 1e-3, 1e-4):
        a = Atoms("Mo2", positions=[[0, 0, 0], [rc - d, 0, 0]], pbc=False)
        e, f, _ = efv(m, a)
        es.append(e - 2 * float(m.species_coeffs[0]))
        fs.append(np.abs(f).max())
    far = Atoms("Mo2", positions=[[0, 0, 0], [rc + 1e-3, 0, 0]], pbc=False)
    e, f, _ = efv(m, far)
    assert abs(e - 2 * float(m.species_coeffs[0])) == 0.0 and np.abs(f).max() == 0.0
    # energy ~ d^2 (at least), force ~ d: each decade shrinks them by >= ~100x / 10x
    assert abs(es[2]) < 1e-6 and fs[2] < 1e-3
    assert abs(es[1]) / max(abs(es[0]), 1e-300) < 0.02 and fs[1] / fs[0] < 0.15


def test_edges_beyond_cutoff_are_ignored():
    m = _model(("Mo",))
    atoms = _atoms(3, 6, ("Mo",))
    sp, ei, vec = frame_edges(atoms, m.species, m.cutoff)
    sp2, ei2, vec2 = frame_edges(atoms, m.species, m.cutoff + 1.0)
    assert ei2.shape[1] > ei.shape[1]
    assert torch.allclose(m(sp, ei, vec), m(sp2, ei2, vec2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_export(tmp_path, dtype):
    m = _model()
    atoms = _atoms(4, 8)
    e0, f0, w0 = efv(m, atoms)
    path = str(tmp_path / "mtp.pt")
    meta = export_model(m, path, dtype=dtype)
    assert meta["family"] == "mtp" and "mtp" in meta
    ts = torch.jit.load(path)
    sp, ei, vec = frame_edges(atoms, m.species, m.cutoff, getattr(torch, dtype))
    ae, f, w, av = ts(sp, ei, vec, len(sp), True)
    tol = 1e-10 if dtype == "float64" else 2e-4
    assert abs(float(ae.sum()) - e0) < tol * max(1.0, abs(e0)) * (1 if dtype == "float64" else 10)
    assert np.abs(f.double().numpy() - f0).max() < (1e-9 if dtype == "float64" else 1e-3) * max(1, np.abs(f0).max())
    assert np.abs(av.double().sum(0).numpy().reshape(3, 3) - w.double().numpy()).max() < 1e-3
    assert not ts.has_grade and ts.grade(sp, ei, vec, len(sp)).shape == (0,)
    assert ts.model.basis_functions(sp, ei, vec).shape == (len(sp), m.n_alpha)
    assert read_metadata(path)["config"]["level"] == 10


def test_checkpoint_roundtrip():
    m = _model()
    m2 = build_model("mtp", m.config())
    m2.load_state_dict(m.state_dict())
    atoms = _atoms(5, 8)
    assert efv(m2, atoms)[0] == efv(m, atoms)[0]
    # checkpoints from before active sets moved into the export carry active_nbh/active_cfg buffers
    old = dict(m.state_dict(), active_nbh=torch.randn(m.n_features, 7, dtype=torch.float64),
               active_cfg=torch.zeros(m.n_features, 0, dtype=torch.float64))
    m3 = build_model("mtp", m.config())
    m3.load_state_dict(old)
    assert efv(m3, atoms)[0] == efv(m, atoms)[0]


def test_fit_statistics_frames_and_batch():
    atoms = _atoms(6, 8)
    from mlip.data import Frame

    fr = Frame.from_atoms(atoms)
    m1 = MTP(["Mo", "Nb"], level=8, cutoff=4.5)
    m1.fit_statistics([fr])
    m2 = MTP(["Mo", "Nb"], level=8, cutoff=4.5)
    sp, ei, vec = frame_edges(atoms, m2.species, m2.cutoff)
    m2.fit_statistics(sp, ei, vec)
    assert m1.config()["min_dist"] == m2.config()["min_dist"]
    assert abs(m1.config()["scaling"] - m2.config()["scaling"]) < 1e-12
    assert 0.0 < m1.config()["min_dist"] < 2.0

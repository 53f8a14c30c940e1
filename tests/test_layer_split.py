"""The layer split of message-passing exports (docs/CONTRACT.md, "Layer split"): the engine's
layered backend against the export's whole-graph TorchScript, on a complete periodic graph and on a
one-cutoff graph with ghost images whose rows an exchange (here in Python) keeps equal to their
owners'; chunking; γ; and refusal of an exchange by an export without the split."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("e3nn")

from ase.build import bulk  # noqa: E402
from ase.neighborlist import primitive_neighbor_list  # noqa: E402

from mlip._core import Engine  # noqa: E402
from mlip.export import export_model  # noqa: E402
from mlip.models.nequip import NequIP  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
SPECIES = ["Cu", "Ag"]
COMPARED = ("energy", "atom_energy", "forces", "virial", "atom_virial")


def nequip(num_layers=3, l_max=2, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(cutoff=3.2, l_max=l_max, num_features=8, num_layers=num_layers, num_basis=5, radial_hidden=12,
               head_hidden=8, avg_num_neighbors=12.0)
    cfg.update(kw)
    m = NequIP(SPECIES, **cfg)
    with torch.no_grad():
        m.energy_scale.copy_(torch.tensor([0.7, 1.3]))
        m.energy_shift.copy_(torch.tensor([-1.5, 2.0]))
        if m.pair.enabled:  # a non-zero two-body term (it starts at zero in training)
            m.pair.coeff.copy_(0.3 * torch.randn(m.pair.coeff.shape))
    return m


def mtp_baseline(tmp_path):
    """An exported MTP (cutoff 3.0 < the model's 3.2) with non-trivial coefficients: `model.baseline`."""
    from mlip.models.mtp import MTP

    torch.manual_seed(5)
    mtp = MTP(SPECIES, level=8, cutoff=3.0, min_dist=1.5, scaling=0.3, seed=5)
    with torch.no_grad():
        mtp.moment_coeffs.copy_(0.2 * torch.randn(mtp.moment_coeffs.shape))
    path = str(tmp_path / "mtp.pt")
    export_model(mtp, path)
    return path


def crystal(seed=0):
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 2))
    rng = np.random.default_rng(seed)
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.04 * rng.normal(size=(3, 3))), scale_atoms=True)
    atoms.positions += rng.normal(scale=0.12, size=atoms.positions.shape)
    species = rng.integers(0, 2, len(atoms))
    return atoms, species


def periodic_graph(atoms, cutoff):
    i, j, S = primitive_neighbor_list("ijS", atoms.pbc, atoms.cell[:], atoms.positions, cutoff)
    order = np.lexsort((j, i))
    i, j, S = i[order], j[order], S[order]
    return i, j, S, atoms.positions[j] - atoms.positions[i] + S @ atoms.cell[:]


class ImageExchange:
    """Ghost nodes N.. are periodic images: forward copies the owner's row, reverse adds it back."""

    def __init__(self, n, owner):
        self.n, self.owner, self.calls = n, owner, []

    def forward(self, rows):
        self.calls.append(("forward", rows.shape[1]))
        rows[self.n:] = rows[self.owner]

    def reverse(self, rows):
        self.calls.append(("reverse", rows.shape[1]))
        np.add.at(rows, self.owner, rows[self.n:])


def ghost_graph(atoms, species, cutoff):
    """One-cutoff graph with every image neighbour as a separate ghost node (as LAMMPS without
    image folding): (species, edge_index, edge_vec, n_local, owner)."""
    n = len(atoms)
    i, j, S, vec = periodic_graph(atoms, cutoff)
    ghosts, jj, owner = {}, [], []
    for a, b, s in zip(i, j, map(tuple, S)):
        if s == (0, 0, 0):
            jj.append(b)
            continue
        if (b, s) not in ghosts:
            ghosts[(b, s)] = n + len(ghosts)
            owner.append(b)
        jj.append(ghosts[(b, s)])
    owner = np.array(owner)
    return np.concatenate([species, species[owner]]), np.stack([i, np.array(jj)]), vec, n, owner


def engines(path, monkeypatch, chunk=None):
    if chunk is not None:
        monkeypatch.setenv("MLIP_LAYER_CHUNK", str(chunk))
    layered = Engine(path, 1)
    monkeypatch.setenv("MLIP_BACKEND", "torch")
    reference = Engine(path, 1)
    monkeypatch.delenv("MLIP_BACKEND")
    return layered, reference


def assert_close(out, ref, tol):
    for k in COMPARED:
        a, b = np.asarray(out[k], dtype=float), np.asarray(ref[k], dtype=float)
        assert np.abs(a - b).max() <= tol * max(np.abs(b).max(), 1.0), (k, np.abs(a - b).max())


@pytest.mark.parametrize("num_layers,l_max,chunk,pair", [(3, 2, None, 0), (3, 2, 5, 0), (1, 1, 3, 0), (2, 0, 1, 0),
                                                         (2, 1, 4, 6)])
def test_layered_equals_torchscript_on_periodic_graph(tmp_path, monkeypatch, num_layers, l_max, chunk, pair):
    path = str(tmp_path / "m.pt")
    base = mtp_baseline(tmp_path) if pair else None  # the local terms: two-body and an MTP baseline
    export_model(nequip(num_layers, l_max, pair_basis=pair, pair_r_min=1.5, baseline=base), path)
    layered, reference = engines(path, monkeypatch, chunk)
    assert layered.backend == "layered" and layered.supports_exchange
    assert reference.backend == "torchscript"
    atoms, species = crystal(1)
    i, j, _, vec = periodic_graph(atoms, 3.2)
    ei = np.stack([i, j])
    assert_close(layered.compute(species, ei, vec, atom_virial=True),
                 reference.compute(species, ei, vec, atom_virial=True), 1e-12)


@pytest.mark.parametrize("pair", [0, 5])  # 5: with the two-body term and an MTP baseline
def test_one_cutoff_graph_with_exchange_equals_periodic(tmp_path, monkeypatch, pair):
    path = str(tmp_path / "m.pt")
    m = nequip(3, pair_basis=pair, baseline=mtp_baseline(tmp_path) if pair else None)
    export_model(m, path)
    layered, reference = engines(path, monkeypatch, chunk=7)
    atoms, species = crystal(2)
    i, j, _, vec = periodic_graph(atoms, 3.2)
    ref = reference.compute(species, np.stack([i, j]), vec, atom_virial=True)
    sp, ei, ev, n, owner = ghost_graph(atoms, species, 3.2)
    ex = ImageExchange(n, owner)
    out = layered.compute(sp, ei, ev, n_local=n, atom_virial=True, exchange=ex)
    widths = list(torch.jit.load(path).layer_widths)
    # L - 1 forward exchanges of the inner widths, then L - 1 reverse ones in reverse order
    assert ex.calls == [("forward", widths[1]), ("forward", widths[2]), ("reverse", widths[2]),
                        ("reverse", widths[1])]
    forces, av = out["forces"].copy(), out["atom_virial"].copy()
    np.add.at(forces, owner, forces[n:])
    np.add.at(av, owner, av[n:])
    folded = {"energy": out["energy"], "atom_energy": out["atom_energy"][:n], "forces": forces[:n],
              "virial": out["virial"], "atom_virial": av[:n]}
    assert_close(folded, ref, 1e-12)
    assert np.all(out["atom_energy"][n:] == 0.0)
    # the same graph without the exchange is not the periodic result: the exchange is what makes it
    wrong = layered.compute(sp, ei, ev, n_local=n)
    assert abs(wrong["energy"] - ref["energy"]) > 1e-6 * abs(ref["energy"])


def test_grade_with_exchange_equals_periodic(tmp_path, monkeypatch):
    from mlip.active.grade import build_active_set, export_graded

    m = nequip(2, seed=3)
    path = str(tmp_path / "g.pt")
    train = [crystal(s)[0] for s in (4, 5)]
    for a in train:
        a.set_chemical_symbols([SPECIES[k % 2] for k in range(len(a))])
    export_graded(m, path, build_active_set(m, train, "nbh"))
    layered, reference = engines(path, monkeypatch)
    atoms, species = crystal(6)
    i, j, _, vec = periodic_graph(atoms, 3.2)
    ref = reference.grade(species, np.stack([i, j]), vec)
    assert np.allclose(layered.grade(species, np.stack([i, j]), vec), ref, rtol=1e-10, atol=0)
    sp, ei, ev, n, owner = ghost_graph(atoms, species, 3.2)
    got = layered.grade(sp, ei, ev, n_local=n, exchange=ImageExchange(n, owner))
    assert np.allclose(got, ref, rtol=1e-10, atol=0)


def test_float32_export_layered(tmp_path, monkeypatch):
    path = str(tmp_path / "m32.pt")
    export_model(nequip(2), path, "float32")
    layered, reference = engines(path, monkeypatch)
    assert layered.backend == "layered"
    atoms, species = crystal(7)
    i, j, _, vec = periodic_graph(atoms, 3.2)
    ei = np.stack([i, j])
    assert_close(layered.compute(species, ei, vec, atom_virial=True),
                 reference.compute(species, ei, vec, atom_virial=True), 1e-4)


def test_exchange_refused_without_layer_split(tmp_path):
    from test_lammps_util import export_toy

    path = export_toy(str(tmp_path / "toy_mp.pt"), "mp", species=SPECIES, cutoff=3.2)
    eng = Engine(path, 1)
    assert not eng.supports_exchange and eng.backend == "torchscript"
    atoms, species = crystal(8)
    sp, ei, ev, n, owner = ghost_graph(atoms, species, 3.2)
    with pytest.raises(ValueError, match="has no layer split"):
        eng.compute(sp, ei, ev, n_local=n, exchange=ImageExchange(n, owner))


def test_exchange_needs_edges_centred_on_locals(tmp_path, monkeypatch):
    path = str(tmp_path / "m.pt")
    export_model(nequip(2), path)
    layered, _ = engines(path, monkeypatch)
    atoms, species = crystal(9)
    sp, ei, ev, n, owner = ghost_graph(atoms, species, 3.2)
    ei_bad = ei[:, ::-1].copy()  # unsorted, and centres on ghosts
    with pytest.raises(ValueError, match="centred on a local atom"):
        layered.compute(sp, ei_bad, ev[::-1].copy(), n_local=n, exchange=ImageExchange(n, owner))

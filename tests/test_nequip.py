"""NequIP-style model: derivatives, symmetries, ghost-atom semantics, smooth cutoff, TorchScript export."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import fd_forces, fd_virial, model_efv, random_structure, rel_err, run_python

pytest.importorskip("e3nn")

from mlip.export import export_model  # noqa: E402
from mlip.models.base import forces_virials_from_edges  # noqa: E402
from mlip.models import build_model  # noqa: E402
from mlip.models.nequip import NequIP  # noqa: E402
from mlip.neighbors import neighbor_list  # noqa: E402

SPECIES = ["H", "O"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny graphs: one thread is faster (and much faster on a loaded machine) than several."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_model(seed: int = 0, cutoff: float = 3.0, dtype=torch.float64, **kw) -> NequIP:
    torch.manual_seed(seed)
    cfg = dict(cutoff=cutoff, l_max=2, num_features=8, num_layers=2, num_basis=6, radial_hidden=16,
               head_hidden=8, avg_num_neighbors=6.0)
    cfg.update(kw)
    m = NequIP(SPECIES, **cfg).to(dtype)
    with torch.no_grad():  # non-trivial scale/shift and basis frequencies
        m.energy_scale.copy_(torch.tensor([0.7, 1.3], dtype=dtype))
        m.energy_shift.copy_(torch.tensor([-1.5, 2.0], dtype=dtype))
    return m


def graph(atoms, cutoff):
    ei, _, ev = neighbor_list(atoms.get_positions(), atoms.cell[:], atoms.pbc, cutoff)
    return torch.from_numpy(ei), torch.from_numpy(ev)


def efv(model, species, ei, ev, n_local=None, prune=False):
    """Energy (sum of the first n_local atoms), forces and virial, derived as the export does
    (prune: let the model skip what cannot reach the first n_local atoms)."""
    vec = ev.detach().clone().requires_grad_(True)
    ae = model(species, ei, vec, n_local) if prune else model(species, ei, vec)
    n_local = species.shape[0] if n_local is None else n_local
    e = ae[:n_local].sum()
    (g,) = torch.autograd.grad(e, vec)
    f, ew = forces_virials_from_edges(g, ei, vec.detach(), species.shape[0])
    return e.detach(), f.detach(), ew.sum(0).detach(), ae.detach()


# ------------------------------------------------------------------------------------------------ derivatives
@pytest.mark.parametrize("seed,n,cell_scale,cutoff", [(1, 7, 5.0, 3.0), (2, 3, 2.6, 3.5)])
def test_finite_difference_forces_and_virial(seed, n, cell_scale, cutoff):
    """Random triclinic two-species cells, the second smaller than the cutoff (many images)."""
    atoms = random_structure(seed, n, species=SPECIES, cell_scale=cell_scale)
    model = small_model(seed, cutoff=cutoff)
    e, f, w = model_efv(model, atoms)
    assert rel_err(f, fd_forces(model, atoms)) < 1e-6
    assert rel_err(w, fd_virial(model, atoms)) < 1e-6
    assert np.abs(f).max() > 1e-3 and np.abs(w).max() > 1e-3  # not trivially zero


def test_smooth_at_cutoff():
    model = small_model(3, cutoff=3.0)
    sp = torch.tensor([0, 1])
    ei = torch.tensor([[0, 1], [1, 0]])

    def dimer(r):
        ev = torch.tensor([[r, 0.0, 0.0], [-r, 0.0, 0.0]], dtype=torch.float64)
        e, f, _, _ = efv(model, sp, ei, ev)
        return float(e), f.numpy()

    e_iso = float(model(sp, torch.zeros((2, 0), dtype=torch.long), torch.zeros((0, 3), dtype=torch.float64)).sum().detach())
    e_mid, f_mid = dimer(2.0)
    scale = max(abs(e_mid - e_iso), 1e-3)
    for d in (1e-2, 1e-3):
        e_in, f_in = dimer(3.0 - d)
        assert abs(e_in - e_iso) < 50 * scale * d**3  # envelope p=6: zero with two derivatives at rc
        assert np.abs(f_in).max() < 50 * np.abs(f_mid).max() * d**2
    for r in (3.0, 3.0 + 1e-9, 3.5):  # edges at/beyond the cutoff contribute exactly nothing
        e_out, f_out = dimer(r)
        assert e_out == pytest.approx(e_iso, abs=1e-14) and np.abs(f_out).max() == 0.0


def test_pair_term_starts_at_zero_is_exact_and_pairwise():
    """model.pair_basis: zero at initialisation (the same model as without it, same seed), forces and
    virial equal finite differences once non-zero, each pair's energy counted once, and a model
    without it has neither the parameter nor the config keys (old checkpoints and exports load)."""
    from numpy.polynomial import chebyshev

    atoms = random_structure(13, 6, species=SPECIES, cell_scale=4.0)
    sp = small_model(13).species_index(atoms.get_chemical_symbols())
    ei, ev = graph(atoms, 3.0)
    plain = small_model(13)
    paired = small_model(13, pair_basis=5, pair_r_min=1.0)
    assert torch.equal(plain(sp, ei, ev), paired(sp, ei, ev))
    assert "pair_basis" not in plain.config() and not any(k.startswith("pair") for k in plain.state_dict())
    assert paired.config()["pair_basis"] == 5 and "pair.coeff" in paired.state_dict()
    torch.manual_seed(0)
    with torch.no_grad():
        paired.pair.coeff.copy_(torch.randn(paired.pair.coeff.shape, dtype=torch.float64))
    assert not torch.equal(plain(sp, ei, ev), paired(sp, ei, ev))
    e, f, w = model_efv(paired, atoms)
    assert rel_err(f, fd_forces(paired, atoms)) < 1e-6
    assert rel_err(w, fd_virial(paired, atoms)) < 1e-6
    # a dimer of species (0, 1): the pair energy is Σ_k c_01k T_k(x) u(r/rc), half on each atom
    r = 2.1
    x = (2 * r - 3.0 - 1.0) / (3.0 - 1.0)
    c = paired.pair.coeff[int(paired.pair.slot[0, 1])].detach().numpy()
    d6 = (r / 3.0) ** 6
    u = 1 - 28 * d6 + 48 * d6 * (r / 3.0) - 21 * d6 * (r / 3.0) ** 2
    e_pair = paired.pair(torch.tensor([0, 1]), torch.tensor([[0, 1], [1, 0]]),
                         torch.tensor([[r, 0, 0], [-r, 0, 0]], dtype=torch.float64), 2)
    assert np.allclose(e_pair.detach().numpy(), 0.5 * chebyshev.chebval(x, c) * u, rtol=1e-12)
    for bad in (dict(pair_basis=-1), dict(pair_basis=3, pair_r_min=3.0)):
        with pytest.raises(ValueError, match="pair_"):
            small_model(1, **bad)
    with pytest.raises(ValueError, match="readout_refit"):
        paired.linear_design(sp, ei, ev, torch.zeros(len(atoms), dtype=torch.long), 1)


def mtp_export(tmp_path, species, cutoff, seed=3):
    """A small MTP with non-trivial coefficients, exported (a baseline for `model.baseline`)."""
    from mlip.models.mtp import MTP

    torch.manual_seed(seed)
    mtp = MTP(list(species), level=8, cutoff=cutoff, min_dist=0.8, scaling=0.5, seed=seed).double()
    with torch.no_grad():
        for name in ("moment_coeffs", "species_coeffs"):
            getattr(mtp, name).copy_(0.2 * torch.randn(getattr(mtp, name).shape, dtype=torch.float64))
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = str(tmp_path / "mtp.pt")
    export_model(mtp, path)
    return mtp, path


def test_baseline_adds_a_frozen_mtp_exactly(tmp_path):
    """model.baseline: E = network + the MTP export's energies (its edges within its own cutoff),
    forces and virial equal finite differences, the baseline is frozen, and config + state dict rebuild
    it without the file (checkpoints, exports); bad baselines get one line naming the problem."""
    mtp, path = mtp_export(tmp_path, SPECIES, 2.6)
    atoms = random_structure(13, 6, species=SPECIES, cell_scale=4.0)
    plain = small_model(13)
    based = small_model(13, baseline=path)
    sp = plain.species_index(atoms.get_chemical_symbols())
    ei, ev = graph(atoms, 3.0)
    keep = torch.linalg.norm(ev, dim=1) < 2.6
    e_mtp = mtp(sp, ei[:, keep], ev[keep]).detach()
    assert torch.allclose(based(sp, ei, ev) - plain(sp, ei, ev), e_mtp, rtol=0, atol=1e-12)
    assert based.config()["baseline"]["family"] == "mtp" and "baseline" not in plain.config()
    assert not any(p.requires_grad for p in based.baseline.parameters())
    assert {n for n, p in based.named_parameters() if p.requires_grad} == {n for n, _ in plain.named_parameters()}
    e, f, w = model_efv(based, atoms)
    assert rel_err(f, fd_forces(based, atoms)) < 1e-6
    assert rel_err(w, fd_virial(based, atoms)) < 1e-6
    rebuilt = NequIP(SPECIES, **{k: v for k, v in based.config().items() if k != "species"}).double()
    rebuilt.load_state_dict(based.state_dict())
    assert torch.equal(rebuilt(sp, ei, ev), based(sp, ei, ev))
    assert torch.allclose(torch.jit.script(based)(sp, ei, ev), based(sp, ei, ev), rtol=0, atol=1e-12)
    # the layer split's local term carries it (no exchange): layer_pair = pair (off) + baseline
    e_loc, _ = based.layer_pair(sp, ei, ev, len(atoms))
    assert torch.allclose(e_loc, e_mtp, rtol=0, atol=1e-12)
    _, wide = mtp_export(tmp_path / "wide", SPECIES, 3.5)
    _, other = mtp_export(tmp_path / "other", ["O", "H"], 2.6)
    for bad, words in ((wide, "cutoff 3.5"), (other, "species"), (str(tmp_path / "none.pt"), "no such file")):
        with pytest.raises(ValueError, match=f"model.baseline.*{words}"):
            small_model(1, baseline=bad)
    with pytest.raises(ValueError, match="readout_refit"):
        based.linear_design(sp, ei, ev, torch.zeros(len(atoms), dtype=torch.long), 1)


# ------------------------------------------------------------------------------------------------ symmetries
def _rotation(seed):
    from scipy.spatial.transform import Rotation

    return torch.tensor(Rotation.random(random_state=seed).as_matrix())


def wigner_D(irreps, R):
    """e3nn's D(R) in full float64 precision (its angle conversion follows the default dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return irreps.D_from_matrix(R)
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("l_max,parity", [(1, True), (2, True), (3, True), (2, False), (0, True)])
def test_equivariance_of_features_and_invariance_of_energy(l_max, parity):
    from e3nn import o3

    atoms = random_structure(4, 6, species=SPECIES, cell_scale=4.5)
    model = small_model(4, l_max=l_max, parity=parity, num_layers=3)
    sp = model.species_index(atoms.get_chemical_symbols())
    ei, ev = graph(atoms, model.cutoff)
    feats = model.node_features(sp, ei, ev)
    e0 = model(sp, ei, ev)
    rots = [_rotation(7)]
    if parity:
        rots.append(-_rotation(8))  # improper: rotation × inversion
    checked_vectors = False
    for R in rots:
        feats_r = model.node_features(sp, ei, ev @ R.T)
        for irreps_str, f, fr in zip(model.irreps_layers, feats, feats_r):
            irreps = o3.Irreps(irreps_str)
            D = wigner_D(irreps, R)
            assert torch.allclose(fr, f @ D.T, atol=1e-12 * max(1.0, float(f.detach().abs().max())))
            if any(ir.l == 1 for _, ir in irreps):
                checked_vectors = True
                # the l=1 blocks rotate like (pseudo)vectors: e3nn 0.6 orders l=1 components x, y, z
                start = 0
                for mul, ir in irreps:
                    if ir.l == 1:
                        v = f[:, start : start + mul * 3].reshape(-1, mul, 3)
                        vr = fr[:, start : start + mul * 3].reshape(-1, mul, 3)
                        Rv = R * (torch.det(R) if ir.p == 1 else 1.0)
                        assert torch.allclose(vr, v @ Rv.T, atol=1e-12 * max(1.0, float(v.detach().abs().max())))
                    start += mul * ir.dim
        assert torch.allclose(model(sp, ei, ev @ R.T), e0, rtol=0, atol=1e-12)
    assert checked_vectors == (l_max >= 1)
    if not parity:  # SO(3) only: a mirror image is a different structure
        assert float((model(sp, ei, -ev) - e0).detach().abs().max()) > 1e-9


def test_permutation_and_translation_invariance():
    atoms = random_structure(5, 8, species=SPECIES, cell_scale=5.0)
    model = small_model(5)
    sp = model.species_index(atoms.get_chemical_symbols())
    ei, ev = graph(atoms, model.cutoff)
    e, f, w, ae = efv(model, sp, ei, ev)
    perm = np.random.default_rng(0).permutation(len(atoms))
    a2 = atoms[perm]
    sp2 = model.species_index(a2.get_chemical_symbols())
    ei2, ev2 = graph(a2, model.cutoff)
    e2, f2, w2, ae2 = efv(model, sp2, ei2, ev2)
    assert torch.allclose(ae2, ae[perm], atol=1e-12)
    assert torch.allclose(f2, f[perm], atol=1e-12)
    assert torch.allclose(w2, w, atol=1e-12)
    shuffle = torch.from_numpy(np.random.default_rng(1).permutation(ei.shape[1]))  # edges in any order
    e4, f4, w4, ae4 = efv(model, sp, ei[:, shuffle], ev[shuffle])
    assert torch.allclose(ae4, ae, atol=1e-12) and torch.allclose(f4, f, atol=1e-12) and torch.allclose(w4, w, atol=1e-12)
    a3 = atoms.copy()
    a3.translate([0.37, -1.21, 2.9])  # positions leave the cell: the neighbour list wraps them
    ei3, ev3 = graph(a3, model.cutoff)
    e3, f3, w3, _ = efv(model, sp, ei3, ev3)
    assert abs(float(e3 - e)) < 1e-11 and torch.allclose(f3, f, atol=1e-11) and torch.allclose(w3, w, atol=1e-11)


# ------------------------------------------------------------------------------------------------ ghosts
def test_ghost_atoms_replicated_supercell_equals_periodic():
    """What LAMMPS (several ranks) relies on: local atoms + every ghost within interaction_range,
    summed energies of the locals, ghost forces folded back = the periodic result."""
    from ase.neighborlist import primitive_neighbor_list

    model = small_model(6, cutoff=2.2, num_layers=2, avg_num_neighbors=3.0)
    rng_ = model.interaction_range
    atoms = random_structure(6, 7, species=SPECIES, cell_scale=5.2)
    cell = atoms.cell[:]
    widths = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    assert widths.min() > rng_  # 3x3x3 holds every atom within interaction_range of the centre
    n = len(atoms)
    sp = model.species_index(atoms.get_chemical_symbols())
    ei, ev = graph(atoms, model.cutoff)
    e_p, f_p, w_p, _ = efv(model, sp, ei, ev)

    pos = atoms.get_positions()
    shifts = [(0, 0, 0)] + [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)]
    all_pos, orig = [], []
    for s in shifts:
        p = pos + np.array(s) @ cell
        if s != (0, 0, 0):  # ghosts: within interaction_range (+ a margin, like a LAMMPS ghost cutoff)
            d = np.linalg.norm(p[:, None, :] - pos[None, :, :], axis=-1).min(1)
            keep = d < rng_ + 0.5
            p = p[keep]
            idx = np.arange(n)[keep]
        else:
            idx = np.arange(n)
        all_pos.append(p)
        orig.append(idx)
    all_pos = np.concatenate(all_pos)
    orig = np.concatenate(orig)
    assert len(all_pos) > 3 * n
    i, j, d = primitive_neighbor_list("ijD", [False] * 3, np.eye(3) * 100, all_pos, model.cutoff, self_interaction=False)
    g_ei = torch.from_numpy(np.stack([i, j]).astype(np.int64))
    g_ev = torch.from_numpy(d)
    g_sp = sp[torch.from_numpy(orig)]
    e_g, f_g, w_g, _ = efv(model, g_sp, g_ei, g_ev, n_local=n)
    f_fold = torch.zeros((n, 3), dtype=torch.float64).index_add_(0, torch.from_numpy(orig), f_g)
    assert abs(float(e_g - e_p)) < 1e-10 * max(1.0, abs(float(e_p)))
    assert rel_err(f_fold.numpy(), f_p.numpy()) < 1e-10
    assert rel_err(w_g.numpy(), w_p.numpy()) < 1e-10
    # the pruned evaluation (only atoms within num_layers - 1 - k hops updated by block k)
    shuffled = np.concatenate([np.arange(n), n + np.random.default_rng(1).permutation(len(orig) - n)])
    perm = torch.from_numpy(shuffled)  # ghosts in any order, edges not sorted by centre
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm))
    e_q, f_q, w_q, ae_q = efv(model, g_sp[perm], inv[g_ei].flip(1), g_ev.flip(0), n_local=n, prune=True)
    assert abs(float(e_q - e_p)) < 1e-10 * max(1.0, abs(float(e_p)))
    f_fold = torch.zeros((n, 3), dtype=torch.float64).index_add_(0, torch.from_numpy(orig)[perm], f_q)
    assert rel_err(f_fold.numpy(), f_p.numpy()) < 1e-10
    assert rel_err(w_q.numpy(), w_p.numpy()) < 1e-10
    assert float(ae_q[n:].abs().max()) == 0.0


# ------------------------------------------------------------------------------------------------ export
def test_export_fresh_process_float64_and_float32(tmp_path):
    """Both exports loaded in a fresh interpreter that imports neither mlip nor e3nn."""
    model = small_model(9, l_max=2, num_layers=3)
    atoms = random_structure(9, 9, species=SPECIES, cell_scale=5.0)
    sp = model.species_index(atoms.get_chemical_symbols())
    ei, ev = graph(atoms, model.cutoff)
    e, f, w, ae = efv(model, sp, ei, ev)
    n_local = len(atoms) - 2  # the last two atoms act as ghosts: their energies are not summed
    e_l, f_l, w_l, _ = efv(model, sp, ei, ev, n_local=n_local)
    phi = model.invariant_features(sp, ei, ev).detach()
    np.savez(tmp_path / "in.npz", sp=sp.numpy(), ei=ei.numpy(), ev=ev.numpy())
    tols = {"float64": 1e-10, "float32": 2e-4}
    for dtype in tols:
        meta = export_model(model, str(tmp_path / f"m_{dtype}.pt"), dtype)
        assert meta["family"] == "nequip" and meta["interaction_range"] == 3 * model.cutoff
    code = f"""
import json, sys, numpy as np, torch
d = np.load({str(tmp_path / 'in.npz')!r})
info = {{}}
for dtype in ("float64", "float32"):
    files = {{"mlip_metadata.json": ""}}
    m = torch.jit.load({str(tmp_path)!r} + f"/m_{{dtype}}.pt", _extra_files=files)
    ev = torch.from_numpy(d["ev"]).to(getattr(torch, dtype))
    sp, ei = torch.from_numpy(d["sp"]), torch.from_numpy(d["ei"])
    ae, f, w, av = m(sp, ei, ev, len(d["sp"]), True)
    ae2, f2, w2, av2 = m(sp, ei, ev, {n_local}, False)
    ae3 = m.model(sp, ei, ev, {n_local})  # pruned evaluation of the local energies
    phi = m.model.invariant_features(sp, ei, ev)  # per-atom invariant features (MaxVol grades)
    np.savez({str(tmp_path)!r} + f"/out_{{dtype}}.npz", ae=ae.double().numpy(), f=f.double().numpy(),
             w=w.double().numpy(), av=av.double().numpy(), f2=f2.double().numpy(), w2=w2.double().numpy(),
             ae3=ae3.double().numpy(), phi=phi.double().numpy(),
             av2_shape=np.array(av2.shape))
    info[dtype] = dict(family=m.family, dtype=m.dtype, cutoff=m.cutoff, rng=m.interaction_range,
                       species=list(m.species), config=json.loads(files["mlip_metadata.json"])["config"])
assert "mlip" not in sys.modules and "e3nn" not in sys.modules
print(json.dumps(info))
"""
    info = json.loads(run_python(code).strip().splitlines()[-1])
    for dtype, tol in tols.items():
        i = info[dtype]
        assert i["family"] == "nequip" and i["dtype"] == dtype and i["species"] == SPECIES
        assert i["rng"] == pytest.approx(3 * model.cutoff) and i["config"] == model.config()
        out = np.load(tmp_path / f"out_{dtype}.npz")
        assert rel_err(out["ae"], ae.numpy()) < tol
        assert abs(out["ae"].sum() - float(e)) < tol * abs(float(e))
        assert rel_err(out["f"], f.numpy()) < tol
        assert rel_err(out["w"], w.numpy()) < tol
        assert rel_err(out["av"].sum(0).reshape(3, 3), w.numpy()) < tol
        assert rel_err(out["f2"], f_l.numpy()) < tol and rel_err(out["w2"], w_l.numpy()) < tol
        assert list(out["av2_shape"]) == [0, 9]
        assert rel_err(out["ae3"][:n_local], ae.numpy()[:n_local]) < tol and not out["ae3"][n_local:].any()
        assert rel_err(out["phi"], phi.numpy()) < tol


# ------------------------------------------------------------------------------------------------ API
def test_config_roundtrip_statistics_and_invariant_features():
    model = small_model(10, cutoff=3.0)
    atoms = random_structure(10, 8, species=SPECIES, cell_scale=5.0)
    sp = model.species_index(atoms.get_chemical_symbols())
    ei, ev = graph(atoms, model.cutoff)
    # the trainer's call: a batch of graphs (edges a little beyond the cutoff are not counted)
    far = torch.tensor([[0], [1]]), torch.tensor([[0.0, 0.0, 3.2]], dtype=torch.float64)
    stats = model.fit_statistics(sp, torch.cat([ei, far[0]], 1), torch.cat([ev, far[1]]))
    assert stats["avg_num_neighbors"] == pytest.approx(ei.shape[1] / len(atoms))
    model.set_energy_bias(torch.tensor([0.25, -3.0]))
    clone = build_model("nequip", json.loads(json.dumps(model.config()))).to(torch.float64)
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone(sp, ei, ev), model(sp, ei, ev))
    # E_i = scale_s (φ_i · w) + shift_s: linear in the invariant features
    phi = model.invariant_features(sp, ei, ev)
    assert phi.shape == (len(atoms), model.config()["head_hidden"])
    eps = phi @ (model.head_w2 * model.head_s2).squeeze(-1)
    assert torch.allclose(eps * model.energy_scale[sp] + model.energy_shift[sp], model(sp, ei, ev), atol=1e-12)
    assert model.scalar_features(sp, ei, ev).shape == (len(atoms), 8)
    # isolated atoms and a species that is absent: just the per-species terms of the embedding
    e_iso = model(torch.tensor([1, 1]), torch.zeros((2, 0), dtype=torch.long), torch.zeros((0, 3), dtype=torch.float64))
    assert torch.isfinite(e_iso).all() and torch.allclose(e_iso[0], e_iso[1])
    with pytest.raises(ValueError):
        NequIP(SPECIES, l_max=4)
    with pytest.raises(ValueError):
        model.set_energy_bias(torch.zeros(3))


def test_pruned_evaluation_edge_cases():
    """n_local = 0, graphs without edges, and a 1-hop shell that is also the 2-hop shell."""
    model = small_model(11, num_layers=3)
    sp = torch.tensor([0, 1, 0, 1])
    # atom 0 (local) - atom 1 bonded; atoms 2, 3 bonded to each other, far from 0 and 1
    ei = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]])
    ev = torch.tensor([[1.1, 0.2, 0.0], [-1.1, -0.2, 0.0], [0.0, 1.3, 0.1], [0.0, -1.3, -0.1]], dtype=torch.float64)
    e_full, f_full, w_full, ae_full = efv(model, sp, ei, ev, n_local=1)
    e_p, f_p, w_p, ae_p = efv(model, sp, ei, ev, n_local=1, prune=True)
    assert abs(float(e_p - e_full)) < 1e-12 and torch.allclose(f_p, f_full, atol=1e-12)
    assert torch.allclose(w_p, w_full, atol=1e-12) and float(ae_p[1:].abs().max()) == 0.0
    assert torch.equal(model(sp, ei, ev, 0), torch.zeros(4, dtype=torch.float64))
    no_edges = model(sp, ei[:, :0], ev[:0], 2)
    assert torch.allclose(no_edges[:2], model(sp, ei[:, :0], ev[:0])[:2], atol=1e-14) and not no_edges[2:].any()


# ------------------------------------------------------------------------------------------------ layout
def test_state_dict_keys_are_stable():
    """Checkpoints are state_dicts: these names (the module hierarchy of the model) must not change,
    or every saved NequIP run stops loading."""
    model = small_model(12, l_max=1, num_features=4, num_layers=2, num_basis=4, radial_hidden=8, head_hidden=4)
    block = ["linear_1.weight", "linear_1.bias", "linear_1.output_mask", "radial.weights.0", "radial.weights.1",
             "radial.weights.2", "linear_2.weight", "linear_2.bias", "linear_2.output_mask",
             "self_connection.weight", "self_connection.output_mask"]
    expected = ["head_w1", "head_b1", "head_w2", "energy_scale", "energy_shift", "basis.freqs", "embedding.weight"]
    expected += [f"blocks.{k}.{name}" for k in range(2) for name in block]
    assert list(model.state_dict().keys()) == expected


@pytest.mark.parametrize("kw", [dict(num_layers=1), dict(l_max=0, num_layers=2)])
def test_export_without_coupling_tensors(tmp_path, kw):
    """One layer, or l_max = 0: no path couples l1 > 0 with l2 > 0, so the CG bank is empty; the
    model still scripts and the export gives the eager energies and forces."""
    model = small_model(13, **kw)
    assert model.cg_meta == []
    atoms = random_structure(13, 6, species=SPECIES, cell_scale=4.5)
    sp = model.species_index(atoms.get_chemical_symbols())
    ei, ev = graph(atoms, model.cutoff)
    e, f, w, ae = efv(model, sp, ei, ev)
    export_model(model, str(tmp_path / "m.pt"), "float64")
    m = torch.jit.load(str(tmp_path / "m.pt"))
    ae_x, f_x, w_x, _ = m(sp, ei, ev, len(atoms), False)
    assert rel_err(ae_x.numpy(), ae.numpy()) < 1e-12 and rel_err(f_x.numpy(), f.numpy()) < 1e-12
    assert rel_err(w_x.numpy(), w.numpy()) < 1e-12


def test_training_with_a_baseline_subtracts_it_once_and_exports_the_sum(tmp_path):
    """With model.baseline the trainer takes the MTP's energies, forces and virials out of the labels
    once and leaves it out of forward: the training loss equals the loss of the whole model on the
    labels as read (1e-10, float64). The summary scores the export (network + MTP) on the labels as
    read, and the export's energies are the sum."""
    from mlip.graph import collate
    from mlip.models.base import predict
    from mlip.train.config import load_config
    from mlip.train.loss import loss_terms
    from mlip.train.trainer import Trainer, load_checkpoint_model

    mtp, path = mtp_export(tmp_path / "mtp", ["Cu"], 3.2)
    cfg = load_config(None, {
        "seed": 5, "output": str(tmp_path / "run"), "dtype": "float64",
        "data": {"generate": {"n_frames": 8, "size": 2, "md_steps": 5}, "val_fraction": 0.25},
        "model": {"family": "nequip", "species": ["Cu"], "cutoff": 3.5, "l_max": 1, "num_features": 4,
                  "num_layers": 2, "num_basis": 4, "radial_hidden": 8, "head_hidden": 4, "baseline": path},
        "loss": {"energy": 1.0, "forces": 1.0, "virial": 0.1},
        "optimizer": {"lr": {"start": 0.003, "stop": 1e-3, "decay_steps": 10}},
        "training": {"steps": 6, "batch_size": 2, "val_every": 3, "checkpoint_every": 3, "progress": False},
    })
    tr = Trainer(cfg)
    assert tr.model.baseline_in_labels
    raw, res = collate(tr.raw_train_graphs[:3]), collate(tr.train_graphs[:3])
    assert not torch.allclose(raw.forces, res.forces)
    during = loss_terms(predict(tr.model, res), res, True)
    tr.model.baseline_in_labels = False
    whole = loss_terms(predict(tr.model, raw), raw, True)
    tr.model.baseline_in_labels = True
    for k in ("energy", "forces", "virial"):
        assert torch.allclose(during[k], whole[k], rtol=1e-10, atol=1e-14), k
    summary = tr.run()
    best = load_checkpoint_model(str(tmp_path / "run" / "checkpoints" / "best.pt"))
    assert not best.baseline_in_labels
    val = collate(tr.raw_val_graphs)
    pred = predict(best, val)
    rmse = float((pred["forces"] - val.forces).pow(2).mean().sqrt())
    assert summary["validation"]["force_rmse"] == pytest.approx(rmse, rel=1e-6)
    best.baseline_in_labels = True
    net = predict(best, val)["energy"]
    best.baseline_in_labels = False
    base = predict(best.baseline, val)["energy"]
    assert torch.allclose(pred["energy"], net + base, rtol=1e-12)

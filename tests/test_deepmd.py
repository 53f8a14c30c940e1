"""Deep Potential se_e2_a: derivatives against finite differences, invariances, smooth cutoff, export."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import fd_forces, fd_virial, model_efv, random_structure, rel_err, run_python
from mlip.models.deepmd import DeepPotSeA


def small_dp(species=("H", "O"), rcut=3.5, seed=0, type_one_side=False, dtype=torch.float64, env_shift=False,
             fused=True):
    m = DeepPotSeA(list(species), rcut=rcut, rcut_smth=1.0, sel=[20] * len(species), neuron=[6, 12],
                   axis_neuron=4, fitting_neuron=[16, 16], type_one_side=type_one_side, seed=seed,
                   env_shift=env_shift, fused=fused).to(dtype)
    # non-trivial statistics so that the normalisation code is exercised
    m.s_avg.fill_(0.3)
    m.s_std.fill_(0.2)
    m.r_std.fill_(0.4)
    m.set_energy_bias(torch.tensor([-1.5, -3.0][: len(species)], dtype=dtype))
    return m


@pytest.mark.parametrize("case", ["two_species", "small_cell", "type_one_side", "slab"])
def test_forces_and_virial_match_finite_differences(case):
    if case == "small_cell":  # cell shorter than the cutoff: many images of each atom
        atoms = random_structure(1, 3, cell_scale=2.2, min_dist=0.8)
    elif case == "slab":
        atoms = random_structure(2, 8, pbc=(True, True, False))
    else:
        atoms = random_structure(3, 10)
    model = small_dp(type_one_side=(case == "type_one_side"))
    e, f, w = model_efv(model, atoms)
    assert np.isfinite(e)
    err_f = rel_err(f, fd_forces(model, atoms))
    print(f"\nDP {case}: FD force max rel error {err_f:.2e}")
    assert err_f < 1e-6
    if atoms.pbc.all():
        err_w = rel_err(w, fd_virial(model, atoms))
        print(f"DP {case}: FD virial max rel error {err_w:.2e}")
        assert err_w < 1e-6
        assert np.allclose(w, w.T, atol=1e-10)


def test_invariances():
    atoms = random_structure(4, 10)
    model = small_dp()
    e0, f0, w0 = model_efv(model, atoms)
    # translation (and wrapping: choice of periodic image)
    t = atoms.copy()
    t.translate([0.37, -1.2, 2.9])
    e, f, _ = model_efv(model, t)
    assert abs(e - e0) < 1e-10 * abs(e0) and rel_err(f, f0) < 1e-10
    t.wrap()
    e, f, _ = model_efv(model, t)
    assert abs(e - e0) < 1e-10 * abs(e0) and rel_err(f, f0) < 1e-10
    img = atoms.copy()
    img.positions[3] += img.cell[0] - 2 * img.cell[2]
    e, f, _ = model_efv(model, img)
    assert abs(e - e0) < 1e-10 * abs(e0) and rel_err(f, f0) < 1e-10
    # rotation of positions and cell together
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    r = atoms.copy()
    r.set_cell(atoms.cell[:] @ q.T, scale_atoms=False)
    r.set_positions(atoms.get_positions() @ q.T)
    e, f, w = model_efv(model, r)
    assert abs(e - e0) < 1e-10 * abs(e0)
    assert rel_err(f, f0 @ q.T) < 1e-9
    assert rel_err(w, q @ w0 @ q.T) < 1e-9
    # permutation
    perm = rng.permutation(len(atoms))
    p = atoms[perm]
    e, f, _ = model_efv(model, p)
    assert abs(e - e0) < 1e-10 * abs(e0) and rel_err(f, f0[perm]) < 1e-10


def test_energy_and_force_vanish_smoothly_at_cutoff():
    from ase import Atoms

    model = small_dp(rcut=3.5)
    iso = model_efv(model, Atoms("HO", positions=[[0, 0, 0], [10, 0, 0]]))[0]
    rs = np.linspace(3.3, 3.5 + 1e-9, 41)
    de, fr = [], []
    for r in rs:
        e, f, _ = model_efv(model, Atoms("HO", positions=[[0, 0, 0], [r, 0, 0]]))
        de.append(e - iso)
        fr.append(f[1, 0])
    de, fr = np.abs(de), np.abs(fr)
    assert de[-1] < 1e-12 and fr[-1] < 1e-12
    assert de[-2] < 1e-7 and fr[-2] < 1e-5  # 5 mÅ inside: (Δr)^3-small, no step
    assert np.all(np.diff(de[-10:]) <= 1e-12)  # monotone approach, no wiggle


def test_isolated_atom_energy_is_species_bias():
    from ase import Atoms

    model = small_dp()
    e, f, w = model_efv(model, Atoms("O", positions=[[0, 0, 0]], cell=[8, 8, 8], pbc=True))
    assert e == pytest.approx(-3.0, abs=1e-12) and np.all(f == 0)


def test_export_in_fresh_process_equals_eager(tmp_path):
    from mlip.export import export_model, read_metadata
    from mlip.neighbors import neighbor_list

    atoms = random_structure(5, 12)
    model = small_dp()
    e, f, w = model_efv(model, atoms)
    path = tmp_path / "dp.pt"
    export_model(model, str(path), dtype="float64")
    meta = read_metadata(str(path))
    assert meta["family"] == "deepmd" and meta["species"] == ["H", "O"] and meta["cutoff"] == 3.5
    ei, _, ev = neighbor_list(atoms.get_positions(), atoms.cell[:], atoms.pbc, 3.5)
    np.savez(tmp_path / "g.npz", sp=model.species_index(atoms.get_chemical_symbols()).numpy(), ei=ei, ev=ev)
    out = run_python(f"""
import numpy as np, torch
d = np.load(r'{tmp_path / "g.npz"}')
m = torch.jit.load(r'{path}')
ae, f, w, av = m(torch.from_numpy(d['sp']), torch.from_numpy(d['ei']), torch.from_numpy(d['ev']), {len(atoms)}, True)
np.savez(r'{tmp_path / "o.npz"}', e=ae.sum().item(), f=f.numpy(), w=w.numpy(), av=av.numpy())
print(m.family, m.cutoff, list(m.species))
""")
    assert "deepmd 3.5 ['H', 'O']" in out
    o = np.load(tmp_path / "o.npz")
    print(f"\nexport vs eager: energy rel {abs(float(o['e']) - e) / abs(e):.1e}, forces rel {rel_err(o['f'], f):.1e}, "
          f"virial rel {rel_err(o['w'], w):.1e}")
    assert abs(float(o["e"]) - e) <= 1e-10 * abs(e)
    assert rel_err(o["f"], f) <= 1e-10
    assert rel_err(o["w"], w) <= 1e-10
    assert rel_err(o["av"].sum(0).reshape(3, 3), w) <= 1e-10


def test_float32_export_close_to_float64(tmp_path):
    from mlip.calculator import MLIPCalculator
    from mlip.export import export_model

    atoms = random_structure(6, 10)
    model = small_dp()
    e, f, _ = model_efv(model, atoms)
    export_model(model, str(tmp_path / "f32.pt"), dtype="float32")
    atoms.calc = MLIPCalculator(str(tmp_path / "f32.pt"))
    assert abs(atoms.get_potential_energy() - e) < 1e-4 * abs(e)
    assert rel_err(atoms.get_forces(), f) < 1e-3


@pytest.mark.parametrize("type_one_side", [False, True])
def test_env_shift_centred_s_row(type_one_side):
    """model.env_shift (DeePMD-kit's centred s-row, `sel` padding slots included): derivatives, smooth
    cutoff, isolated atom = bias, no dependence on the other frames of a batch (block widths), and the
    scripted, fused and reference paths agree."""
    from ase import Atoms

    from mlip.graph import collate
    from mlip.models.base import predict

    model = small_dp(type_one_side=type_one_side, env_shift=True)
    atoms = random_structure(3, 10)
    e, f, w = model_efv(model, atoms)
    assert rel_err(f, fd_forces(model, atoms)) < 1e-6 and rel_err(w, fd_virial(model, atoms)) < 1e-6
    assert model_efv(model, Atoms("O", positions=[[0, 0, 0]], cell=[8, 8, 8], pbc=True))[0] == pytest.approx(-3.0, abs=1e-12)
    iso = model_efv(model, Atoms("HO", positions=[[0, 0, 0], [10, 0, 0]]))[0]
    near = [abs(model_efv(model, Atoms("HO", positions=[[0, 0, 0], [r, 0, 0]]))[0] - iso) for r in (3.4999, 3.5 + 1e-9)]
    assert near[0] < 1e-12 and near[1] == 0.0
    base = model_efv(small_dp(type_one_side=type_one_side), atoms)[0]
    assert abs(e - base) > 1e-6  # the option changes the function
    dense = random_structure(5, 16, cell_scale=3.0, min_dist=0.8)
    g1 = frame_to_graph_for(atoms, model)
    alone = predict(model, collate([g1]))["energy"][0]
    together = predict(model, collate([g1, frame_to_graph_for(dense, model)]))["energy"][0]
    assert abs(float(alone - together)) < 1e-10 * abs(float(alone))
    scripted = torch.jit.script(model)
    b = collate([g1])
    assert float(scripted(b.species, b.edge_index, b.edge_vec).sum()) == pytest.approx(float(alone), rel=1e-12)
    ref = small_dp(type_one_side=type_one_side, env_shift=True, fused=False)
    ref.load_state_dict(model.state_dict())
    assert float(predict(ref, b)["energy"][0]) == pytest.approx(float(alone), rel=1e-12)


def frame_to_graph_for(atoms, model):
    """An unlabelled frame's graph for `model` (labels are not needed to predict)."""
    from mlip.graph import Graph, frame_edges

    sp, ei, vec = frame_edges(atoms, model.species, model.rcut, torch.float64)
    return Graph(sp, ei, vec, energy=None, forces=None, virial=None, weight=1.0, source="test")


def test_env_stats_slots_are_deepmd_kits_padded_statistics():
    """model.env_stats = "slots": the statistics of DeePMD-kit (every centre's Σsel slots, the empty ones
    as zeros), computed here from an explicitly padded environment matrix; "edges" (default) uses the
    edges only, and only a non-default value appears in the config."""
    from mlip.models.deepmd import smooth_inverse

    atoms = random_structure(3, 10)
    model = DeepPotSeA(["H", "O"], rcut=3.5, rcut_smth=1.0, sel=[20, 20], neuron=[6, 12], axis_neuron=4,
                       fitting_neuron=[16, 16], env_stats="slots").double()
    g = frame_to_graph_for(atoms, model)
    model.fit_statistics(g.species, g.edge_index, g.edge_vec)
    r = g.edge_vec.norm(dim=1)
    s = smooth_inverse(r, 1.0, 3.5)
    rows = torch.cat([s[:, None], s[:, None] * g.edge_vec / r[:, None]], 1).numpy()
    for t in range(2):
        centres = np.flatnonzero(g.species.numpy() == t)
        padded = np.zeros((len(centres), 40, 4))
        for k, c in enumerate(centres):
            mine = rows[g.edge_index[0].numpy() == c]
            padded[k, : len(mine)] = mine
        sr, xyz = padded[..., 0].ravel(), padded[..., 1:].ravel()
        assert float(model.s_avg[t]) == pytest.approx(sr.mean(), rel=1e-10)
        assert float(model.s_std[t]) == pytest.approx(sr.std(), rel=1e-10)
        assert float(model.r_std[t, 1]) == pytest.approx(xyz.std(), rel=1e-10)
    assert model.config()["env_stats"] == "slots" and "env_stats" not in small_dp().config()
    with pytest.raises(ValueError, match="env_stats"):
        DeepPotSeA(["H"], env_stats="padded")

"""MaxVol machinery (plain matrices), the MTP extrapolation grade in both modes (nbh, cfg), and
`mlip select` / `mlip convert` with MLIP-2 `.mtp` files (every family: tests/test_active_grade.py)."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from mlip.active.maxvol import ActiveSet, maxvol, row_space


def test_maxvol_dominance_and_volume():
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(300, 6))
    rows, a_inv = maxvol(Y, tol=1.0 + 1e-12)
    C = Y @ a_inv
    assert np.abs(C).max() <= 1.0 + 1e-9
    assert np.allclose(C[rows], np.eye(6), atol=1e-10)
    vol = abs(np.linalg.det(Y[rows]))
    for _ in range(200):  # no random subset beats a dominant one by much (bound: r^(r/2) in theory)
        sub = rng.choice(300, 6, replace=False)
        assert abs(np.linalg.det(Y[sub])) <= vol * (1 + 1e-9) * 6 ** 3


def test_maxvol_is_exact_on_small_problem():
    rng = np.random.default_rng(1)
    Y = rng.normal(size=(9, 3))
    rows, _ = maxvol(Y)
    best = max(abs(np.linalg.det(Y[list(s)])) for s in itertools.combinations(range(9), 3))
    # a dominant submatrix is within a factor r^(r/2) of the maximum; here usually the maximum itself
    assert abs(np.linalg.det(Y[rows])) >= best / 3 ** 1.5


def test_active_set_rank_deficient_and_invariant():
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(200, 4))
    K = rng.normal(size=(2, 3))
    X = np.hstack([Z, Z[:, :2] @ K])  # rank 4 in 7 columns
    a = ActiveSet.build(X)
    assert a.rank == 4
    assert a.gamma(X).max() <= 1.0 + 1e-8
    # invariant to an invertible change of features
    T = rng.normal(size=(7, 7)) + 3 * np.eye(7)
    b = ActiveSet.build(X @ T)
    new = rng.normal(size=(5, 4))
    newx = np.hstack([new, new[:, :2] @ K])
    assert np.allclose(a.gamma(newx), b.gamma(newx @ T), rtol=1e-6)
    # serialisation
    c = ActiveSet.from_dict(json.loads(json.dumps(a.to_dict())))
    assert np.allclose(c.gamma(X), a.gamma(X))


def test_select_takes_outliers_and_grows_volume():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(100, 5))
    a = ActiveSet.build(X)
    v0 = a.log_volume
    cands = np.vstack([rng.normal(size=(20, 5)) * 0.5, 10 * rng.normal(size=(3, 5))])
    chosen = a.select(cands, threshold=1.0)
    assert set(chosen) >= {20, 21, 22} or len(chosen) >= 3
    assert a.log_volume > v0
    assert a.gamma(cands).max() <= 1.0 + 1e-8  # candidates are all interpolated afterwards
    # limited number of groups
    b = ActiveSet.build(X)
    groups = [k // 2 for k in range(len(cands))]
    chosen = b.select(cands, threshold=1.0, groups=groups, max_groups=1)
    assert len({groups[k] for k in chosen}) == 1


def test_row_space_zero_rows():
    with pytest.raises(ValueError):
        row_space(np.zeros((4, 3)))


# ------------------------------------------------------------------------------------ MTP grade
@pytest.fixture(scope="module")
def mo_setup():
    from ase.build import bulk

    from mlip.data import Frame
    from mlip.models.mtp import MTP

    rng = np.random.default_rng(0)
    frames = []
    for k in range(12):
        a = bulk("Mo", "bcc", a=3.16 * rng.uniform(0.98, 1.02), cubic=True).repeat((2, 2, 2))
        a.rattle(0.08, seed=k)
        frames.append(Frame.from_atoms(a, source=f"train:{k}"))
    m = MTP(["Mo"], level=8, cutoff=4.5, seed=0)
    m.fit_statistics(frames)
    return m, frames


@pytest.mark.parametrize("mode", ["nbh", "cfg"])
def test_grade_training_and_extrapolation(mo_setup, mode):
    from ase.build import bulk

    from mlip.active.grade import build_active_set, grade_frames
    from mlip.data import Frame

    m, frames = mo_setup
    aset = build_active_set(m, frames, mode)
    assert aset.mode == mode
    g = grade_frames(m, frames, aset)
    assert max(x.max() for x in g) <= 1.0 + 1e-6
    assert all(x.shape == ((len(f.symbols),) if mode == "nbh" else (1,)) for x, f in zip(g, frames))
    strained = bulk("Mo", "bcc", a=3.16 * 1.25, cubic=True).repeat((2, 2, 2))
    strained.rattle(0.05, seed=99)
    hot = bulk("Mo", "bcc", a=3.16, cubic=True).repeat((2, 2, 2))
    hot.rattle(0.45, seed=98)
    for atoms in (strained, hot):
        assert grade_frames(m, [Frame.from_atoms(atoms)], aset)[0].max() > 2.0


@pytest.mark.parametrize("mode", ["nbh", "cfg"])
def test_grade_in_export_matches(mo_setup, tmp_path, mode):
    from mlip.active.grade import build_active_set, export_graded, grade_frames, read_active_set
    from mlip.export import read_metadata
    from mlip.graph import frame_edges
    from mlip.models.mtp import MTP

    m, frames = mo_setup
    aset = build_active_set(m, frames, mode)
    p = str(tmp_path / "al.pt")
    export_graded(m, p, aset)
    meta = read_metadata(p)
    assert set(meta["active_set"]) == {mode} and meta["has_grade"]
    ts = torch.jit.load(p)
    assert ts.has_grade and ts.grade_mode == mode
    sp, ei, vec = frame_edges(frames[3], m.species, m.cutoff)
    g_ts = ts.grade(sp, ei, vec, len(sp)).numpy()
    ref = grade_frames(m, [frames[3]], aset)[0]
    np.testing.assert_allclose(g_ts if mode == "nbh" else g_ts[:1], ref, rtol=1e-10)
    if mode == "cfg":
        assert np.all(g_ts == g_ts[0])
    # rebuild the model and its active set from the export
    m2 = MTP.from_export(p)
    np.testing.assert_allclose(grade_frames(m2, [frames[3]], read_active_set(p))[0], ref, rtol=1e-10)
    # float32 export still grades (features in float32, γ in float64)
    p32 = str(tmp_path / "al32.pt")
    export_graded(m, p32, aset, dtype="float32")
    ts32 = torch.jit.load(p32)
    sp, ei, vec = frame_edges(frames[3], m.species, m.cutoff, torch.float32)
    assert ts32.grade(sp, ei, vec, len(sp)).dtype == torch.float64
    np.testing.assert_allclose(grade_frames(p32, [frames[3]])[0], ref, rtol=1e-2)  # G amplifies float32 rounding


def test_no_active_set_raises(mo_setup, tmp_path):
    from mlip.active.grade import grade_frames
    from mlip.export import export_model
    from mlip.models.mtp import MTP

    m = MTP(["Mo"], level=6, cutoff=4.0)
    p = str(tmp_path / "plain.pt")
    export_model(m, p)
    with pytest.raises(ValueError, match="no active set"):
        grade_frames(p, mo_setup[1][:1])


def test_cli_select_mtp_file_and_convert(mo_setup, tmp_path):
    from mlip.active.grade import read_active_set
    from mlip.cli import main
    from mlip.data import write_extxyz
    from mlip.export import export_model
    from mlip.graph import frame_edges

    m, frames = mo_setup
    model = str(tmp_path / "m.pt")
    export_model(m, model)
    train = str(tmp_path / "train.xyz")
    write_extxyz(frames, train)
    # .pt -> .mtp -> .pt keeps energies
    mtp = str(tmp_path / "m.mtp")
    assert main(["convert", model, "-o", mtp]) == 0
    back = str(tmp_path / "back.pt")
    assert main(["convert", mtp, "-o", back]) == 0
    t1, t2 = torch.jit.load(model), torch.jit.load(back)
    sp, ei, vec = frame_edges(frames[0], m.species, m.cutoff)
    assert float(t1(sp, ei, vec, len(sp), False)[0].sum()) == float(t2(sp, ei, vec, len(sp), False)[0].sum())
    assert main(["convert", model, "-o", str(tmp_path / "x.txt")]) == 2
    # an MLIP-2 .mtp straight into `mlip select`: the same active set as from its export
    al_mtp, al_pt = str(tmp_path / "al_mtp.pt"), str(tmp_path / "al_pt.pt")
    assert main(["select", mtp, "--train", train, "-u", al_mtp]) == 0
    assert main(["select", model, "--train", train, "-u", al_pt]) == 0
    a, b = read_active_set(al_mtp), read_active_set(al_pt)
    assert a.rank == b.rank and a.sources == b.sources
    np.testing.assert_allclose(torch.jit.load(al_mtp).grade(sp, ei, vec, len(sp)).numpy(),
                               torch.jit.load(al_pt).grade(sp, ei, vec, len(sp)).numpy(), rtol=1e-9)

"""MaxVol machinery (plain matrices) and the MTP extrapolation grade / selection / CLI."""
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
    build_active_set(m, frames, mode)
    g = grade_frames(m, frames, mode)
    assert max(x.max() for x in g) <= 1.0 + 1e-6
    strained = bulk("Mo", "bcc", a=3.16 * 1.25, cubic=True).repeat((2, 2, 2))
    strained.rattle(0.05, seed=99)
    hot = bulk("Mo", "bcc", a=3.16, cubic=True).repeat((2, 2, 2))
    hot.rattle(0.45, seed=98)
    for atoms in (strained, hot):
        assert grade_frames(m, [Frame.from_atoms(atoms)], mode)[0].max() > 2.0


def test_grade_in_export_matches(mo_setup, tmp_path):
    from mlip.active.graph import frame_graph
    from mlip.active.grade import build_active_set, grade_frames
    from mlip.export import export_model, read_metadata
    from mlip.models.mtp import MTP

    m, frames = mo_setup
    build_active_set(m, frames, "nbh")
    build_active_set(m, frames, "cfg")
    p = str(tmp_path / "al.pt")
    export_model(m, p)
    meta = read_metadata(p)
    assert set(meta["active_set"]) == {"nbh", "cfg"}
    ts = torch.jit.load(p)
    sp, ei, vec = frame_graph(frames[3], m.species, m.cutoff)
    g_ts = ts.model.grade(sp, ei, vec, len(sp)).numpy()
    assert np.allclose(g_ts, grade_frames(m, [frames[3]], "nbh")[0], rtol=1e-10)
    assert ts.model.grade_cfg(sp, ei, vec, len(sp)).shape == (1,)
    assert ts.model.has_active_set("cfg")
    # rebuild from the export
    m2 = MTP.from_export(p)
    assert np.allclose(grade_frames(m2, [frames[3]], "nbh")[0], g_ts, rtol=1e-10)
    # float32 export still grades
    p32 = str(tmp_path / "al32.pt")
    export_model(m, p32, dtype="float32")
    ts32 = torch.jit.load(p32)
    sp, ei, vec = frame_graph(frames[3], m.species, m.cutoff, torch.float32)
    assert ts32.model.grade(sp, ei, vec, len(sp)).dtype == torch.float32


def test_no_active_set_raises(mo_setup):
    from mlip.active.graph import frame_graph
    from mlip.models.mtp import MTP

    m = MTP(["Mo"], level=6, cutoff=4.0)
    sp, ei, vec = frame_graph(mo_setup[1][0], m.species, m.cutoff)
    with pytest.raises(RuntimeError, match="active set"):
        m.grade(sp, ei, vec, len(sp))


def test_cli_select_and_convert(mo_setup, tmp_path):
    from ase.build import bulk

    from mlip.cli import main
    from mlip.data import Frame, read_frames, write_extxyz
    from mlip.export import export_model, read_metadata

    m, frames = mo_setup
    model = str(tmp_path / "m.pt")
    export_model(m, model)
    train = str(tmp_path / "train.xyz")
    write_extxyz(frames, train)
    al = str(tmp_path / "al.pt")
    assert main(["select", model, "--train", train, "--mode", "both", "-u", al]) == 0
    assert set(read_metadata(al)["active_set"]) == {"nbh", "cfg"}
    cands = []
    for k, s in enumerate([1.0, 1.0, 1.2, 0.85]):
        a = bulk("Mo", "bcc", a=3.16 * s, cubic=True).repeat((2, 2, 2))
        a.rattle(0.05, seed=50 + k)
        cands.append(Frame.from_atoms(a))
    cand = str(tmp_path / "cand.xyz")
    write_extxyz(cands, cand)
    out = str(tmp_path / "sel.xyz")
    al2 = str(tmp_path / "al2.pt")
    assert main(["select", al, "--candidates", cand, "--threshold", "2", "--max", "2", "-o", out, "-u", al2]) == 0
    sel = read_frames(out)
    assert 1 <= len(sel) <= 2
    # .pt -> .mtp -> .pt keeps energies
    mtp = str(tmp_path / "m.mtp")
    assert main(["convert", model, "-o", mtp]) == 0
    back = str(tmp_path / "back.pt")
    assert main(["convert", mtp, "-o", back]) == 0
    from mlip.active.graph import frame_graph

    t1, t2 = torch.jit.load(model), torch.jit.load(back)
    sp, ei, vec = frame_graph(frames[0], m.species, m.cutoff)
    assert float(t1(sp, ei, vec, len(sp), False)[0].sum()) == float(t2(sp, ei, vec, len(sp), False)[0].sum())
    assert main(["convert", model, "-o", str(tmp_path / "x.txt")]) == 2

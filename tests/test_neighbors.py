"""C++ neighbour list (mlip._core.neighbor_list / mlip.neighbors) against brute force and ASE."""
from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest

_core = pytest.importorskip("mlip._core", reason="compiled extension mlip._core not built")

from mlip.neighbors import neighbor_list, neighbor_list_atoms  # noqa: E402


# --------------------------------------------------------------------------- reference
def brute_force(positions, cell, pbc, cutoff):
    """O(N^2 * images) reference: loop over an explicit image range."""
    positions = np.asarray(positions, float)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, float)
    pbc = np.broadcast_to(np.asarray(pbc, bool), (3,))
    n = len(positions)
    reps = [0, 0, 0]
    if pbc.any():
        # a basis: periodic rows of the cell completed by orthonormal vectors
        basis = cell.copy()
        per = [d for d in range(3) if pbc[d]]
        non = [d for d in range(3) if not pbc[d]]
        if non:
            q, _ = np.linalg.qr(np.concatenate([cell[per].T, np.eye(3)], axis=1))
            # q[:, len(per):] spans the orthogonal complement of the periodic rows
            for k, d in enumerate(non):
                basis[d] = q[:, len(per) + k]
        inv = np.linalg.inv(basis)
        frac = positions @ inv
        for d in per:
            h = 1.0 / np.linalg.norm(inv[:, d])
            span = frac[:, d].max() - frac[:, d].min() if n else 0.0
            reps[d] = int(math.ceil(cutoff / h + span)) + 1
    ii, jj, ss, vv = [], [], [], []
    ranges = [range(-r, r + 1) for r in reps]
    shifts = np.array(list(itertools.product(*ranges)), dtype=np.int64)
    offsets = shifts @ cell  # [S, 3]
    for i in range(n):
        d = positions[None, :, :] - positions[i][None, None, :] + offsets[:, None, :]  # [S, N, 3]
        r = np.linalg.norm(d, axis=-1)
        s_idx, j_idx = np.nonzero((r < cutoff) & (r > 0))
        for s, j in zip(s_idx, j_idx):
            ii.append(i)
            jj.append(j)
            ss.append(shifts[s])
            vv.append(d[s, j])
    ii = np.array(ii, dtype=np.int64)
    jj = np.array(jj, dtype=np.int64)
    ss = np.array(ss, dtype=np.int64).reshape(-1, 3)
    vv = np.array(vv, dtype=float).reshape(-1, 3)
    order = np.lexsort((ss[:, 2], ss[:, 1], ss[:, 0], jj, ii))
    return np.stack([ii[order], jj[order]]), ss[order], vv[order]


def check_against_reference(positions, cell, pbc, cutoff):
    ei, s, v = neighbor_list(positions, cell, pbc, cutoff)
    rei, rs, rv = brute_force(positions, cell, pbc, cutoff)
    assert ei.dtype == np.int64 and s.dtype == np.int64 and v.dtype == np.float64
    assert ei.shape == (2, len(s)) and s.shape == (len(s), 3) and v.shape == (len(s), 3)
    assert ei.shape == rei.shape, f"{ei.shape[1]} edges, reference {rei.shape[1]}"
    np.testing.assert_array_equal(ei, rei)
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_allclose(v, rv, rtol=0, atol=1e-10)
    # contract: edge_vec = x[j] - x[i] + shifts @ cell
    c = np.zeros((3, 3)) if cell is None else np.asarray(cell, float)
    pos = np.asarray(positions, float)
    np.testing.assert_allclose(v, pos[ei[1]] - pos[ei[0]] + s @ c, atol=1e-10)
    check_invariants(ei, s, v, cutoff)
    return ei, s, v


def check_invariants(ei, s, v, cutoff):
    r = np.linalg.norm(v, axis=1)
    assert np.all(r < cutoff) and np.all(r > 0)
    # sorted by i, then j, then shift
    keys = np.lexsort((s[:, 2], s[:, 1], s[:, 0], ei[1], ei[0]))
    np.testing.assert_array_equal(keys, np.arange(len(keys)))
    # full list: (i, j, S) <-> (j, i, -S)
    fwd = {(a, b, *t) for a, b, t in zip(ei[0], ei[1], map(tuple, s))}
    bwd = {(b, a, *(-np.array(t))) for a, b, t in zip(ei[0], ei[1], map(tuple, s))}
    assert fwd == bwd
    assert len(fwd) == len(s), "duplicate edges"


def random_cell(rng, scale, skew=0.4):
    cell = np.diag(rng.uniform(0.7, 1.3, 3) * scale)
    cell += rng.uniform(-skew, skew, (3, 3)) * scale * np.triu(np.ones((3, 3)), 1).T
    cell += rng.uniform(-skew, skew, (3, 3)) * scale * np.triu(np.ones((3, 3)), 1)
    return cell


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("seed", range(6))
def test_random_triclinic(seed):
    rng = np.random.default_rng(seed)
    cell = random_cell(rng, 7.0)
    n = 25
    pos = rng.uniform(0, 1, (n, 3)) @ cell
    cutoff = rng.uniform(2.5, 6.0)
    check_against_reference(pos, cell, True, cutoff)


@pytest.mark.parametrize("seed", range(4))
def test_tiny_cells_many_images(seed):
    rng = np.random.default_rng(100 + seed)
    cell = random_cell(rng, 1.6, skew=0.3)  # heights well below the cutoff
    pos = rng.uniform(0, 1, (3, 3)) @ cell
    ei, s, v = check_against_reference(pos, cell, True, 4.5)
    assert np.abs(s).max() >= 3


@pytest.mark.parametrize("pbc", [True, (True, False, True)])
def test_strongly_sheared_cell(pbc):
    """Perpendicular heights much smaller than the cell vector lengths."""
    cell = np.array([[2.0, 0.0, 0.0], [7.3, 1.7, 0.0], [-4.1, 5.9, 1.9]])
    rng = np.random.default_rng(5)
    pos = rng.uniform(0, 1, (4, 3)) @ cell
    check_against_reference(pos, cell, pbc, 3.3)


def test_single_atom_own_images():
    cell = np.eye(3) * 2.0
    ei, s, v = check_against_reference([[0.3, 0.1, 0.2]], cell, True, 2.5)
    # images at distance 2 (6 of them): |r| = 2 < 2.5, |r| = 2*sqrt(2) > 2.5
    assert ei.shape[1] == 6
    assert np.all(ei == 0)
    # no periodicity: nothing
    ei, s, v = neighbor_list([[0.0, 0.0, 0.0]], None, False, 5.0)
    assert ei.shape == (2, 0) and s.shape == (0, 3) and v.shape == (0, 3)


def test_empty_system():
    ei, s, v = neighbor_list(np.zeros((0, 3)), np.eye(3) * 3, True, 2.0)
    assert ei.shape == (2, 0) and s.shape == (0, 3) and v.shape == (0, 3)


@pytest.mark.parametrize("seed", range(3))
def test_slab_one_open_direction(seed):
    rng = np.random.default_rng(200 + seed)
    cell = random_cell(rng, 6.0)
    cell[2] = 0.0  # degenerate along the open direction
    pos = rng.uniform(0, 1, (20, 3)) @ np.array([cell[0], cell[1], [0, 0, 1]])
    pos[:, 2] = rng.uniform(-4, 12, 20)
    check_against_reference(pos, cell, [True, True, False], 4.0)


def test_mixed_pbc_one_periodic_direction():
    rng = np.random.default_rng(7)
    cell = np.array([[0.0, 0.0, 0.0], [1.0, 2.5, 0.3], [0.0, 0.0, 0.0]])  # wire along b
    pos = rng.uniform(-3, 3, (15, 3))
    check_against_reference(pos, cell, [False, True, False], 3.5)
    check_against_reference(pos, random_cell(rng, 4.0), [True, False, True], 3.5)


@pytest.mark.parametrize("cell", [None, np.zeros((3, 3)), np.eye(3) * 5.0])
def test_cluster_no_pbc(cell):
    rng = np.random.default_rng(3)
    pos = rng.normal(size=(40, 3)) * 3.0
    check_against_reference(pos, cell, False, 3.0)


def test_sparse_cluster_far_apart():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(10, 3))
    b = rng.normal(size=(10, 3)) + 1e5
    check_against_reference(np.concatenate([a, b]), None, False, 2.0)


@pytest.mark.parametrize("seed", range(3))
def test_unwrapped_positions(seed):
    rng = np.random.default_rng(300 + seed)
    cell = random_cell(rng, 5.0)
    frac = rng.uniform(0, 1, (12, 3))
    pos = frac @ cell
    out = frac + rng.integers(-3, 4, (12, 3))  # far outside the cell
    pos_out = out @ cell
    ei0, s0, v0 = check_against_reference(pos, cell, True, 4.0)
    ei1, s1, v1 = check_against_reference(pos_out, cell, True, 4.0)
    # same pairs and vectors (shifts differ by the unwrapping offsets)
    np.testing.assert_array_equal(ei0, ei1)
    np.testing.assert_allclose(v0, v1, atol=1e-9)


def test_against_ase_primitive_neighbor_list():
    from ase.neighborlist import primitive_neighbor_list

    rng = np.random.default_rng(11)
    cases = [
        (random_cell(rng, 6.0), (True, True, True), 4.0),
        (random_cell(rng, 2.0), (True, True, True), 4.0),
        (random_cell(rng, 8.0), (True, False, True), 3.0),
        (np.eye(3) * 10.0, (False, False, False), 3.0),
    ]
    for cell, pbc, cutoff in cases:
        pos = rng.uniform(-0.2, 1.2, (30, 3)) @ cell
        i, j, S, D = primitive_neighbor_list(
            "ijSD", pbc, cell, pos, cutoff, self_interaction=False, use_scaled_positions=False
        )
        order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))
        ei, s, v = neighbor_list(pos, cell, pbc, cutoff)
        np.testing.assert_array_equal(ei, np.stack([i[order], j[order]]))
        np.testing.assert_array_equal(s, S[order])
        np.testing.assert_allclose(v, D[order], atol=1e-10)


def test_large_system_against_ase():
    """> 2000 atoms: the search runs in two threads; result must still equal ASE's."""
    from ase.neighborlist import primitive_neighbor_list

    rng = np.random.default_rng(12)
    cell = random_cell(rng, 30.0, skew=0.2)
    pos = rng.uniform(-0.1, 1.1, (2600, 3)) @ cell
    pbc = (True, True, False)
    i, j, S, D = primitive_neighbor_list("ijSD", pbc, cell, pos, 3.5, self_interaction=False)
    order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))
    ei, s, v = neighbor_list(pos, cell, pbc, 3.5)
    np.testing.assert_array_equal(ei, np.stack([i[order], j[order]]))
    np.testing.assert_array_equal(s, S[order])
    np.testing.assert_allclose(v, D[order], atol=1e-9)


def test_ase_atoms_wrapper():
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=1)
    ei, s, v = neighbor_list_atoms(atoms, 3.0)
    # fcc nearest neighbours at a/sqrt(2) = 2.55 -> 12 each
    assert np.all(np.bincount(ei[0], minlength=len(atoms)) == 12)
    check_against_reference(atoms.positions, atoms.cell.array, atoms.pbc, 3.0)


def test_orthorhombic_lengths_and_scalar_pbc():
    pos = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    ei1, s1, v1 = neighbor_list(pos, [3.0, 3.0, 3.0], True, 2.5)
    ei2, s2, v2 = neighbor_list(pos, np.eye(3) * 3.0, [1, 1, 1], 2.5)
    np.testing.assert_array_equal(ei1, ei2)
    np.testing.assert_array_equal(s1, s2)


def test_coincident_atoms_give_no_zero_length_edge():
    pos = np.array([[0.0, 0, 0], [0.0, 0, 0], [1.0, 0, 0]])
    ei, s, v = neighbor_list(pos, None, False, 2.0)
    assert np.all(np.linalg.norm(v, axis=1) > 0)
    assert ei.shape[1] == 4  # 0-2, 1-2 both ways


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(positions=[[0, 0, np.nan]]), "atom 0 is not finite"),
        (dict(positions=[[0, 0, 0], [np.inf, 0, 0]]), "atom 1 is not finite"),
        (dict(positions=np.zeros((4, 2))), r"positions must have shape \(N, 3\)"),
        (dict(positions=np.zeros(3)), r"positions must have shape \(N, 3\)"),
        (dict(cell=np.eye(2)), r"cell must have shape \(3, 3\)"),
        (dict(pbc=[True, False]), "pbc must be"),
        (dict(cutoff=0.0), "cutoff must be a positive"),
        (dict(cutoff=-1.0), "cutoff must be a positive"),
        (dict(cutoff=float("nan")), "cutoff must be a positive"),
        (dict(cell=np.zeros((3, 3))), "cell vector 0 is zero"),
        (dict(cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]]), "singular"),
        (dict(cell=[[1, 0, 0], [0, 1, 0], [1, 1, 0]]), "singular"),
        (dict(cell=[[1, 0, 0], [2, 0, 0], [0, 0, 0]], pbc=[True, True, False]), "singular"),
        (dict(cell=np.eye(3) * np.nan), "not finite"),
    ],
)
def test_errors(kwargs, match):
    args = dict(positions=np.zeros((2, 3)) + [[0, 0, 0], [0.5, 0, 0]], cell=np.eye(3) * 3.0,
                pbc=True, cutoff=2.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        neighbor_list(**args)


def test_degenerate_cell_fine_along_open_direction():
    pos = np.array([[0.0, 0, 0], [0.5, 0.5, 7.0]])
    ei, s, v = neighbor_list(pos, [[2.0, 0, 0], [0, 2.0, 0], [0, 0, 0]], [True, True, False], 2.1)
    check_invariants(ei, s, v, 2.1)


# --------------------------------------------------------------------------- scaling
def test_timing_scales_linearly():
    """Prints timings (run with -s); O(N) means roughly constant time per atom."""
    from ase.build import bulk

    per_atom = []
    for rep in (4, 8, 12, 16):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((rep, rep, rep))
        atoms.rattle(0.01, seed=0)
        neighbor_list_atoms(atoms, 5.0)  # warm up
        t0 = time.perf_counter()
        ei, _, _ = neighbor_list_atoms(atoms, 5.0)
        dt = time.perf_counter() - t0
        per_atom.append(dt / len(atoms))
        print(
            f"\nneighbor_list: N={len(atoms):6d} E={ei.shape[1]:8d} "
            f"{dt * 1e3:8.2f} ms  {dt / len(atoms) * 1e6:6.2f} us/atom"
        )
    assert all(np.isfinite(per_atom))

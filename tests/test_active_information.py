"""The information-matrix selection rule (mlip.active.information): leverages, gains and greedy batches."""
from __future__ import annotations

import numpy as np
import pytest

from mlip.active.information import InformationMatrix


def test_leverage_reference_is_rank_over_n_and_matches_the_formula():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6))
    info = InformationMatrix(X)
    assert info.reference == pytest.approx(6 / 200, rel=1e-6)
    b = rng.normal(size=(3, 6))
    assert np.allclose(info.leverage(b), np.einsum("ij,jk,ik->i", b, np.linalg.inv(X.T @ X), b), rtol=1e-6)


def test_batch_prefers_the_uncovered_direction_with_diminishing_returns():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(size=(500, 4)) * [1, 1, 1, 0.01]])  # the 4th direction barely seen
    info = InformationMatrix(X)
    common = rng.normal(size=(5, 4)) * [1, 1, 1, 0]
    rare = np.array([[0.0, 0.0, 0.0, 1.0]] * 5)
    rows = [common, rare, rare.copy(), common * 1.01]
    ratios = [info.leverage(B).mean() / info.reference for B in rows]
    assert ratios[1] > 100 * ratios[0]
    before = info.gain(rare)
    chosen = info.select(rows, [0, 1, 2, 3], max_select=1)
    assert chosen[0] in (1, 2)
    assert info.gain(rare) < before / 5  # once labelled, a copy teaches much less
    assert sorted(info.select(rows, [0, 3], max_select=5)) == [0, 3] and info.select(rows, [], max_select=5) == []


def test_bad_rows_are_one_clear_error():
    with pytest.raises(ValueError, match="training rows"):
        InformationMatrix(np.zeros((0, 3)))


def test_variance_reduction_is_the_drop_of_the_pool_variance_and_prefers_typical_rows():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 5)) * [1, 1, 1, 0.05, 0.05]  # directions 4 and 5 barely trained
    info = InformationMatrix(X)
    P = rng.normal(size=(400, 5)) * [1, 1, 1, 0.6, 0.0]  # the pool explores direction 4 only
    B = rng.normal(size=(7, 5))
    before = info.leverage(P).sum()
    predicted = info.variance_reduction(B, info.pool_moment(P))
    after = InformationMatrix.__new__(InformationMatrix)
    after.p, after.A = info.p, info.A + B.T @ B
    after._factor()
    assert predicted == pytest.approx(before - after.leverage(P).sum(), rel=1e-9)
    typical = np.array([[0.0, 0.0, 0.0, 0.6, 0.0]] * 4)
    outlier = np.array([[0.0, 0.0, 0.0, 0.0, 3.0]] * 4)  # farther from training, but not what the pool needs
    rows = [outlier, typical]
    assert info.gain(outlier) > info.gain(typical)
    assert info.select(rows, [0, 1], max_select=1, pool=P) == [1]

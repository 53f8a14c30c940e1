"""Selection by the information of the whole training set (`select.strategy: information`).

Why a second rule beside MaxVol's γ: γ compares a neighbourhood's row b with the r rows of the active
set only, so inside the hull of the training rows it saturates at ≤ 1 and cannot tell a region covered
by one training row from one covered by thousands. For a model linear in its last parameters (the
rows b_i = ∂E_i/∂θ_lin that γ uses, `mlip.active.grade.feature_rows`), the variance of a least-squares
prediction is proportional to the leverage

    h(b) = b A⁻¹ bᵀ,   A = XᵀX + λI   (X: all training rows, [n, p]),

whose mean over the training rows is (about) p / n. A configuration is informative when the mean
leverage of its atoms reaches `leverage_lo` times that of the training rows (its neighbourhoods are
that much rarer in the training set than the training set's own); among the informative ones a batch is
chosen greedily by the information it adds, log det(I + B A⁻¹ Bᵀ) for its rows B, with A ← A + BᵀB after
each pick, so that configurations teaching the same thing are not labelled twice (Bayesian D-optimal
design; FLARE's variance trigger is the Gaussian-process analogue).

With `select.target: pool` the batch serves the explored ensemble instead of the training set: a pick
is worth the reduction it brings to the summed predictive variance of all candidate rows P,

    Σ_p h_p(A) − Σ_p h_p(A + BᵀB) = tr[(I + B A⁻¹ Bᵀ)⁻¹ B A⁻¹ PᵀP A⁻¹ Bᵀ]

(expected variance reduction, Cohn, Ghahramani & Jordan 1996; transductive experimental design, Yu et
al. 2006). Log-det favours whatever is farthest from the training rows, which in MD are the rare
tails of the pool (transients, close contacts); variance reduction also weighs how many of the pool's
neighbourhoods a pick teaches, so it takes the typical ones that the training set lacks.

    info = InformationMatrix(X_train)
    ratios = [info.leverage(B).mean() / info.reference for B in candidate_rows]
    chosen = info.select(candidate_rows, eligible, max_select=8)                  # target: training
    chosen = info.select(candidate_rows, eligible, max_select=8, pool=np.concatenate(candidate_rows))
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

__all__ = ["InformationMatrix"]


class InformationMatrix:
    """A = XᵀX + λI of the training rows X [n, p] (float64), with λ a 1e-10 relative ridge so that
    a rank-deficient X (e.g. a species absent from the training data) stays invertible."""

    def __init__(self, X: np.ndarray, ridge: float = 1e-10) -> None:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"InformationMatrix: need training rows [n, p] with n >= 1, got shape {X.shape}")
        self.p = X.shape[1]
        A = X.T @ X
        self.lam = ridge * max(float(np.trace(A)) / self.p, 1e-300)
        self.A = A + self.lam * np.eye(self.p)
        self._factor()
        self.reference = float(self.leverage(X).mean())  # ≈ rank / n

    def _factor(self) -> None:
        self.L = np.linalg.cholesky(self.A)

    def _whiten(self, B: np.ndarray) -> np.ndarray:
        """Y = L⁻¹ Bᵀ [p, m], so that B A⁻¹ Bᵀ = YᵀY."""
        from scipy.linalg import solve_triangular

        return solve_triangular(self.L, np.asarray(B, dtype=np.float64).T, lower=True)

    def leverage(self, B: np.ndarray) -> np.ndarray:
        """h(b) = b A⁻¹ bᵀ of each row of B [m, p] → [m]."""
        Y = self._whiten(B)
        return np.einsum("ij,ij->j", Y, Y)

    def gain(self, B: np.ndarray) -> float:
        """log det(I + B A⁻¹ Bᵀ): the information the rows B would add."""
        Y = self._whiten(B)
        m = Y.shape[1]
        sign, logdet = np.linalg.slogdet(np.eye(m) + Y.T @ Y)
        return float(logdet) if sign > 0 else 0.0

    def variance_reduction(self, B: np.ndarray, S: np.ndarray) -> float:
        """tr[(I + YᵀY)⁻¹ Yᵀ S Y] with Y = L⁻¹Bᵀ and S = L⁻¹PᵀPL⁻ᵀ (`pool_moment`): how much adding
        the rows B lowers Σ_p p A⁻¹ pᵀ over the pool rows P."""
        Y = self._whiten(B)
        G = np.eye(Y.shape[1]) + Y.T @ Y
        return float(np.trace(np.linalg.solve(G, Y.T @ S @ Y)))

    def pool_moment(self, P: np.ndarray) -> np.ndarray:
        """S = L⁻¹PᵀPL⁻ᵀ [p, p] of the pool rows P [n_pool, p] under the current A."""
        Y = self._whiten(P)
        return Y @ Y.T

    def add(self, B: np.ndarray) -> None:
        """Take the rows B into the training information (A ← A + BᵀB)."""
        B = np.asarray(B, dtype=np.float64)
        self.A = self.A + B.T @ B
        self._factor()

    def select(self, rows: Sequence[np.ndarray], eligible: Sequence[int], max_select: Optional[int] = None,
               pool: Optional[np.ndarray] = None) -> List[int]:
        """Greedy batch among `eligible` indices of `rows` (one [m_c, p] block per configuration), by the
        largest gain against the information so far (`pool` rows [n_pool, p] given: by the largest
        variance reduction over them); each pick is added before the next. Returns the picks in the
        order chosen (A is updated in place)."""
        left = list(dict.fromkeys(int(i) for i in eligible))
        cap = len(left) if max_select is None else max(0, int(max_select))
        chosen: List[int] = []
        while left and len(chosen) < cap:
            if pool is None:
                gains = [self.gain(rows[i]) for i in left]
            else:
                S = self.pool_moment(pool)
                gains = [self.variance_reduction(rows[i], S) for i in left]
            best = int(np.argmax(gains))
            i = left.pop(best)
            chosen.append(i)
            self.add(rows[i])
        return chosen

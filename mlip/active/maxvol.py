"""MaxVol / D-optimal active sets on plain feature matrices (NumPy; no model knowledge).

A model whose energy is (locally) linear in some parameters θ has, for every neighbourhood or
configuration, a feature row b = ∂E/∂θ (for MTP: [onehot(type), B_α]; for a neural family e.g. the
last-layer activations). Given training rows X (n × m), the active set is the r × r submatrix A of
maximal |det| of the reduced rows Y = X P (P: m × r spans the row space of X, r = rank X). The
extrapolation grade of a row b is

    γ(b) = max_k |(b P A⁻¹)_k| = max_k |(b G)_k|,   G = P A⁻¹  (m × r)

(the largest coefficient of b expressed in the active rows). γ ≤ 1 for every training row once MaxVol
has converged (tolerance `tol`): interpolation; γ > 1 means b would increase the volume |det A| by
the factor γ if swapped in — extrapolation (Podryabinkin & Shapeev 2017; MLIP-2's habit: γ > 2 select,
γ > 10 stop). γ is invariant to any invertible linear change of features, so column scaling only
matters for numerical stability (columns are normalised before the rank decision).

API
    ActiveSet.build(X, tol=1+1e-9, rtol=1e-9, sources=None, mode="nbh")   MaxVol on training rows
    aset.gamma(B) -> γ per row                                 (same as |B @ aset.G|.max(1))
    aset.select(C, threshold=1.0, max_rows=None, groups=None)   greedy volume-increasing swaps of
                                                                candidate rows C; returns the chosen
                                                                candidate rows (see its docstring)
    aset.to_dict() / ActiveSet.from_dict(d)                     JSON-serialisable
    maxvol(Y, tol) -> (rows, A⁻¹)                               square MaxVol on a full-rank n × r Y
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


def row_space(X: np.ndarray, rtol: float = 1e-9) -> np.ndarray:
    """P (m × r) with X P = U_r (orthonormal columns): spans the row space of X after column
    normalisation; r = numerical rank (singular values above rtol × the largest)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"need a non-empty 2-D feature matrix, got shape {X.shape}")
    norms = np.linalg.norm(X, axis=0)
    scale = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    Xs = X * scale
    _, s, vt = np.linalg.svd(Xs, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        raise ValueError("all feature rows are zero: no active set can be built")
    r = int(np.sum(s > rtol * s[0]))
    # whitened: X P = U_r has orthonormal columns, so A = (X P)[rows] is as well conditioned as the data allow
    return scale[:, None] * vt[:r].T / s[:r]


def maxvol(Y: np.ndarray, tol: float = 1.0 + 1e-9, max_iters: int = 100000,
           init: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Rows of Y (n × r, rank r) spanning a locally maximal-volume r × r submatrix.

    Start: column-pivoted QR of Yᵀ (or `init`). Then repeat: C = Y A⁻¹; if max |C_ij| > tol swap row i
    into slot j (|det A| grows by |C_ij|) with a rank-1 update of A⁻¹ and C. Returns (rows, A⁻¹)."""
    import scipy.linalg

    Y = np.asarray(Y, dtype=np.float64)
    n, r = Y.shape
    if n < r:
        raise ValueError(f"MaxVol needs at least as many rows ({n}) as columns ({r})")
    if init is None:
        _, _, piv = scipy.linalg.qr(Y.T, mode="economic", pivoting=True)
        rows = np.array(piv[:r], dtype=np.int64)
    else:
        rows = np.array(init, dtype=np.int64)
    a_inv = np.linalg.inv(Y[rows])
    C = Y @ a_inv
    since = 0
    for _ in range(max_iters):
        flat = int(np.argmax(np.abs(C)))
        i, j = divmod(flat, r)
        cij = C[i, j]
        if abs(cij) <= tol:
            if since == 0:
                break
            a_inv = np.linalg.inv(Y[rows])  # confirm convergence with an exact C
            C = Y @ a_inv
            since = 0
            continue
        # A' = A with row j replaced by y_i:  C' = C − C[:, j] ⊗ (C[i, :] − e_j) / C_ij
        ci = C[i, :].copy()
        ci[j] -= 1.0
        cj = C[:, j].copy()
        C -= np.outer(cj / cij, ci)
        rows[j] = i
        since += 1
        if since >= 64:  # refresh to stop rounding drift
            a_inv = np.linalg.inv(Y[rows])
            C = Y @ a_inv
            since = 0
    a_inv = np.linalg.inv(Y[rows])
    return rows, a_inv


@dataclass
class ActiveSet:
    """Active set in a reduced feature space: rows (r × m raw features), P (m × r), G = P A⁻¹.

    `mode` only labels what a row is ("nbh": one neighbourhood, "cfg": one configuration) for the
    tools that build rows (`mlip.active.grade`); nothing here depends on it."""

    rows: np.ndarray  # r × m (raw feature rows of the active set)
    P: np.ndarray  # m × r
    sources: List[Any] = field(default_factory=list)  # one label per active row (e.g. [frame, atom])
    mode: str = "nbh"

    def __post_init__(self) -> None:
        self.rows = np.asarray(self.rows, dtype=np.float64)
        self.P = np.asarray(self.P, dtype=np.float64)
        self._refresh()

    def _refresh(self) -> None:
        A = self.rows @ self.P
        self.A_inv = np.linalg.inv(A)
        self.G = self.P @ self.A_inv

    @property
    def rank(self) -> int:
        return int(self.P.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.P.shape[0])

    @property
    def log_volume(self) -> float:
        return float(np.linalg.slogdet(self.rows @ self.P)[1])

    @classmethod
    def build(cls, X: np.ndarray, tol: float = 1.0 + 1e-9, rtol: float = 1e-9,
              sources: Optional[Sequence[Any]] = None, mode: str = "nbh") -> "ActiveSet":
        X = np.asarray(X, dtype=np.float64)
        P = row_space(X, rtol)
        rows, _ = maxvol(X @ P, tol=tol)
        src = [sources[k] for k in rows] if sources is not None else [int(k) for k in rows]
        return cls(X[rows], P, src, mode)

    def gamma(self, B: np.ndarray) -> np.ndarray:
        B = np.atleast_2d(np.asarray(B, dtype=np.float64))
        if B.shape[1] != self.n_features:
            raise ValueError(f"feature rows have {B.shape[1]} columns, the active set {self.n_features}")
        return np.abs(B @ self.G).max(axis=1)

    def select(self, C: np.ndarray, threshold: float = 1.0, max_rows: Optional[int] = None,
               groups: Optional[Sequence[Any]] = None, max_groups: Optional[int] = None,
               sources: Optional[Sequence[Any]] = None) -> List[int]:
        """Greedily swap the most volume-increasing candidate rows of C into the active set.

        Each step takes the candidate row i and slot j with the largest |(c_i G)_j| and swaps it in
        (|det A| grows by that factor) while it exceeds `threshold` (≥ 1). `groups[i]` (e.g. the
        configuration of row i) lets `max_groups` cap the number of distinct groups that end up in
        the active set. Returns the indices of candidate rows that are in the final active set (a row
        swapped in and later out again is not returned). The set is updated in place."""
        C = np.atleast_2d(np.asarray(C, dtype=np.float64))
        if C.shape[0] == 0:
            return []
        if threshold < 1.0:
            raise ValueError(f"selection threshold must be >= 1, got {threshold}")
        Y = C @ self.P
        A = self.rows @ self.P
        a_inv = np.linalg.inv(A)
        in_set: Dict[int, int] = {}  # slot -> candidate row
        taken = np.zeros(len(C), dtype=bool)
        steps = 0
        limit = max_rows if max_rows is not None else 10 * self.rank + len(C)
        while steps < limit:
            G = Y @ a_inv
            G[taken] = 0.0
            if max_groups is not None and groups is not None:
                chosen = {groups[k] for k in in_set.values()}
                if len(chosen) >= max_groups:
                    allowed = np.array([g in chosen for g in groups])
                    G[~allowed] = 0.0
            flat = int(np.argmax(np.abs(G)))
            i, j = divmod(flat, G.shape[1])
            if abs(G[i, j]) <= threshold:
                break
            A[j] = Y[i]
            self.rows[j] = C[i]
            if j in in_set:
                taken[in_set[j]] = False
            in_set[j] = i
            taken[i] = True
            if sources is not None:
                if j < len(self.sources):
                    self.sources[j] = sources[i]
            a_inv = np.linalg.inv(A)
            steps += 1
        self._refresh()
        return sorted(in_set.values())

    def to_dict(self) -> Dict[str, Any]:
        return {"mode": self.mode, "rank": self.rank, "n_features": self.n_features, "rows": self.rows.tolist(),
                "projection": self.P.tolist(), "sources": list(self.sources)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ActiveSet":
        return cls(np.asarray(d["rows"], dtype=np.float64), np.asarray(d["projection"], dtype=np.float64),
                   list(d.get("sources", [])), str(d.get("mode", "nbh")))

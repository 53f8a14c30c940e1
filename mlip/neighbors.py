"""Neighbour lists (thin wrapper over the C++ cell list in `mlip._core`).

Conventions (docs/CONTRACT.md): full list (i→j and j→i), every periodic image with
``0 < |r| < cutoff`` (an atom's own images included), ``edge_vec = x[j] - x[i] + shifts @ cell``
with cell rows = cell vectors, edges sorted by i, then j, then shift.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import ase

__all__ = ["neighbor_list", "neighbor_list_atoms"]

PbcLike = Union[bool, Sequence[bool], np.ndarray]


def _core():
    try:
        from mlip import _core
    except ImportError as exc:  # pragma: no cover - only without a built extension
        raise ImportError(
            "mlip._core (the compiled extension) is not available: install mlip with "
            "`bash scripts/install.sh` or `pip install --no-build-isolation -e .` "
            f"({exc})"
        ) from exc
    return _core


def neighbor_list(
    positions: np.ndarray,
    cell: np.ndarray | None,
    pbc: PbcLike,
    cutoff: float,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list.

    Args:
        positions: float[N, 3] Cartesian positions (need not be wrapped into the cell).
        cell: float[3, 3] with rows = cell vectors, or float[3] (orthorhombic lengths), or None
            (no periodic direction). Rows along non-periodic directions are ignored and may be zero.
        pbc: bool or 3 bools.
        cutoff: > 0.

    Returns:
        edge_index int64[2, E], shifts int64[E, 3], edge_vec float64[E, 3].

    Raises:
        ValueError: wrong shapes, non-finite positions, non-positive cutoff, singular cell along a
            periodic direction.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if cell is not None:
        cell = np.asarray(cell, dtype=np.float64)
        if cell.shape == (3,):
            cell = np.diag(cell)
    pbc_arr = np.asarray(pbc, dtype=bool)
    if cell is None and pbc_arr.any():
        raise ValueError("cell is None but pbc is set along some direction")
    return _core().neighbor_list(positions, cell, pbc_arr, float(cutoff))


def neighbor_list_atoms(atoms: "ase.Atoms", cutoff: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`neighbor_list` for an `ase.Atoms` (positions, cell and pbc taken from it)."""
    return neighbor_list(
        atoms.get_positions(), np.asarray(atoms.get_cell()), atoms.get_pbc(), cutoff
    )

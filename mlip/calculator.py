"""ASE calculator on the C++ engine: the same `mlip::Engine::compute` the LAMMPS pair_style calls.

Per call: C++ neighbour list (periodic images mapped back onto the owned atoms, so message-passing
models see the true periodic graph), one engine call, and conversion of the virial to ASE's stress
(−W/V, Voigt xx yy zz yz xz xy).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes


def check_structure(atoms, species: Sequence[str]) -> np.ndarray:
    """Model species indices of `atoms`; clear errors for empty structures, unknown elements,
    non-finite or coinciding positions."""
    from mlip.graph import species_indices

    n = len(atoms)
    if n == 0:
        raise ValueError("the structure has 0 atoms")
    pos = atoms.get_positions()
    bad = np.argwhere(~np.isfinite(pos))
    if len(bad):
        raise ValueError(f"atom {int(bad[0][0])} has a non-finite position {pos[bad[0][0]].tolist()}")
    idx = species_indices(atoms.get_chemical_symbols(), species)
    # coinciding atoms (also through periodic images) make r_ij = 0 and the model singular
    frac_pos = pos
    if atoms.pbc.any() and abs(atoms.cell.volume) > 0:
        s = atoms.cell.scaled_positions(pos)
        s[:, atoms.pbc] %= 1.0
        s[:, atoms.pbc] %= 1.0
        frac_pos = s @ atoms.cell[:]
    key = np.round(frac_pos, 8)
    _, first, counts = np.unique(key, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        k = int(first[np.argmax(counts > 1)])
        other = [a for a in range(n) if a != k and np.allclose(key[a], key[k])][0]
        raise ValueError(f"atoms {k} and {other} are at the same position {pos[k].tolist()}")
    return idx


class MLIPCalculator(Calculator):
    """ASE calculator for an mlip export (any family).

    Results: energy, free_energy, forces, energies (per atom), stress (periodic cells), and
    `virial` (3×3, eV, LAMMPS sign) in `calc.results`.
    """

    implemented_properties = ["energy", "free_energy", "forces", "energies", "stress"]

    def __init__(self, model: str, num_threads: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from mlip._core import Engine

        import os

        if num_threads is None:
            # one intra-op thread unless asked: small systems run fastest that way and nothing
            # oversubscribes when several calculators or MPI ranks share the cores
            num_threads = int(os.environ.get("MLIP_NUM_THREADS", "0") or 0) or 1
        self.model_path = str(model)
        if not os.path.isfile(self.model_path):
            raise FileNotFoundError(f"model file '{self.model_path}' does not exist")
        try:
            self.engine = Engine(self.model_path, int(num_threads))
        except RuntimeError as exc:  # the engine's message already names the file and the problem
            raise ValueError(str(exc)) from None
        self.species: List[str] = list(self.engine.species)
        self.cutoff = float(self.engine.cutoff)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        from mlip.neighbors import neighbor_list

        atoms = self.atoms
        idx = check_structure(atoms, self.species)
        edge_index, _, edge_vec = neighbor_list(atoms.get_positions(), atoms.cell[:], atoms.pbc, self.cutoff)
        out: Dict[str, Any] = self.engine.compute(idx, edge_index, edge_vec, len(atoms), False)
        e = float(out["energy"])
        virial = np.asarray(out["virial"]).reshape(3, 3)
        self.results = {
            "energy": e,
            "free_energy": e,
            "forces": np.asarray(out["forces"]).reshape(-1, 3),
            "energies": np.asarray(out["atom_energy"]),
            "virial": virial,
        }
        if atoms.pbc.all():
            v = -virial / atoms.get_volume()
            self.results["stress"] = np.array([v[0, 0], v[1, 1], v[2, 2], v[1, 2], v[0, 2], v[0, 1]])
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")

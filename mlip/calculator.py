"""ASE calculator on the C++ engine: the same `mlip::Engine::compute` the LAMMPS pair_style calls.

Per call: C++ neighbour list (periodic images mapped back onto the owned atoms, so message-passing
models see the true periodic graph), one engine call, and conversion of the virial to ASE's stress
(−W/V, Voigt xx yy zz yz xz xy).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

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


def thread_count(num_threads: Any, what: str = "num_threads") -> int:
    """`num_threads` as a checked count: an integer from 1 to `mlip._core.max_num_threads()`, else
    ValueError "<what> must be an integer from 1 to N (this machine has K CPUs), got X" (the
    engine's rule, shared with LAMMPS' `pair_style mlip ... threads N` and MLIP_NUM_THREADS)."""
    import numbers

    from mlip._core import check_num_threads

    if isinstance(num_threads, numbers.Integral) and not isinstance(num_threads, bool) \
            and abs(int(num_threads)) < 2**62:
        return check_num_threads(int(num_threads), what)
    try:  # not an integer (or beyond C++'s): the rule in the engine's words, with the value as given
        check_num_threads(0, what)
    except ValueError as exc:
        raise ValueError(f"{str(exc).rsplit(', got ', 1)[0]}, got {num_threads!r}") from None
    raise AssertionError("check_num_threads accepted 0")


class MLIPCalculator(Calculator):
    """ASE calculator for one mlip export (any family) or a committee of exports.

    `MLIPCalculator("model.pt")` or `MLIPCalculator(["m0.pt", "m1.pt", "m2.pt"])`.

    Results: energy, free_energy, forces, energies (per atom), stress (periodic cells), and
    `virial` (3×3, eV, LAMMPS sign) in `calc.results`. With a committee these are the committee
    means, and (docs/CONTRACT.md, "Committee deviation"; DeePMD-kit's model-deviation definitions):

    * `force_deviation` [N]: ε_F,i = sqrt(⟨‖F_i − ⟨F_i⟩‖²⟩), and its `max_force_deviation`,
      `min_force_deviation`, `avg_force_deviation` (mean over atoms);
    * `energy_deviation`: std of E/N over the committee (eV/atom);
    * `virial_deviation` [3,3]: std of W/N per component, and `max_`/`min_virial_deviation`,
      `avg_virial_deviation` = ‖σ_W‖_F / 3;
    * `committee_energy` [M], `committee_forces` [M,N,3], `committee_virial` [M,3,3].

    One neighbour list per call with the largest cutoff; each member gets the edges shorter than its
    own cutoff (the same edges, in the same order, as its own neighbour list).

    Device: `device="cpu"` (default), `"cuda"`, `"cuda:N"` or `"auto"` (a GPU when libtorch sees one):
    off the CPU each export's TorchScript runs on that device (the native DP/MTP kernels and the
    layered message-passing path are CPU code); a CUDA device that is not there is one ValueError.

    Extrapolation grade: when a member's export carries an active set (and `gamma=True`),
    `atom_gamma` [N] (per atom; the element-wise maximum over such members) and `gamma` (its max).
    """

    implemented_properties = ["energy", "free_energy", "forces", "energies", "stress"]

    def __init__(self, model: Union[str, Sequence[str]], num_threads: Optional[int] = None,
                 gamma: bool = True, device: str = "cpu", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from mlip._core import Engine

        import os

        # None: the engine takes MLIP_NUM_THREADS, else one intra-op thread (small systems run
        # fastest that way and nothing oversubscribes when several calculators or MPI ranks share
        # the cores); a count is checked by the engine's rule, the one LAMMPS' `threads` follows
        num_threads = 0 if num_threads is None else thread_count(num_threads)
        paths = [str(model)] if isinstance(model, (str, os.PathLike)) else [str(m) for m in model]
        if not paths:
            raise ValueError("no model given")
        self.engines = []
        for p in paths:
            if not os.path.exists(p):  # the engine names the other problems (a directory, ...)
                raise FileNotFoundError(f"model file '{p}' does not exist")
            try:
                # device: cpu (default), cuda[:N] or auto; off the CPU the export's TorchScript runs there
                self.engines.append(Engine(p, num_threads, str(device)))
            except RuntimeError as exc:  # the engine's message already names the file and the problem
                raise ValueError(str(exc)) from None
        self.model_paths: List[str] = paths
        self.model_path = paths[0]
        self.engine = self.engines[0]
        self.species: List[str] = list(self.engine.species)
        for p, e in zip(paths[1:], self.engines[1:]):
            if list(e.species) != self.species:
                raise ValueError(f"committee models must have the same species in the same order: "
                                 f"'{paths[0]}' has {self.species}, '{p}' has {list(e.species)}")
        self.cutoffs = [float(e.cutoff) for e in self.engines]
        self.cutoff = max(self.cutoffs)
        self.gamma = bool(gamma)

    @property
    def has_grade(self) -> bool:
        return any(bool(getattr(e, "has_grade", False)) for e in self.engines)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        from mlip.neighbors import neighbor_list

        atoms = self.atoms
        idx = check_structure(atoms, self.species)
        n = len(atoms)
        edge_index, _, edge_vec = neighbor_list(atoms.get_positions(), atoms.cell[:], atoms.pbc, self.cutoff)
        r = None
        outs, gammas = [], []
        for engine, rc in zip(self.engines, self.cutoffs):
            ei, ev = edge_index, edge_vec
            if rc < self.cutoff:
                if r is None:
                    r = np.linalg.norm(edge_vec, axis=1)
                keep = r < rc
                ei, ev = np.ascontiguousarray(edge_index[:, keep]), np.ascontiguousarray(edge_vec[keep])
            outs.append(engine.compute(idx, ei, ev, n, False))
            if self.gamma and getattr(engine, "has_grade", False):
                gammas.append(np.asarray(engine.grade(idx, ei, ev, n)))
        energies = np.array([float(o["energy"]) for o in outs])
        forces = np.stack([np.asarray(o["forces"]).reshape(-1, 3) for o in outs])
        virials = np.stack([np.asarray(o["virial"]).reshape(3, 3) for o in outs])
        atom_e = np.stack([np.asarray(o["atom_energy"]) for o in outs])
        e = float(energies.mean()) if len(outs) > 1 else float(energies[0])
        virial = virials.mean(0) if len(outs) > 1 else virials[0]
        self.results = {
            "energy": e,
            "free_energy": e,
            "forces": forces.mean(0) if len(outs) > 1 else forces[0],
            "energies": atom_e.mean(0) if len(outs) > 1 else atom_e[0],
            "virial": virial,
        }
        if len(outs) > 1:
            self.results.update(committee_deviation(energies, forces, virials, n))
            self.results.update(committee_energy=energies, committee_forces=forces, committee_virial=virials)
        if gammas:
            g = np.max(np.stack(gammas), axis=0)
            self.results["atom_gamma"] = g
            self.results["gamma"] = float(g.max()) if g.size else 0.0
        if atoms.pbc.all():
            v = -virial / atoms.get_volume()
            self.results["stress"] = np.array([v[0, 0], v[1, 1], v[2, 2], v[1, 2], v[0, 2], v[0, 1]])
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")


def committee_deviation(energies: np.ndarray, forces: np.ndarray, virials: np.ndarray, n_atoms: int
                        ) -> Dict[str, Any]:
    """Model deviation of a committee (docs/CONTRACT.md): energies [M], forces [M,N,3], virials [M,3,3]."""
    f_dev = np.sqrt(np.mean(np.sum((forces - forces.mean(0)) ** 2, axis=2), axis=0))
    v_dev = np.sqrt(np.mean((virials - virials.mean(0)) ** 2, axis=0)) / n_atoms
    e_dev = float(np.sqrt(np.mean((energies - energies.mean()) ** 2)) / n_atoms)
    return {
        "force_deviation": f_dev,
        "max_force_deviation": float(f_dev.max()) if f_dev.size else 0.0,
        "min_force_deviation": float(f_dev.min()) if f_dev.size else 0.0,
        "avg_force_deviation": float(f_dev.mean()) if f_dev.size else 0.0,
        "energy_deviation": e_dev,
        "virial_deviation": v_dev,
        "max_virial_deviation": float(v_dev.max()),
        "min_virial_deviation": float(v_dev.min()),
        "avg_virial_deviation": float(np.linalg.norm(v_dev) / 3.0),
    }

"""Shared helpers of the LAMMPS tests (no tests here): small analytic models exported through
`mlip.export`, LAMMPS data/dump I/O, and running `lmp` in a subprocess.

The toy models follow the model contract exactly like the real families (per-atom energies from
species + edges), so the pair_style can be tested to round-off without a trained network:
  * ToyEAM: Morse pairs + an embedding function of a density (many-body, local);
  * ToyMP:  two message-passing layers (interaction_range = 2 * cutoff), which exercises the
            ghost neighbour list, ghost centres and the communication cutoff.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pytest
import torch
from torch import Tensor

from mlip import lammps_support as ls
from mlip.models.base import AtomicModel

REASON = ls.unavailable_reason()
requires_lammps = pytest.mark.skipif(REASON is not None, reason=f"LAMMPS tests skipped: {REASON}")

# eV/Angstrom^3 -> bar (LAMMPS metal nktv2p)
NKTV2P_METAL = ls.NKTV2P_METAL
MASSES = {"Cu": 63.546, "Ag": 107.8682, "Au": 196.96657, "H": 1.008, "O": 15.999}

# Morse parameters (D eV, a 1/A, r0 A) for Cu and Ag, mixed arithmetically for Cu-Ag
_MORSE = {"Cu": (0.3429, 1.3588, 2.866), "Ag": (0.3323, 1.3690, 3.115)}


def _pair_table(species: Sequence[str], k: int) -> Tensor:
    vals = [_MORSE.get(s, _MORSE["Cu"])[k] for s in species]
    n = len(species)
    return torch.tensor([[0.5 * (vals[a] + vals[b]) for b in range(n)] for a in range(n)], dtype=torch.float64)


class ToyEAM(AtomicModel):
    """E_i = 1/2 sum_j phi(r_ij) - A sqrt(rho_i + eps) + bias_i,  rho_i = sum_j w_j exp(-b (r-r0)) fc."""

    family = "toy_eam"

    def __init__(self, species: List[str], cutoff: float = 5.0, embed: float = 0.3) -> None:
        super().__init__(species, cutoff)
        n = len(species)
        self.register_buffer("D", _pair_table(species, 0))
        self.register_buffer("a", _pair_table(species, 1))
        self.register_buffer("r0", _pair_table(species, 2))
        self.register_buffer("w", torch.linspace(1.0, 1.3, n, dtype=torch.float64))
        self.register_buffer("bias", torch.linspace(-0.5, -0.8, n, dtype=torch.float64))
        self.embed = float(embed)

    def config(self) -> Dict[str, Any]:
        return {"species": list(self.species), "cutoff": self.cutoff, "embed": self.embed}

    def _edge_terms(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor):
        i, j = edge_index[0], edge_index[1]
        r = torch.sqrt((edge_vec * edge_vec).sum(1))
        x = r / self.cutoff
        fc = (1.0 - x * x) ** 3
        si, sj = species[i], species[j]
        e = torch.exp(-self.a[si, sj] * (r - self.r0[si, sj]))
        phi = self.D[si, sj] * (e * e - 2.0 * e) * fc
        dens = self.w[sj] * torch.exp(-1.5 * (r - self.r0[si, sj])) * fc
        return i, j, phi, dens

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        n = species.shape[0]
        i, j, phi, dens = self._edge_terms(species, edge_index, edge_vec)
        zero = torch.zeros(n, dtype=edge_vec.dtype, device=edge_vec.device)
        pair = zero.index_add(0, i, 0.5 * phi)
        rho = zero.index_add(0, i, dens)
        return pair - self.embed * torch.sqrt(rho + 0.01) + self.bias.to(edge_vec.dtype)[species]


class ToyMP(ToyEAM):
    """Two message-passing layers: E_i = 1/2 sum_j phi_ij + c sum_j tanh(rho_j) g(r_ij) + bias_i.

    E_i depends on rho_j of neighbours, i.e. on atoms up to 2 * cutoff away."""

    family = "toy_mp"

    def __init__(self, species: List[str], cutoff: float = 4.0, embed: float = 0.3) -> None:
        super().__init__(species, cutoff, embed)
        self.interaction_range = 2.0 * float(cutoff)

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        n = species.shape[0]
        i, j, phi, dens = self._edge_terms(species, edge_index, edge_vec)
        zero = torch.zeros(n, dtype=edge_vec.dtype, device=edge_vec.device)
        rho = zero.index_add(0, i, dens)
        h = torch.tanh(rho - 2.0)
        r = torch.sqrt((edge_vec * edge_vec).sum(1))
        x = r / self.cutoff
        g = (1.0 - x * x) ** 3 * torch.exp(-0.5 * r)
        msg = zero.index_add(0, i, h[j] * g)
        return zero.index_add(0, i, 0.5 * phi) - self.embed * msg + self.bias.to(edge_vec.dtype)[species]


def export_toy(path: str, kind: str = "eam", species: Sequence[str] = ("Cu", "Ag"), cutoff: float = 5.0,
               dtype: str = "float64") -> str:
    from mlip.export import export_model

    cls = ToyEAM if kind == "eam" else ToyMP
    export_model(cls(list(species), cutoff), path, dtype)
    return path


# ------------------------------------------------------------------------------------------------
# structures and LAMMPS files


def lammps_cell(cell: np.ndarray) -> np.ndarray:
    """Raise unless `cell` (rows) is in LAMMPS' restricted triclinic form (lower triangular)."""
    cell = np.asarray(cell, dtype=float)
    if abs(cell[0, 1]) > 0 or abs(cell[0, 2]) > 0 or abs(cell[1, 2]) > 0:
        raise ValueError("cell must be lower triangular: a=(lx,0,0), b=(xy,ly,0), c=(xz,yz,lz)")
    return cell


def fcc_structure(a0: float, reps: Sequence[int], species: Sequence[str] = ("Cu", "Ag"), seed: int = 0,
                  rattle: float = 0.05, tilt: Sequence[float] = (0.0, 0.0, 0.0), pbc=(True, True, True),
                  vacuum: float = 0.0, fraction: float = 0.5):
    """fcc supercell in LAMMPS form, random species (`fraction` of species[1]), rattled, optional
    tilt (xy, xz, yz as fractions of the box lengths) and vacuum along z (for slabs)."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    nx, ny, nz = reps
    frac = np.array([(b + [x, y, z]) / [nx, ny, nz] for x in range(nx) for y in range(ny) for z in range(nz)
                     for b in basis])
    lx, ly, lz = a0 * nx, a0 * ny, a0 * nz
    cell = np.array([[lx, 0, 0], [tilt[0] * lx, ly, 0], [tilt[1] * lx, tilt[2] * ly, lz]])
    pos = frac @ cell + rng.normal(scale=rattle, size=(len(frac), 3))
    sym = [species[1] if rng.random() < fraction else species[0] for _ in range(len(frac))]
    atoms = Atoms(sym, positions=pos, cell=cell, pbc=pbc)
    atoms.wrap()
    if vacuum > 0:
        c = atoms.cell[:].copy()
        c[2] = [0.0, 0.0, lz + 2 * vacuum]
        atoms.set_cell(c, scale_atoms=False)
        atoms.positions[:, 2] += vacuum
    return atoms


def write_data(atoms, path: str, type_elements: Sequence[str]) -> None:
    """LAMMPS data file (atom_style atomic); atom type t = type_elements[t-1]. Positions are
    written with 17 significant digits so that LAMMPS and ASE see the same numbers."""
    cell = lammps_cell(atoms.cell[:])
    types = [type_elements.index(s) + 1 for s in atoms.get_chemical_symbols()]
    f = "{:.17g}"
    lines = ["mlip test structure", "", f"{len(atoms)} atoms", f"{len(type_elements)} atom types", ""]
    lines += [f"0 {f.format(cell[0, 0])} xlo xhi", f"0 {f.format(cell[1, 1])} ylo yhi",
              f"0 {f.format(cell[2, 2])} zlo zhi"]
    lines += [f"{f.format(cell[1, 0])} {f.format(cell[2, 0])} {f.format(cell[2, 1])} xy xz yz", "", "Masses", ""]
    lines += [f"{t + 1} {MASSES.get(el, 1.0)}" for t, el in enumerate(type_elements)]
    lines += ["", "Atoms # atomic", ""]
    for k, (t, p) in enumerate(zip(types, atoms.get_positions())):
        lines.append(f"{k + 1} {t} {f.format(p[0])} {f.format(p[1])} {f.format(p[2])}")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def read_dump(path: str) -> Dict[str, np.ndarray]:
    """Last snapshot of a 'dump custom' text file as {column: array sorted by id}."""
    with open(path) as fh:
        lines = fh.read().splitlines()
    starts = [k for k, l in enumerate(lines) if l.startswith("ITEM: TIMESTEP")]
    k = starts[-1]
    n = int(lines[k + 3])
    hdr_idx = next(m for m in range(k, len(lines)) if lines[m].startswith("ITEM: ATOMS"))
    cols = lines[hdr_idx].split()[2:]
    data = np.array([[float(v) for v in l.split()] for l in lines[hdr_idx + 1: hdr_idx + 1 + n]])
    order = np.argsort(data[:, cols.index("id")])
    return {c: data[order, m] for m, c in enumerate(cols)}


def last_thermo(output: str) -> Dict[str, float]:
    rows = ls.parse_thermo(output)
    assert rows, f"no thermo output in:\n{output[-3000:]}"
    return rows[-1]


def run(script: str, cwd: str, nprocs: int = 1, **kw):
    return ls.run_lmp(script, str(cwd), nprocs=nprocs, **kw)


def atoms_from_dump(atoms, dump: Dict[str, np.ndarray]):
    """A copy of `atoms` with LAMMPS' own positions (after its remapping into the box)."""
    out = atoms.copy()
    out.set_positions(np.stack([dump["x"], dump["y"], dump["z"]], axis=1))
    return out


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def engine_reference(model_path: str, atoms, atom_virial: bool = True) -> Dict[str, np.ndarray]:
    """The ASE calculator's results plus per-atom virials from the same engine and graph."""
    from mlip.calculator import MLIPCalculator
    from mlip.neighbors import neighbor_list

    calc = MLIPCalculator(model_path, num_threads=1)
    a = atoms.copy()
    a.calc = calc
    res = {
        "energy": a.get_potential_energy(),
        "forces": a.get_forces(),
        "energies": a.get_potential_energies(),
        "virial": np.asarray(calc.results["virial"]).reshape(3, 3),
    }
    if atom_virial:
        idx = np.array([calc.species.index(s) for s in a.get_chemical_symbols()], dtype=np.int64)
        ei, _, ev = neighbor_list(a.get_positions(), a.cell[:], a.pbc, calc.cutoff)
        out = calc.engine.compute(idx, ei, ev, len(a), True)
        res["atom_virial"] = np.asarray(out["atom_virial"]).reshape(-1, 9)
    return res


def tmp_model(tmp_path_factory, name: str, **kw) -> str:
    d = tmp_path_factory.mktemp("models")
    return export_toy(os.path.join(str(d), name), **kw)


DUMP_COLS = "id type x y z fx fy fz c_pe c_s[1] c_s[2] c_s[3] c_s[4] c_s[5] c_s[6]"


def single_point_script(data: str, model: str, elements: Sequence[str], boundary: str = "p p p",
                        units: str = "metal", extra: str = "", pair_extra: str = "", pre: str = "") -> str:
    """run 0 with per-atom energy/virial dump and full-precision thermo (virial-only pressure)."""
    return f"""
units {units}
atom_style atomic
boundary {boundary}
{pre}
atom_modify map array
read_data {data}
pair_style mlip {model} {pair_extra}
pair_coeff * * {' '.join(elements)}
{extra}
compute pe all pe/atom
compute s all stress/atom NULL virial
compute pv all pressure NULL virial
variable vol equal vol
thermo_style custom step pe press c_pv[1] c_pv[2] c_pv[3] c_pv[4] c_pv[5] c_pv[6] v_vol
thermo_modify format float %.17g norm no
dump d all custom 1 dump.txt {DUMP_COLS}
dump_modify d format float %.17g sort id
run 0
"""


virial_from_thermo = ls.virial_from_thermo  # W (3x3, eV) = P_virial V / nktv2p

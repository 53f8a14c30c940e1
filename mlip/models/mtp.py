"""Moment Tensor Potential (Shapeev 2016; MLIP-2, Novikov et al. 2021) behind the common contract.

Per atom i with type t_i and neighbours j (r_ij = x_j − x_i, 0 < r < r_cut):

    Q_k(r)   = scaling · T_k(ξ) · (r_cut − r)²,  ξ = (2r − (r_min + r_cut)) / (r_cut − r_min),  k < n_rb
    f_μ(r)   = Σ_k c[t_i, t_j, μ, k] Q_k(r)                       (radial functions, trainable)
    M_{μ,ν}  = Σ_j f_μ(r_ij) r̂_ij^{⊗ν}                            (moments, lev = 2 + 4μ + ν)
    B_α      = full contractions of ≤ 4 moments, level ≤ L       (see `mlip.models.mtp_basis`)
    E_i      = species_coeffs[t_i] + Σ_α moment_coeffs[α] B_α(i)

exactly MLIP-2's `.mtp` semantics (nothing is clamped below r_min; T_k is evaluated at |ξ| > 1 there),
so an MLIP-2 potential read with `MTP.from_mtp_file` reproduces MLIP-2's numbers. Everything is
vectorised over edges: per-edge basic moments are summed with one `index_add`, and the contractions
(`alpha_index_times`) run as a few "generations" of gather-multiply-`index_add` over precomputed
index buffers (TorchScript-compatible; float64 and float32).

Construction
    MTP(species, level=16, cutoff=5.0, min_dist=None, radial_basis_size=8, ...)
    MTP.from_mtp_file(path, species=None)   # MLIP-2 `.mtp`, trained or untrained template
    MTP.from_file(path, species=None)       # `.mtp` or an mlip export of an MTP (`.pt`)
    MTP.from_export(path)                   # an mlip export of an MTP (its metadata JSON, float64)
    model.to_mtp_file(path)                 # write MLIP-2 `.mtp` (`mlip convert` uses this)
`min_dist=None` / `scaling=None` are set by `fit_statistics(frames)` (min_dist = 0.95 × the shortest
training distance, rounded down; scaling so that Σ_j scaling·(r_cut − r)² averages 1 per atom).

Extrapolation grade: like every family, MTP provides per-atom rows `grade_features` (scripted)
b_i = [onehot(t_i), B(i)], the derivatives of E_i with respect to the linear parameters
(species_coeffs, moment_coeffs); a configuration's row (MLIP-2's "cfg" mode) is Σ_i b_i. Active sets
are built on these rows by `mlip.active.grade` and live in the export's grade matrix
(`mlip.export`), not in the model.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mlip.models.base import AtomicModel
from mlip.models.mtp_basis import BasisScheme, level_scheme, times_generations


class MTP(AtomicModel):
    family = "mtp"

    def __init__(
        self,
        species: List[str],
        level: int = 16,
        cutoff: float = 5.0,
        min_dist: Optional[float] = None,
        radial_basis_size: int = 8,
        max_moments: int = 4,
        scaling: Optional[float] = None,
        basis: Optional[Dict[str, Any]] = None,
        seed: int = 0,
        init_noise: float = 0.1,
        potential_name: str = "MTP1m",
    ) -> None:
        super().__init__(species, cutoff)
        if radial_basis_size < 2:
            raise ValueError(f"radial_basis_size must be >= 2, got {radial_basis_size}")
        if min_dist is not None and not 0.0 <= float(min_dist) < float(cutoff):
            raise ValueError(f"min_dist must be in [0, cutoff={cutoff}), got {min_dist}")
        scheme = BasisScheme.from_dict(basis) if basis is not None else level_scheme(int(level), int(max_moments))
        self._scheme = scheme
        self._basis_given = basis is not None
        self.level: int = int(level)
        self.max_moments: int = int(max_moments)
        self.radial_basis_size: int = int(radial_basis_size)
        self.potential_name: str = str(potential_name) or "MTP1m"
        self.seed: int = int(seed)
        self.init_noise: float = float(init_noise)
        self._min_dist_set = min_dist is not None
        self._scaling_set = scaling is not None
        S = len(self.species)
        self.n_species: int = S
        n_mu = scheme.radial_funcs_count
        self.n_mu: int = n_mu
        self.n_alpha: int = len(scheme.alpha_moment_mapping)
        self.n_moments: int = scheme.alpha_moments_count
        self.n_basic: int = len(scheme.alpha_index_basic)
        self.n_features: int = S + self.n_alpha

        # radial basis constants (buffers: travel with state_dict and .to(dtype))
        self.register_buffer("rb_min", torch.tensor(float(min_dist) if min_dist is not None else 0.5 * cutoff,
                                                    dtype=torch.float64))
        self.register_buffer("rb_scaling", torch.tensor(float(scaling) if scaling is not None else 1.0,
                                                        dtype=torch.float64))

        # parameters
        g = torch.Generator().manual_seed(self.seed)
        eye = torch.zeros(n_mu, radial_basis_size, dtype=torch.float64)
        for m in range(n_mu):
            eye[m, min(m, radial_basis_size - 1)] = 1.0
        rc = eye.expand(S, S, n_mu, radial_basis_size).clone()
        rc = rc + self.init_noise * torch.randn(rc.shape, generator=g, dtype=torch.float64)
        self.radial_coeffs = nn.Parameter(rc)
        self.species_coeffs = nn.Parameter(torch.zeros(S, dtype=torch.float64))
        self.moment_coeffs = nn.Parameter(
            1e-2 * torch.randn(self.n_alpha, generator=g, dtype=torch.float64) / math.sqrt(self.n_alpha))

        # basic moments. Monomials x^a y^b z^c / r^(a+b+c) of all degrees 0..max_nu are built per degree
        # in MLIP's component order (slices only); a basic moment is f_mu(r) times one monomial.
        from mlip.models.mtp_basis import multisets

        self.max_nu: int = max(a + b + c for _, a, b, c in scheme.alpha_index_basic)
        mono_pos: Dict[tuple, int] = {}
        for nu in range(self.max_nu + 1):
            for comp in multisets(nu):
                mono_pos[comp] = len(mono_pos)
        basic_mu = [mu for mu, _, _, _ in scheme.alpha_index_basic]
        basic_mono = [mono_pos[(a, b, c)] for _, a, b, c in scheme.alpha_index_basic]
        if max(basic_mu) >= n_mu:
            raise ValueError(f"basic moment uses radial function {max(basic_mu)} >= {n_mu}")
        # fast layout: mu-major blocks, each = all monomials of degree 0..nu_max(mu) (MLIP's own layout)
        blocks: List[int] = []
        pos = 0
        fast = True
        for mu in range(n_mu):
            cnt = sum(1 for x in basic_mu if x == mu)
            if basic_mu[pos:pos + cnt] != [mu] * cnt or basic_mono[pos:pos + cnt] != list(range(cnt)):
                fast = False
                break
            blocks.append(cnt)
            pos += cnt
        self.fast_basic: bool = fast and pos == len(basic_mu) and all(b > 0 for b in blocks)
        self.basic_blocks: List[int] = blocks if self.fast_basic else []
        self.register_buffer("basic_mu", torch.tensor(basic_mu, dtype=torch.long))
        self.register_buffer("basic_mono", torch.tensor(basic_mono, dtype=torch.long))

        # contractions in generations
        gens = times_generations(self.n_basic, scheme.alpha_index_times)
        rows = [r for gen in gens for r in gen]
        offsets = [0]
        for gen in gens:
            offsets.append(offsets[-1] + len(gen))
        t = scheme.alpha_index_times
        self.register_buffer("times_a", torch.tensor([t[r][0] for r in rows], dtype=torch.long))
        self.register_buffer("times_b", torch.tensor([t[r][1] for r in rows], dtype=torch.long))
        self.register_buffer("times_c", torch.tensor([t[r][3] for r in rows], dtype=torch.long))
        self.register_buffer("times_m", torch.tensor([float(t[r][2]) for r in rows], dtype=torch.float64))
        self.gen_offsets: List[int] = offsets
        self.register_buffer("mapping", torch.tensor(scheme.alpha_moment_mapping, dtype=torch.long))

    # ------------------------------------------------------------------------------------ evaluation
    def edge_basic(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """Each edge's contribution to the basic moments of its centre atom, [E, n_basic]."""
        dtype = edge_vec.dtype
        i = edge_index[0]
        r = torch.linalg.norm(edge_vec, dim=1)
        inside = (r < self.cutoff).to(dtype)
        rmin = self.rb_min.to(dtype)
        rmax = self.cutoff
        ksi = (2.0 * r - (rmin + rmax)) / (rmax - rmin)
        env = self.rb_scaling.to(dtype) * (rmax - r) * (rmax - r) * inside
        cheb: List[Tensor] = [torch.ones_like(r), ksi]
        for k in range(2, self.radial_basis_size):
            cheb.append(2.0 * ksi * cheb[k - 1] - cheb[k - 2])
        q = torch.stack(cheb[: self.radial_basis_size], dim=1) * env.unsqueeze(1)  # [E, n_rb]
        if self.n_species == 1:
            f = q @ self.radial_coeffs[0, 0].transpose(0, 1)  # [E, n_mu]
        else:
            pair = species[i] * self.n_species + species[edge_index[1]]
            c = self.radial_coeffs.reshape(self.n_species * self.n_species, self.n_mu, self.radial_basis_size)
            f = (c[pair] * q.unsqueeze(1)).sum(2)
        u = edge_vec / r.unsqueeze(1)
        ux = u[:, 0:1]
        uy = u[:, 1:2]
        uz = u[:, 2:3]
        prev = torch.ones_like(ux)
        monos: List[Tensor] = [prev]
        for nu in range(1, self.max_nu + 1):
            prev = torch.cat([prev * ux, prev[:, prev.shape[1] - nu:] * uy, prev[:, prev.shape[1] - 1:] * uz], dim=1)
            monos.append(prev)
        mono = torch.cat(monos, dim=1)  # [E, n_mono], degree-major, MLIP order within a degree
        if self.fast_basic:
            parts: List[Tensor] = []
            for mu, cnt in enumerate(self.basic_blocks):
                parts.append(f[:, mu:mu + 1] * mono[:, :cnt])
            basic = torch.cat(parts, dim=1)
        else:
            basic = f.index_select(1, self.basic_mu) * mono.index_select(1, self.basic_mono)
        return basic

    def contract(self, mb: Tensor) -> Tensor:
        """Basic moments [N, n_basic] -> all moments [N, alpha_moments_count] (alpha_index_times)."""
        n_atoms = mb.shape[0]
        dtype = mb.dtype
        m = torch.cat([mb, torch.zeros((n_atoms, self.n_moments - self.n_basic), dtype=dtype,
                                       device=mb.device)], dim=1)
        tm = self.times_m.to(dtype)
        for g in range(len(self.gen_offsets) - 1):
            s = self.gen_offsets[g]
            e = self.gen_offsets[g + 1]
            a = self.times_a[s:e]
            b = self.times_b[s:e]
            prod = tm[s:e] * m.index_select(1, a) * m.index_select(1, b)
            m = m.index_add(1, self.times_c[s:e], prod)
        return m

    def moments(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """All moments (basic and contracted) per atom, [N, alpha_moments_count]."""
        basic = self.edge_basic(species, edge_index, edge_vec)
        mb = torch.zeros((species.shape[0], self.n_basic), dtype=basic.dtype,
                         device=basic.device).index_add(0, edge_index[0], basic)
        return self.contract(mb)

    @torch.jit.export
    def basis_functions(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """B_α(i), [N, n_alpha] (the moments listed in alpha_moment_mapping)."""
        return self.moments(species, edge_index, edge_vec).index_select(1, self.mapping)

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        b = self.basis_functions(species, edge_index, edge_vec)
        return self.species_coeffs[species] + b @ self.moment_coeffs

    # ------------------------------------------------------------------------------------ linear part
    @torch.jit.ignore
    def linear_parameters(self) -> List[str]:
        """The parameters the energy is linear in (for fixed radial coefficients), in the column
        order of `linear_design`; the full-batch optimisers (`mlip.train.varpro`) solve them exactly."""
        return ["species_coeffs", "moment_coeffs"]

    @torch.jit.ignore
    def linear_design(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, node_frame: Tensor,
                      n_frames: int, need_virial: bool = False):
        """Energies, forces and virials as linear maps of the linear parameters (`mlip.models.mtp_linear`)."""
        from mlip.models.mtp_linear import linear_design

        return linear_design(self, species, edge_index, edge_vec, node_frame, n_frames, need_virial)

    @torch.jit.ignore
    def linear_design_vjp(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, node_frame: Tensor,
                          edge_frame: Tensor, gE: Tensor, gF: Tensor, gW: Optional[Tensor]) -> Dict[str, Tensor]:
        """∂L/∂radial_coeffs from the cotangents of energies, forces and virials, analytically
        (`mlip.models.mtp_radial_grad`; what varpro needs at every evaluation)."""
        from mlip.models.mtp_radial_grad import radial_coeffs_vjp

        return {"radial_coeffs": radial_coeffs_vjp(self, species, edge_index, edge_vec, node_frame, edge_frame,
                                                   gE, gF, gW)}

    # ------------------------------------------------------------------------------------ grade
    @torch.jit.export
    def grade_features(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """Per-atom MaxVol rows [onehot(species), B], [N, n_species + n_alpha]."""
        b = self.basis_functions(species, edge_index, edge_vec)
        onehot = torch.nn.functional.one_hot(species, self.n_species).to(b.dtype)
        return torch.cat([onehot, b], dim=1)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Checkpoints and exports written before active sets moved to the export carry buffers
        `active_nbh` / `active_cfg`: they are dropped (the export's grade matrix holds active sets)."""
        for mode in ("nbh", "cfg"):
            state_dict.pop(prefix + f"active_{mode}", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # ------------------------------------------------------------------------------------ contract
    def config(self) -> Dict[str, Any]:
        return {
            "species": list(self.species),
            "level": self.level,
            "cutoff": self.cutoff,
            "min_dist": float(self.rb_min) if self._min_dist_set else None,
            "radial_basis_size": self.radial_basis_size,
            "max_moments": self.max_moments,
            "scaling": float(self.rb_scaling) if self._scaling_set else None,
            "basis": self._scheme.to_dict() if self._basis_given else None,
            "seed": self.seed,
            "init_noise": self.init_noise,
            "potential_name": self.potential_name,
        }

    def set_energy_bias(self, bias: Tensor) -> None:
        b = torch.as_tensor(bias, dtype=self.species_coeffs.dtype).reshape(-1)
        if b.shape[0] != self.n_species:
            raise ValueError(f"energy bias needs {self.n_species} values, got {b.shape[0]}")
        with torch.no_grad():
            self.species_coeffs.copy_(b)

    def fit_statistics(self, frames_or_species: Any, edge_index: Optional[Tensor] = None,
                       edge_vec: Optional[Tensor] = None) -> Dict[str, float]:
        """Fix min_dist (if not given) to 0.95 × the shortest distance seen (rounded down to 0.05 Å, at
        most 0.9·cutoff) and scaling (if not given) so that Σ_j scaling·(r_cut − r)² averages 1 per
        atom. Accepts frames, or a batch `(species, edge_index, edge_vec)` as the trainer passes it."""
        if isinstance(frames_or_species, Tensor):
            if edge_vec is None or edge_index is None:
                raise ValueError("fit_statistics(species, edge_index, edge_vec): edges missing")
            r = torch.linalg.norm(edge_vec.detach().double(), dim=1)
            r = r[r < self.cutoff]
            n = int(frames_or_species.shape[0])
            rmin = float(r.min()) if r.numel() else math.inf
            acc = float(((self.cutoff - r) ** 2).sum())
        else:
            from mlip.neighbors import neighbor_edges

            rmin, acc, n = math.inf, 0.0, 0
            for fr in list(frames_or_species)[:2000]:
                _, vec = neighbor_edges(fr.positions, fr.cell, fr.pbc, self.cutoff)
                n += len(fr.symbols)
                if vec.shape[0]:
                    rr = np.linalg.norm(vec, axis=1)
                    rmin = min(rmin, float(rr.min()))
                    acc += float(((self.cutoff - rr) ** 2).sum())
        out: Dict[str, float] = {}
        if not self._min_dist_set:
            md = 0.5 * self.cutoff if not math.isfinite(rmin) else math.floor(0.95 * rmin / 0.05) * 0.05
            md = min(max(md, 0.0), 0.9 * self.cutoff)
            with torch.no_grad():
                self.rb_min.fill_(md)
            self._min_dist_set = True
            out["min_dist"] = md
        if not self._scaling_set:
            sc = n / acc if acc > 0 else 1.0
            with torch.no_grad():
                self.rb_scaling.fill_(sc)
            self._scaling_set = True
            out["scaling"] = sc
        return out

    def extra_metadata(self) -> Dict[str, Any]:
        return {"mtp": self.mtp_dict()}

    # ------------------------------------------------------------------------------------ .mtp I/O
    def mtp_dict(self) -> Dict[str, Any]:
        """Everything an MLIP-2 `.mtp` file holds (plus species names), JSON-serialisable."""
        return {
            "potential_name": self.potential_name,
            "species": list(self.species),
            "species_count": self.n_species,
            "scaling": float(self.rb_scaling),
            "min_dist": float(self.rb_min),
            "max_dist": float(self.cutoff),
            "radial_basis_size": self.radial_basis_size,
            "radial_funcs_count": self.n_mu,
            "radial_coeffs": self.radial_coeffs.detach().double().tolist(),
            "species_coeffs": self.species_coeffs.detach().double().tolist(),
            "moment_coeffs": self.moment_coeffs.detach().double().tolist(),
            "level": self.level,
            **self._scheme.to_dict(),
        }

    @classmethod
    def from_mtp_dict(cls, d: Dict[str, Any], species: Optional[Sequence[str]] = None,
                      **overrides: Any) -> "MTP":
        names = list(species) if species is not None else d.get("species")
        n_sp = int(d.get("species_count", len(names) if names else 1))
        if not names:
            raise ValueError(f"the potential has {n_sp} species but no element names: pass species=[...] "
                             f"(`--species` on the command line) in type order 0..{n_sp - 1}")
        if len(names) != n_sp:
            raise ValueError(f"the potential has species_count = {n_sp} but {len(names)} species names were "
                             f"given: {names}")
        scheme = BasisScheme.from_dict(d)
        levels = d.get("level")
        kw: Dict[str, Any] = dict(
            species=names,
            level=int(levels) if levels else _scheme_level(scheme),
            cutoff=float(d["max_dist"]),
            min_dist=float(d["min_dist"]),
            radial_basis_size=int(d["radial_basis_size"]),
            # an untrained template without a scaling line: let fit_statistics choose it
            scaling=(float(d.get("scaling", 1.0)) if (d.get("radial_coeffs") is not None
                                                       or d.get("scaling_given", True)) else None),
            basis=scheme.to_dict(),
            potential_name=str(d.get("potential_name", "MTP1m")),
        )
        kw.update(overrides)
        model = cls(**kw)
        rfc = int(d.get("radial_funcs_count", model.n_mu))
        if rfc != model.n_mu:
            raise ValueError(f"radial_funcs_count = {rfc} but the basic moments use {model.n_mu} radial functions")
        with torch.no_grad():
            if d.get("radial_coeffs") is not None:
                model.radial_coeffs.copy_(torch.tensor(d["radial_coeffs"], dtype=torch.float64))
            if d.get("species_coeffs") is not None:
                model.species_coeffs.copy_(torch.tensor(d["species_coeffs"], dtype=torch.float64))
            if d.get("moment_coeffs") is not None:
                model.moment_coeffs.copy_(torch.tensor(d["moment_coeffs"], dtype=torch.float64))
        return model

    @classmethod
    def from_mtp_file(cls, path: str, species: Optional[Sequence[str]] = None, **overrides: Any) -> "MTP":
        """Read an MLIP-2 `.mtp` (trained, or an untrained template: missing coefficients are
        initialised like `MTP(...)`: radial ≈ identity + noise (seed), moment coefficients small random,
        species energies 0). `species` = element names in type order (needed unless the file's
        `potential_tag` carries them, as files written by mlip do); `overrides` replace constructor
        arguments (e.g. min_dist, seed)."""
        from mlip.io.mtp_file import read_mtp

        return cls.from_mtp_dict(read_mtp(path), species=species, **overrides)

    def to_mtp_file(self, path: str) -> None:
        from mlip.io.mtp_file import write_mtp

        write_mtp(path, self.mtp_dict())

    @classmethod
    def from_export(cls, path: str) -> "MTP":
        """Rebuild the Python model from an MTP export's metadata (float64 coefficients; an active set
        in the export stays there: `mlip.active.grade.read_active_set`)."""
        from mlip.io.export_metadata import read_metadata

        return cls.from_metadata(read_metadata(path), source=path)

    @classmethod
    def from_metadata(cls, meta: Dict[str, Any], source: str = "metadata") -> "MTP":
        if meta.get("family") != "mtp" or "mtp" not in meta:
            raise ValueError(f"'{source}' is not an MTP export (family {meta.get('family')!r})")
        cfg = dict(meta.get("config", {}))
        d = dict(meta["mtp"])
        model = cls.from_mtp_dict(d, species=meta.get("species") or d.get("species"))
        # keep the original constructor settings that are not part of the .mtp
        model.level = int(cfg.get("level", model.level))
        model.max_moments = int(cfg.get("max_moments", model.max_moments))
        model.seed = int(cfg.get("seed", model.seed))
        if cfg.get("basis") is None and cfg.get("level") is not None:
            ref = level_scheme(int(cfg["level"]), int(cfg.get("max_moments", 4)))
            if ref.to_dict() == model._scheme.to_dict():
                model._basis_given = False
        return model

    @classmethod
    def from_file(cls, path: str, species: Optional[Sequence[str]] = None, **overrides: Any) -> "MTP":
        """`.mtp` (MLIP-2, trained or untrained) or an mlip export of an MTP. The trainer's
        `model: {family: mtp, from_file: X.mtp, species: [...]}` calls this."""
        if str(path).endswith(".mtp"):
            return cls.from_mtp_file(path, species=species, **overrides)
        model = cls.from_export(path)
        if species is not None and list(species) != model.species:
            raise ValueError(f"'{path}' has species {model.species}, not {list(species)}")
        return model


def _scheme_level(scheme: BasisScheme) -> int:
    """Level of the highest basis function of a scheme (levels of moments propagate through times)."""
    lev: Dict[int, int] = {}
    for k, (mu, a, b, c) in enumerate(scheme.alpha_index_basic):
        lev[k] = 2 + 4 * mu + a + b + c
    for a, b, m, c in scheme.alpha_index_times:
        lev[c] = max(lev.get(c, 0), lev[a] + lev[b])
    return max(lev[s] for s in scheme.alpha_moment_mapping)

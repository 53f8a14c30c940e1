"""Moment-tensor basis: enumeration of the scalar basis functions B_α of a level and their evaluation
scheme in MLIP-2's `.mtp` vocabulary (`alpha_index_basic`, `alpha_index_times`, `alpha_moment_mapping`).

Moments (Shapeev 2016):  M_{μ,ν}(i) = Σ_j f_μ(r_ij) r̂_ij^{⊗ν},  lev M_{μ,ν} = 2 + 4μ + ν.
A basis function is a full contraction of a product of moments to a scalar. Such a contraction is a
multigraph: one vertex per moment (degree ν), one edge per contracted index pair, no loops (a
self-contraction r̂·r̂ = 1 only reproduces a lower moment). Its level is the sum of the vertex levels.
MLIP-2's templates (`02.mtp` … `28.mtp`) contain every such graph, connected or not (products of scalars
are included), with at most four moments, up to isomorphism. Counts (one species; the count does not
depend on the number of species):

    level  2  4  6  8  10  12  14  16   18   20   22   24    26    28
    B_α    1  2  5  9  16  29  52  92  163  288  500  864  1466  2455

(level 16 = 92 is the `alpha_scalar_moments` of MLIP-2's level-16 potentials, and 6 → 5, 8 → 9 match the
shipped templates.)

Evaluation scheme. Every moment tensor is stored as its independent components: a symmetric rank-ν
tensor by multisets (a1, a2, a3), a1+a2+a3 = ν, in MLIP's order (a1 descending, then a2 descending) —
the component x^a1 y^a2 z^a3 / r^ν. An intermediate of a contraction tree is a subgraph with some free
indices left on each of its vertices; it is symmetric within each vertex's free indices, so it is
stored by one multiset per vertex that has free indices. Contracting two intermediates over the edge
bundles between them sums over multisets γ of each bundle with weight multinomial(γ) (both sides are
symmetric within a bundle), which gives integer `alpha_index_times` entries {a, b, m, c}: M_c += m·M_a·M_b.
Intermediates are canonicalised and shared between basis functions, and each basis function takes the
cheapest contraction tree given what already exists. The scheme is exact: each B_α equals the full
index sum of its graph, the same number MLIP-2 computes for the same graph.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, List, Optional, Sequence, Tuple

Label = Tuple[int, int]  # (mu, nu)
Graph = Tuple[Tuple[Label, ...], Tuple[int, ...]]  # vertex labels, edge multiplicities over pairs (i<j)


MIN_LEVEL, MAX_LEVEL = 2, 28  # the enumeration grows steeply beyond 28 (2455 functions, seconds; 99 never ends)


def moment_level(mu: int, nu: int) -> int:
    return 2 + 4 * mu + nu


@lru_cache(maxsize=None)
def multisets(n: int) -> Tuple[Tuple[int, int, int], ...]:
    """Components (a1, a2, a3) of a symmetric rank-n tensor, a1 + a2 + a3 = n, in MLIP's order."""
    return tuple((a, b, n - a - b) for a in range(n, -1, -1) for b in range(n - a, -1, -1))


def multinomial(g: Tuple[int, int, int]) -> int:
    return math.factorial(sum(g)) // (math.factorial(g[0]) * math.factorial(g[1]) * math.factorial(g[2]))


# ---------------------------------------------------------------------------------------------- graphs
def _pairs(n: int) -> List[Tuple[int, int]]:
    return list(itertools.combinations(range(n), 2))


def _canonical(labels: Sequence[Label], kmat: Dict[Tuple[int, int], int],
               extra: Optional[Sequence[int]] = None) -> Tuple[tuple, Tuple[int, ...]]:
    """Canonical key over vertex permutations; returns (key, perm) with perm[new] = old."""
    n = len(labels)
    best = None
    best_p: Tuple[int, ...] = tuple(range(n))
    for p in itertools.permutations(range(n)):
        lab = tuple(labels[p[a]] for a in range(n))
        if best is not None and lab > best[0]:
            continue
        mat = tuple(kmat.get((p[a], p[b]), 0) for a, b in _pairs(n))
        ext = tuple(extra[p[a]] for a in range(n)) if extra is not None else ()
        key = (lab, mat, ext)
        if best is None or key < best:
            best, best_p = key, p
    assert best is not None
    return best, best_p


def enumerate_graphs(level: int, max_moments: int = 4) -> List[Graph]:
    """All contraction graphs (scalar basis functions) with level <= `level`, up to isomorphism.

    Order: by number of moments, then level, then the canonical key (deterministic)."""
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValueError(f"MTP level must be in {MIN_LEVEL}..{MAX_LEVEL} (MLIP-2's template family), got {level}")
    labels = [(mu, nu) for mu in range(level) for nu in range(level) if moment_level(mu, nu) <= level]
    found: Dict[tuple, int] = {}
    for n in range(1, max_moments + 1):
        pairs = _pairs(n)
        for verts in itertools.combinations_with_replacement(labels, n):
            if sum(moment_level(m, v) for m, v in verts) > level:
                continue
            degs = [v for _, v in verts]
            if sum(degs) % 2:
                continue

            def rec(pi: int, rem: List[int], ks: List[int]):
                if pi == len(pairs):
                    if all(r == 0 for r in rem):
                        yield tuple(ks)
                    return
                i, j = pairs[pi]
                # remaining pairs touching i: if this is the last pair for i, it must absorb rem[i]
                for k in range(0, min(rem[i], rem[j]) + 1):
                    rem[i] -= k
                    rem[j] -= k
                    yield from rec(pi + 1, rem, ks + [k])
                    rem[i] += k
                    rem[j] += k

            for ks in rec(0, list(degs), []):
                kmat = {}
                for (i, j), k in zip(pairs, ks):
                    if k:
                        kmat[(i, j)] = k
                        kmat[(j, i)] = k
                key, _ = _canonical(verts, kmat)
                if key not in found:
                    found[key] = sum(moment_level(m, v) for m, v in verts)
    out = sorted(found, key=lambda key: (len(key[0]), found[key], key))
    return [(key[0], key[1]) for key in out]


def graph_level(g: Graph) -> int:
    return sum(moment_level(m, v) for m, v in g[0])


# ---------------------------------------------------------------------------------------------- scheme
@dataclass
class BasisScheme:
    """A moment basis in MLIP's vocabulary (see module docstring)."""

    alpha_index_basic: List[Tuple[int, int, int, int]]  # (mu, a1, a2, a3)
    alpha_index_times: List[Tuple[int, int, int, int]]  # (a, b, m, c): M_c += m M_a M_b
    alpha_moment_mapping: List[int]  # moments that are basis functions
    alpha_moments_count: int
    levels: List[int] = field(default_factory=list)  # level of each basis function (if known)

    @property
    def radial_funcs_count(self) -> int:
        return 1 + max(b[0] for b in self.alpha_index_basic)

    @property
    def max_nu(self) -> int:
        return max(b[1] + b[2] + b[3] for b in self.alpha_index_basic)

    def to_dict(self) -> Dict[str, list]:
        return {
            "alpha_index_basic": [list(x) for x in self.alpha_index_basic],
            "alpha_index_times": [list(x) for x in self.alpha_index_times],
            "alpha_moment_mapping": list(self.alpha_moment_mapping),
            "alpha_moments_count": int(self.alpha_moments_count),
        }

    @classmethod
    def from_dict(cls, d: Dict[str, list]) -> "BasisScheme":
        s = cls([tuple(int(v) for v in x) for x in d["alpha_index_basic"]],  # type: ignore[misc]
                [tuple(int(v) for v in x) for x in d["alpha_index_times"]],  # type: ignore[misc]
                [int(x) for x in d["alpha_moment_mapping"]],
                int(d.get("alpha_moments_count", 0)) or 0)
        if not s.alpha_moments_count:
            s.alpha_moments_count = 1 + max([len(s.alpha_index_basic) - 1] + [t[3] for t in s.alpha_index_times])
        s.validate()
        return s

    def validate(self) -> None:
        nb = len(self.alpha_index_basic)
        if nb == 0:
            raise ValueError("MTP basis: alpha_index_basic is empty")
        for k, (mu, a, b, c) in enumerate(self.alpha_index_basic):
            if min(mu, a, b, c) < 0:
                raise ValueError(f"MTP basis: alpha_index_basic[{k}] = {(mu, a, b, c)} has a negative entry")
        for k, (a, b, m, c) in enumerate(self.alpha_index_times):
            if not (0 <= a < c and 0 <= b < c and nb <= c < self.alpha_moments_count):
                raise ValueError(f"MTP basis: alpha_index_times[{k}] = {(a, b, m, c)} is out of order or out of "
                                 f"range (moments {self.alpha_moments_count}, basic {nb})")
        for k, s in enumerate(self.alpha_moment_mapping):
            if not 0 <= s < self.alpha_moments_count:
                raise ValueError(f"MTP basis: alpha_moment_mapping[{k}] = {s} out of range")


class _SchemeBuilder:
    def __init__(self) -> None:
        self.basic: List[Tuple[int, int, int, int]] = []
        self.basic_index: Dict[Tuple[int, int, int, int], int] = {}
        # intermediate key -> component moment indices (in component order)
        self.inter: Dict[tuple, List[int]] = {}
        self.times: List[Tuple[int, int, int, int]] = []
        self.n_moments = 0

    # intermediates are (labels, kmat over its own vertices, free counts) in canonical order
    @staticmethod
    def key_of(labels, kmat, free) -> Tuple[tuple, Tuple[int, ...]]:
        return _canonical(labels, kmat, free)

    @staticmethod
    def components(free: Sequence[int]) -> List[Tuple[Tuple[int, int, int], ...]]:
        groups = [multisets(s) for s in free if s > 0]
        return [tuple(c) for c in itertools.product(*groups)]

    def cost(self, labels, kmat, free, split=None) -> int:
        """Terms needed to create this intermediate from its best split (0 if it exists)."""
        return self._best(tuple(labels), tuple(sorted(kmat.items())), tuple(free))[0]

    @lru_cache(maxsize=None)
    def _best(self, labels, kitems, free):
        kmat = dict(kitems)
        key, _ = self.key_of(labels, kmat, free)
        if key in self.inter:
            return 0, None
        n = len(labels)
        if n == 1:
            return 0, None  # basic moments are free (they are registered lazily)
        best = None
        verts = list(range(n))
        for r in range(1, n // 2 + 1):
            for xs in itertools.combinations(verts, r):
                ys = tuple(v for v in verts if v not in xs)
                if r * 2 == n and xs > ys:
                    continue
                cx, sub_x = self._sub(labels, kmat, free, xs)
                cy, sub_y = self._sub(labels, kmat, free, ys)
                terms = self._n_terms(labels, kmat, free, xs, ys)
                c = cx + cy + terms
                if best is None or c < best[0]:
                    best = (c, (xs, ys))
        return best

    def _sub(self, labels, kmat, free, xs):
        lab = tuple(labels[v] for v in xs)
        km = {}
        fr = []
        for a, u in enumerate(xs):
            out = free[u]
            for w in range(len(labels)):
                if w not in xs:
                    out += kmat.get((u, w), 0)
            fr.append(out)
            for b, w in enumerate(xs):
                if (u, w) in kmat:
                    km[(a, b)] = kmat[(u, w)]
        return self._best(lab, tuple(sorted(km.items())), tuple(fr))[0], (lab, km, tuple(fr))

    def _n_terms(self, labels, kmat, free, xs, ys) -> int:
        n = 1
        for u in xs + ys:
            if free[u] > 0:
                n *= len(multisets(free[u]))
        for u in xs:
            for w in ys:
                k = kmat.get((u, w), 0)
                if k:
                    n *= len(multisets(k))
        return n

    # ---------------------------------------------------------------- realisation
    def basic_moment(self, mu: int, comp: Tuple[int, int, int]) -> int:
        key = (mu,) + tuple(comp)
        return self.basic_index[key]  # type: ignore[index]

    def realise(self, labels, kmat, free) -> Tuple[List[int], Tuple[int, ...]]:
        """Moment indices of the components of this intermediate, in the order of *these* vertices.

        Returns (indices, perm) where components are enumerated in the canonical vertex order `perm`
        (perm[new] = old vertex)."""
        labels = tuple(labels)
        key, perm = self.key_of(labels, kmat, free)
        if len(labels) == 1:
            mu, nu = labels[0]
            return [self.basic_moment(mu, c) for c in multisets(free[0])], perm
        if key in self.inter:
            return self.inter[key], perm
        _, split = self._best(labels, tuple(sorted(kmat.items())), tuple(free))
        xs, ys = split
        _, (lx, kx, fx) = self._sub(labels, kmat, free, xs)
        _, (ly, ky, fy) = self._sub(labels, kmat, free, ys)
        ix, px = self.realise(lx, kx, fx)
        iy, py = self.realise(ly, ky, fy)
        # component lookup tables of X and Y keyed by per-(original)-vertex multisets
        def table(indices, perm_sub, fr_sub, verts):
            order = [verts[p] for p in perm_sub]  # original vertex for each canonical position
            frees = [fr_sub[p] for p in perm_sub]
            t = {}
            for idx, comp in zip(indices, self.components(frees)):
                it = iter(comp)
                d = {}
                for v, s in zip(order, frees):
                    if s > 0:
                        d[v] = next(it)
                t[tuple(sorted(d.items()))] = idx
            return t
        tx = table(ix, px, fx, xs)
        ty = table(iy, py, fy, ys)
        # components of Z (this intermediate) in canonical order
        zorder = list(perm)
        zfree = [free[p] for p in perm]
        base = self.n_moments
        indices = []
        comps = self.components(zfree)
        self.n_moments += len(comps)
        bundles = [(u, w, kmat.get((u, w), 0)) for u in xs for w in ys if kmat.get((u, w), 0)]
        for ci, comp in enumerate(comps):
            c_idx = base + ci
            indices.append(c_idx)
            it = iter(comp)
            rho = {}
            for v, s in zip(zorder, zfree):
                if s > 0:
                    rho[v] = next(it)
            acc: Dict[Tuple[int, int], int] = {}
            for gam in itertools.product(*[multisets(k) for _, _, k in bundles]):
                ax = {u: list(rho.get(u, (0, 0, 0))) for u in xs}
                ay = {w: list(rho.get(w, (0, 0, 0))) for w in ys}
                m = 1
                for (u, w, _), g in zip(bundles, gam):
                    for d in range(3):
                        ax[u][d] += g[d]
                        ay[w][d] += g[d]
                    m *= multinomial(g)
                kx_ = tuple(sorted((u, tuple(v)) for u, v in ax.items() if sum(v) > 0 or fx[xs.index(u)] > 0))
                ky_ = tuple(sorted((w, tuple(v)) for w, v in ay.items() if sum(v) > 0 or fy[ys.index(w)] > 0))
                a = tx[kx_]
                b = ty[ky_]
                pair = (min(a, b), max(a, b))
                acc[pair] = acc.get(pair, 0) + m
            for (a, b), m in acc.items():
                self.times.append((a, b, m, c_idx))
        self.inter[key] = indices
        return indices, perm


def build_scheme(graphs: Sequence[Graph]) -> BasisScheme:
    """Evaluation scheme (MLIP vocabulary) for the given basis graphs, in the given order."""
    b = _SchemeBuilder()
    # basic moments: every (mu, nu) that occurs, all components, sorted like MLIP (mu, nu, component)
    need = sorted({lab for g in graphs for lab in g[0]})
    max_nu: Dict[int, int] = {}
    for mu, nu in need:
        max_nu[mu] = max(max_nu.get(mu, -1), nu)
    basic = []
    for mu in sorted(max_nu):
        for nu in range(0, max_nu[mu] + 1):
            if (mu, nu) in need:
                for c in multisets(nu):
                    basic.append((mu,) + c)
    b.basic = basic  # type: ignore[assignment]
    b.basic_index = {x: i for i, x in enumerate(basic)}
    b.n_moments = len(basic)
    mapping = []
    for labels, ks in graphs:
        n = len(labels)
        kmat = {}
        for (i, j), k in zip(_pairs(n), ks):
            if k:
                kmat[(i, j)] = k
                kmat[(j, i)] = k
        b._best.cache_clear()
        idx, _ = b.realise(labels, kmat, tuple([0] * n))
        assert len(idx) == 1
        mapping.append(idx[0])
    # times sorted by target (already in creation order: parents before children)
    scheme = BasisScheme(list(b.basic), list(b.times), mapping, b.n_moments,
                         levels=[graph_level(g) for g in graphs])
    scheme.validate()
    return scheme


_SCHEME_CACHE: Dict[Tuple[int, int], BasisScheme] = {}


def level_scheme(level: int, max_moments: int = 4) -> BasisScheme:
    """The basis of MLIP-2's `LL.mtp` template family for `level` (see module docstring)."""
    key = (int(level), int(max_moments))
    if key not in _SCHEME_CACHE:
        _SCHEME_CACHE[key] = build_scheme(enumerate_graphs(level, max_moments))
    s = _SCHEME_CACHE[key]
    return BasisScheme(list(s.alpha_index_basic), list(s.alpha_index_times), list(s.alpha_moment_mapping),
                       s.alpha_moments_count, list(s.levels))


def times_generations(n_basic: int, times: Sequence[Tuple[int, int, int, int]]) -> List[List[int]]:
    """Group `alpha_index_times` rows into generations that can be evaluated in parallel.

    A row belongs to generation g = 1 + max(gen(a), gen(b)) where gen of a moment is the largest
    generation of any row writing it (basic moments: 0). Rows of one generation only read moments of
    earlier generations, so summing a whole generation with one `index_add` equals MLIP's sequential
    file-order evaluation (provided, as MLIP's own files do, that every row reading M_c comes after all
    rows writing M_c — checked here)."""
    last_write: Dict[int, int] = {}
    for r, (a, b, m, c) in enumerate(times):
        last_write[c] = r
    gen_m: Dict[int, int] = {}
    for r, (a, b, m, c) in enumerate(times):
        for x in (a, b):
            if x >= n_basic and last_write.get(x, -1) > r:
                raise ValueError(f"alpha_index_times row {r} reads moment {x} before all its terms are summed")
        gen_m[c] = max(gen_m.get(c, 0), 1 + max(gen_m.get(a, 0), gen_m.get(b, 0)))
    n_gen = max(gen_m.values()) if gen_m else 0
    out: List[List[int]] = [[] for _ in range(n_gen)]
    for r, (a, b, m, c) in enumerate(times):
        out[gen_m[c] - 1].append(r)
    return out


def template_dict(level: int, species_count: int = 1, min_dist: float = 2.0, max_dist: float = 5.0,
                  radial_basis_size: int = 8, max_moments: int = 4) -> Dict[str, Any]:
    """An untrained template like MLIP-2's `LL.mtp`, as the dict `mlip.io.mtp_file.write_mtp` writes
    (no coefficients; the basis of `level_scheme(level, max_moments)`)."""
    s = level_scheme(level, max_moments)
    return {"potential_name": "MTP1m", "species_count": species_count, "species": None, "scaling": 1.0,
            "min_dist": min_dist, "max_dist": max_dist, "radial_basis_size": radial_basis_size,
            "radial_funcs_count": s.radial_funcs_count, "radial_coeffs": None, "species_coeffs": None,
            "moment_coeffs": None, **s.to_dict()}

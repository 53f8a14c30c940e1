"""MLIP-2 `.mtp` potential files (format `MTP` / `version = 1.1.0`), trained or untrained templates.

`read_mtp(path) -> dict` and `write_mtp(path, dict)` use one plain dictionary (the same one
`MTP.mtp_dict()` returns and an MTP export carries in its metadata under "mtp"):

    potential_name, species_count, species (element names or None), scaling (top-level × the radial
    block's, as MLIP-2 multiplies them), min_dist, max_dist, radial_basis_size, radial_funcs_count,
    radial_coeffs [S][S][n_mu][n_rb] or None, alpha_moments_count, alpha_index_basic [[mu,a,b,c]],
    alpha_index_times [[a,b,m,c]], alpha_moment_mapping [..], species_coeffs [S] or None,
    moment_coeffs [n_alpha] or None.

Semantics are in `mlip.models.mtp`. MLIP-2's reader ignores the rest of the `potential_tag` line, so
mlip writes the element names there (`potential_tag = species: Mo Si`) and reads them back; files
from MLIP-2 have an empty tag, and the names must then be given by the caller. Numbers are written
with 17 significant digits so that write → read is exact.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from mlip.io.safe_write import atomic_write

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][-+]?\d+)?"


class MTPFileError(ValueError):
    pass


def _numbers(text: str) -> List[float]:
    return [float(x.replace("d", "e").replace("D", "e")) for x in re.findall(_NUM, text)]


def _ints(text: str, where: str) -> List[int]:
    vals = re.findall(r"[-+]?\d+", text)
    return [int(v) for v in vals]


def read_mtp(path: str) -> Dict[str, Any]:
    try:
        with open(path, "r") as fh:
            lines = fh.read().replace("\r", "").split("\n")
    except FileNotFoundError:
        raise FileNotFoundError(f"MTP file '{path}' does not exist") from None
    if not lines or lines[0].strip() != "MTP":
        raise MTPFileError(f"{path}: line 1 must be 'MTP' (an MLIP-2 moment tensor potential), got "
                           f"{lines[0].strip()[:40]!r}" if lines else f"{path}: empty file")
    d: Dict[str, Any] = {"species": None, "radial_coeffs": None, "species_coeffs": None,
                         "moment_coeffs": None}
    top_scaling = 1.0
    rb_scaling = 1.0
    scaling_given = False
    in_radial = False
    k = 1
    n = len(lines)

    def err(lineno: int, msg: str) -> MTPFileError:
        return MTPFileError(f"{path}:{lineno + 1}: {msg}")

    def value_block(start: int, first: str) -> (str, int):
        """Text of a {...} value possibly spanning lines; returns (text, next line index)."""
        text = first
        j = start
        while text.count("{") > text.count("}"):
            j += 1
            if j >= n:
                raise err(start, "unbalanced braces")
            text += " " + lines[j]
        return text, j + 1

    while k < n:
        raw = lines[k]
        line = raw.strip()
        if not line:
            k += 1
            continue
        if line == "radial_coeffs":
            S = int(d.get("species_count", 0))
            nmu = int(d.get("radial_funcs_count", 0))
            nrb = int(d.get("radial_basis_size", 0))
            if not (S and nmu and nrb):
                raise err(k, "radial_coeffs before species_count / radial_funcs_count / radial_basis_size")
            rc = [[[[0.0] * nrb for _ in range(nmu)] for _ in range(S)] for _ in range(S)]
            k += 1
            for _ in range(S * S):
                while k < n and not lines[k].strip():
                    k += 1
                m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", lines[k] if k < n else "")
                if not m:
                    raise err(k, f"expected a species pair 'a-b' in radial_coeffs, got {lines[k].strip()[:40]!r}"
                              if k < n else "file ends inside radial_coeffs")
                a, b = int(m.group(1)), int(m.group(2))
                if a >= S or b >= S:
                    raise err(k, f"species pair {a}-{b} out of range (species_count = {S})")
                k += 1
                for mu in range(nmu):
                    text, k = value_block(k, lines[k] if k < n else "")
                    vals = _numbers(text)
                    if len(vals) != nrb:
                        raise err(k - 1, f"radial coefficients {a}-{b} function {mu}: {len(vals)} numbers, "
                                  f"expected radial_basis_size = {nrb}")
                    rc[a][b][mu] = vals
            d["radial_coeffs"] = rc
            continue
        if "=" not in line:
            raise err(k, f"cannot parse {line[:60]!r}")
        key, val = (x.strip() for x in line.split("=", 1))
        if key == "version":
            if val != "1.1.0":
                raise err(k, f"unsupported .mtp version {val!r} (only 1.1.0)")
        elif key == "potential_name":
            d["potential_name"] = val.split()[0] if val.split() else "MTP1m"
        elif key == "scaling":
            scaling_given = True
            if in_radial:
                rb_scaling = float(val)
            else:
                top_scaling = float(val)
        elif key == "species_count":
            d["species_count"] = int(val)
        elif key == "potential_tag":
            m = re.search(r"species\s*[:=]\s*(.+)$", val)
            if m:
                d["species"] = m.group(1).replace(",", " ").split()
        elif key == "radial_basis_type":
            if val != "RBChebyshev":
                raise err(k, f"radial basis {val!r} is not supported (only RBChebyshev)")
            in_radial = True
        elif key in ("min_dist", "max_dist"):
            d[key] = float(val)
        elif key in ("radial_basis_size", "radial_funcs_count", "alpha_moments_count",
                     "alpha_index_basic_count", "alpha_index_times_count", "alpha_scalar_moments"):
            d[key] = int(val)
        elif key in ("alpha_index_basic", "alpha_index_times"):
            in_radial = False
            text, k = value_block(k, val)
            v = _ints(text, key)
            if len(v) % 4:
                raise err(k - 1, f"{key} must be groups of 4 integers")
            d[key] = [v[i:i + 4] for i in range(0, len(v), 4)]
            continue
        elif key == "alpha_moment_mapping":
            text, k = value_block(k, val)
            d[key] = _ints(text, key)
            continue
        elif key in ("species_coeffs", "moment_coeffs"):
            text, k = value_block(k, val)
            d[key] = _numbers(text)
            continue
        else:
            raise err(k, f"unknown key {key!r}")
        k += 1

    for key in ("species_count", "min_dist", "max_dist", "radial_basis_size", "radial_funcs_count",
                "alpha_index_basic", "alpha_index_times", "alpha_moment_mapping"):
        if key not in d:
            raise MTPFileError(f"{path}: missing '{key}'")
    checks = [("alpha_index_basic_count", len(d["alpha_index_basic"])),
              ("alpha_index_times_count", len(d["alpha_index_times"])),
              ("alpha_scalar_moments", len(d["alpha_moment_mapping"]))]
    for key, got in checks:
        if key in d and d[key] != got:
            raise MTPFileError(f"{path}: {key} = {d[key]} but {got} entries are listed")
    if d.get("species_coeffs") is not None and len(d["species_coeffs"]) != d["species_count"]:
        raise MTPFileError(f"{path}: species_coeffs has {len(d['species_coeffs'])} values, species_count = "
                           f"{d['species_count']}")
    if d.get("moment_coeffs") is not None and len(d["moment_coeffs"]) != len(d["alpha_moment_mapping"]):
        raise MTPFileError(f"{path}: moment_coeffs has {len(d['moment_coeffs'])} values, alpha_scalar_moments = "
                           f"{len(d['alpha_moment_mapping'])}")
    if d["species"] is not None and len(d["species"]) != d["species_count"]:
        d["species"] = None
    if not d["min_dist"] < d["max_dist"]:
        raise MTPFileError(f"{path}: min_dist {d['min_dist']} must be below max_dist {d['max_dist']}")
    d["scaling"] = top_scaling * rb_scaling
    d["scaling_given"] = scaling_given
    d.setdefault("potential_name", "MTP1m")
    d.setdefault("alpha_moments_count",
                 1 + max([len(d["alpha_index_basic"]) - 1] + [t[3] for t in d["alpha_index_times"]]))
    return d


def _f(x: float) -> str:
    return f"{float(x):.16e}"


def write_mtp(path: str, d: Dict[str, Any], untrained: bool = False) -> None:
    """Write an MLIP-2 `.mtp`. `untrained=True` (or missing coefficients) writes a template."""
    species: Optional[List[str]] = d.get("species")
    S = int(d.get("species_count", len(species) if species else 1))
    out: List[str] = ["MTP", "version = 1.1.0", f"potential_name = {d.get('potential_name', 'MTP1m') or 'MTP1m'}"]
    scaling = float(d.get("scaling", 1.0))
    if scaling != 1.0:
        out.append(f"scaling = {_f(scaling)}")
    out.append(f"species_count = {S}")
    out.append("potential_tag = " + (("species: " + " ".join(species)) if species else ""))
    out.append("radial_basis_type = RBChebyshev")
    out.append(f"\tmin_dist = {_f(d['min_dist'])}")
    out.append(f"\tmax_dist = {_f(d['max_dist'])}")
    out.append(f"\tradial_basis_size = {int(d['radial_basis_size'])}")
    out.append(f"\tradial_funcs_count = {int(d['radial_funcs_count'])}")
    rc = d.get("radial_coeffs")
    if rc is not None and not untrained:
        out.append("\tradial_coeffs")
        for a in range(S):
            for b in range(S):
                out.append(f"\t\t{a}-{b}")
                for row in rc[a][b]:
                    out.append("\t\t\t{" + ", ".join(_f(x) for x in row) + "}")
    basic = d["alpha_index_basic"]
    times = d["alpha_index_times"]
    mapping = d["alpha_moment_mapping"]
    n_mom = d.get("alpha_moments_count") or 1 + max([len(basic) - 1] + [t[3] for t in times])
    out.append(f"alpha_moments_count = {int(n_mom)}")
    out.append(f"alpha_index_basic_count = {len(basic)}")
    out.append("alpha_index_basic = {" + ", ".join("{" + ", ".join(str(int(v)) for v in x) + "}" for x in basic) + "}")
    out.append(f"alpha_index_times_count = {len(times)}")
    out.append("alpha_index_times = {" + ", ".join("{" + ", ".join(str(int(v)) for v in x) + "}" for x in times) + "}")
    out.append(f"alpha_scalar_moments = {len(mapping)}")
    out.append("alpha_moment_mapping = {" + ", ".join(str(int(v)) for v in mapping) + "}")
    if not untrained and d.get("species_coeffs") is not None and d.get("moment_coeffs") is not None:
        out.append("species_coeffs = {" + ", ".join(_f(x) for x in d["species_coeffs"]) + "}")
        out.append("moment_coeffs = {" + ", ".join(_f(x) for x in d["moment_coeffs"]) + "}")
    atomic_write(path, "\n".join(out) + "\n")

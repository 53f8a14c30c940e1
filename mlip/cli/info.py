"""`mlip info MODEL.pt`: what an export is — family, species, cutoff and interaction range, dtype,
number of parameters, what it was trained on, whether it carries an active set — as a table or as
`--json`, without Python."""
from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List


def export_info(path: str) -> Dict[str, Any]:
    """The export's metadata, with `n_parameters` counted from the weights when an older export did
    not record it."""
    from mlip.io.export_metadata import read_metadata

    meta = read_metadata(path)
    if "n_parameters" not in meta:
        import torch

        module = torch.jit.load(path, map_location="cpu")
        meta["n_parameters"] = int(sum(p.numel() for p in module.parameters()))
    return meta


def _data_line(d: Dict[str, Any]) -> str:
    els = ", ".join(f"{k} {v}" for k, v in d.get("elements", {}).items())
    lab = d.get("labelled", {})
    line = (f"{d.get('n_frames', 0)} frames, {d.get('n_atoms', 0)} atoms ({els}); labels: energy "
            f"{lab.get('energy', 0)}, forces {lab.get('forces', 0)}, virial {lab.get('virial', 0)}")
    if d.get("groups"):
        line += "; groups: " + ", ".join(f"{g} {n}" for g, n in d["groups"].items())
    return line


def format_info(path: str, meta: Dict[str, Any]) -> str:
    """The human-readable table of `mlip info`."""
    rows: List[tuple] = [
        ("file", path),
        ("family", meta.get("family", "?")),
        ("species", " ".join(meta.get("species", []))),
        ("cutoff", f"{meta['cutoff']:g} Å" if "cutoff" in meta else "?"),
        ("interaction range", f"{meta['interaction_range']:g} Å" if "interaction_range" in meta else "?"),
        ("dtype", meta.get("dtype", "?")),
        ("units", meta.get("units", "?")),
        ("parameters", f"{meta['n_parameters']:,}"),
        ("format / mlip", f"{meta.get('format_version', '?')} / {meta.get('mlip_version', '?')}"),
    ]
    cfg = meta.get("config", {})
    if cfg:
        rows.append(("config", ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "species")))
    sets = meta.get("active_set") or {}
    if meta.get("has_grade") and sets:
        rows.append(("active set", "; ".join(
            f"{mode}: MaxVol, {s.get('rank', '?')} rows of {s.get('n_features', '?')} features"
            for mode, s in sets.items())))
    else:
        rows.append(("active set", "none (run `mlip select MODEL --train DATA -u OUT.pt` for γ)"))
    tr = meta.get("training")
    if tr:
        rows.append(("training", f"step {tr.get('step')}, best validation loss {tr.get('best_validation')}"))
        for part in ("train", "validation"):
            if tr.get("data", {}).get(part):
                rows.append((f"  {part} data", _data_line(tr["data"][part])))
    else:
        rows.append(("training", "not recorded (exported from a model built outside `mlip train`, "
                                 "or by an older mlip)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    meta = export_info(args.model)
    if args.json:
        print(json.dumps(meta, indent=1))
    else:
        print(format_info(args.model, meta))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="what an exported model is: family, species, cutoff, data, active set")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="the whole metadata as JSON")
    p.set_defaults(func=run)

"""`mlip select`: MaxVol active sets and D-optimal selection, for every model family.

    mlip select MODEL --train TRAIN [--mode nbh|cfg] -u MODEL_AL.pt
        build the active set from the training set and write an export that carries it (the grade
        matrix behind the export's scripted `grade`, which the ASE calculator and `pair_style mlip`
        report as γ; the MaxVol rows in its metadata)
    mlip select MODEL --candidates CAND [--train TRAIN] [--threshold 2] [--max 50] -o SELECTED.xyz
                      [-u MODEL_AL.pt] [--grades GAMMAS.txt]
        grade the candidate configurations, then add the most volume-increasing ones (greedy MaxVol
        swaps while γ > threshold, at most --max configurations) to the active set; the selected
        configurations are written to -o (extxyz, or .cfg by extension) for labelling, the updated
        active set to -u.

MODEL: an export (.pt) of any family, an `mlip train` run directory (its checkpoint; the active set
of RUN/model.pt if it has one), or an MLIP-2 `.mtp` (with --species when it has no element names).
Without --train the active set is the export's own. Files are read with `mlip.data.read_frames`
(extxyz, cfg with --type-map, mlearn JSON, DeePMD, ASE formats).
"""
from __future__ import annotations

import argparse
import os
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np


def load_model(path: str, species: Optional[Sequence[str]] = None) -> Tuple[Any, str, Optional[str]]:
    """(Python model in float64, export dtype for -u, export holding the active set or None)."""
    if path.lower().endswith(".mtp"):
        from mlip.models.mtp import MTP

        return MTP.from_mtp_file(path, species=species).double(), "float64", None
    if os.path.isdir(path):
        from mlip.train.finetune import load_checkpoint_model

        for name in ("best.pt", "last.pt"):
            ckpt = os.path.join(path, "checkpoints", name)
            if os.path.isfile(ckpt):
                export = os.path.join(path, "model.pt")
                return load_checkpoint_model(ckpt).double(), "float64", export if os.path.isfile(export) else None
        raise ValueError(f"'{path}' is a directory without checkpoints/best.pt or last.pt (not an `mlip train` run)")
    from mlip.export import read_metadata

    meta = read_metadata(path)
    if meta.get("family") == "mtp" and "mtp" in meta:
        from mlip.models.mtp import MTP

        model = MTP.from_metadata(meta, source=path)  # float64 coefficients even from a float32 export
    else:
        from mlip.train.finetune import load_export_model

        model = load_export_model(path)
    return model.double(), str(meta.get("dtype", "float64")), path


def _read(paths: List[str], type_map: Optional[List[str]]) -> list:
    from mlip.data import read_frames

    frames = []
    for p in paths:
        frames.extend(read_frames(p, type_map=type_map))
    return frames


def run(args: argparse.Namespace) -> int:
    import torch

    from mlip.active.grade import build_active_set, export_graded, feature_rows, read_active_set, select_frames

    torch.set_num_threads(max(1, args.threads))
    model, dtype, export = load_model(args.model, args.species)

    def bar(what: str) -> str:
        return "" if args.quiet else what
    if not hasattr(model, "grade_features"):
        raise ValueError(f"'{args.model}': family '{model.family}' has no grade features (no extrapolation grade)")
    if args.train:
        train = _read(args.train, args.type_map)
        aset = build_active_set(model, train, args.mode or "nbh", progress=bar("training set"))
        X, _ = feature_rows(model, train, aset.mode)
        print(f"{aset.mode} active set from {len(train)} training configurations: {len(X)} rows, rank "
              f"{aset.rank} of {aset.n_features} features, max γ on the training set {aset.gamma(X).max():.6f}")
        changed = True
    else:
        aset = read_active_set(export) if export else None
        if aset is None:
            raise ValueError(f"'{args.model}' has no active set: pass --train TRAIN to build one")
        if args.mode and args.mode != aset.mode:
            raise ValueError(f"'{args.model}' has a '{aset.mode}' active set, not '{args.mode}': pass --train "
                             f"TRAIN to build a '{args.mode}' one")
        changed = False
    if args.candidates:
        cands = _read(args.candidates, args.type_map)
        X, src = feature_rows(model, cands, aset.mode, progress=bar("grading candidates"))
        per_cfg = np.zeros(len(cands))
        np.maximum.at(per_cfg, [s[0] for s in src], aset.gamma(X))
        print(f"{len(cands)} candidates: γ ({aset.mode}) max {per_cfg.max():.4g}, median {np.median(per_cfg):.4g}, "
              f"{int((per_cfg > 1.0 + 1e-9).sum())} above 1, {int((per_cfg > args.threshold).sum())} above "
              f"{args.threshold}")
        if args.grades:
            from mlip.io.safe_write import atomic_write

            atomic_write(args.grades, "# index gamma\n" + "".join(f"{k} {v:.8g}\n" for k, v in enumerate(per_cfg)))
        chosen = select_frames(model, cands, aset, threshold=args.threshold, max_select=args.max)
        print(f"selected {len(chosen)} configurations: {chosen[:20]}{' ...' if len(chosen) > 20 else ''}; "
              f"log volume of the active set now {aset.log_volume:.4f}")
        if args.output:
            sel = [cands[k] for k in chosen]
            if args.output.lower().endswith(".cfg"):
                from mlip.data import write_cfg

                write_cfg(sel, args.output, type_map=list(model.species))
            else:
                from mlip.data import write_extxyz

                write_extxyz(sel, args.output)
            print(f"wrote {len(sel)} configurations to {args.output}")
        changed = changed or bool(chosen)
    if args.update:
        export_graded(model, args.update, aset, dtype=dtype)
        print(f"wrote {args.update} with a '{aset.mode}' active set of rank {aset.rank}")
    elif changed and not args.candidates:
        raise ValueError("the new active set would be lost: give -u/--update OUT.pt")
    return 0


def add_parser(sub) -> None:
    from mlip.checks import POSITIVE, POSITIVE_INT, arg_type

    p = sub.add_parser("select", help="MaxVol active set / D-optimal selection of new configurations (any family)")
    p.add_argument("model", help="export (.pt), `mlip train` run directory, or MLIP-2 .mtp")
    p.add_argument("--train", nargs="+", help="training set file(s): build the active set from them")
    p.add_argument("--candidates", nargs="+", help="candidate configurations to grade and select from")
    p.add_argument("--mode", choices=["nbh", "cfg"], default=None,
                   help="per-neighbourhood or per-configuration rows (default: the export's, else nbh)")
    p.add_argument("--threshold", type=arg_type(POSITIVE), default=1.0,
                   help="select while γ exceeds this (default 1.0)")
    p.add_argument("--max", type=arg_type(POSITIVE_INT), default=None, help="at most this many configurations")
    p.add_argument("-o", "--output", help="write the selected configurations (extxyz, or .cfg)")
    p.add_argument("-u", "--update", help="write the model with the new/updated active set here (.pt)")
    p.add_argument("--grades", help="write the γ of every candidate to this text file")
    p.add_argument("--species", nargs="+", help="element names for a .mtp without them")
    p.add_argument("--type-map", nargs="+", help="element names of .cfg types 0, 1, ...")
    p.add_argument("--threads", type=arg_type(POSITIVE_INT), default=1)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)

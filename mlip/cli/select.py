"""`mlip select`: MaxVol active sets and D-optimal selection for MTP models.

    mlip select MODEL.pt --train TRAIN [--mode nbh|cfg|both] -u MODEL_AL.pt
        build the active set(s) from the training set and store them in a new export (buffers for the
        scripted `grade`/`grade_cfg`, and the metadata JSON)
    mlip select MODEL.pt --candidates CAND [--train TRAIN] [--mode nbh] [--threshold 2] [--max 50]
                         -o SELECTED.xyz [-u MODEL_AL.pt]
        grade the candidate configurations, then add the most volume-increasing ones (greedy MaxVol
        swaps while γ > threshold, at most --max configurations) to the active set; the selected
        configurations are written to -o (extxyz or .cfg by extension) for labelling, and the
        updated active set to -u.

MODEL may also be an MLIP-2 `.mtp` (with --species when it has no element names). Files are read
with `mlip.data.read_frames` (extxyz, cfg with --type-map, mlearn JSON, DeePMD, ASE formats).
"""
from __future__ import annotations

import argparse
import os

import numpy as np


def _load_model(path: str, species):
    from mlip.models.mtp import MTP

    if path.lower().endswith(".mtp"):
        return MTP.from_mtp_file(path, species=species), "float64"
    from mlip.export import read_metadata

    meta = read_metadata(path)
    if meta.get("family") != "mtp":
        raise ValueError(f"'{path}' is a '{meta.get('family')}' model: `mlip select` handles MTP exports "
                         f"(the active-learning tools for other families live in mlip.active)")
    return MTP.from_metadata(meta, source=path), meta.get("dtype", "float64")


def _read(paths, type_map):
    from mlip.data import read_frames

    frames = []
    for p in paths:
        frames.extend(read_frames(p, type_map=type_map))
    return frames


def run(args: argparse.Namespace) -> int:
    import torch

    from mlip.active.grade import build_active_set, feature_rows, select_frames, active_set_of

    torch.set_num_threads(max(1, args.threads))
    model, dtype = _load_model(args.model, args.species)
    model = model.double()
    modes = ["nbh", "cfg"] if args.mode == "both" else [args.mode]
    changed = False
    if args.train:
        train = _read(args.train, args.type_map)
        for mode in modes:
            aset = build_active_set(model, train, mode)
            X, _ = feature_rows(model, train, mode)
            g = aset.gamma(X)
            print(f"{mode} active set from {len(train)} training configurations: {len(X)} rows, rank "
                  f"{aset.rank} of {aset.n_features} features, max γ on the training set {g.max():.6f}")
        changed = True
    for mode in modes:
        if active_set_of(model, mode) is None:
            raise ValueError(f"'{args.model}' has no '{mode}' active set: pass --train TRAIN to build one")
    if args.candidates:
        cands = _read(args.candidates, args.type_map)
        mode = modes[0]
        aset = active_set_of(model, mode)
        X, src = feature_rows(model, cands, mode)
        g = aset.gamma(X)
        per_cfg = np.zeros(len(cands))
        np.maximum.at(per_cfg, [s[0] for s in src], g)
        print(f"{len(cands)} candidates: γ ({mode}) max {per_cfg.max():.4g}, median {np.median(per_cfg):.4g}, "
              f"{int((per_cfg > 1.0 + 1e-9).sum())} above 1, {int((per_cfg > args.threshold).sum())} above "
              f"{args.threshold}")
        if args.grades:
            with open(args.grades, "w") as fh:
                fh.write("# index gamma\n")
                for k, v in enumerate(per_cfg):
                    fh.write(f"{k} {v:.8g}\n")
        chosen, aset = select_frames(model, cands, mode, threshold=args.threshold, max_select=args.max)
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
        from mlip.export import export_model

        export_model(model, args.update, dtype=dtype)
        print(f"wrote {args.update} with active set(s) {sorted(model._active_meta)}")
    elif changed and not args.candidates:
        raise ValueError("the new active set would be lost: give -u/--update OUT.pt")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("select", help="MaxVol active set / D-optimal selection of new configurations (MTP)")
    p.add_argument("model", help="MTP export (.pt) or MLIP-2 .mtp")
    p.add_argument("--train", nargs="+", help="training set file(s): build the active set from them")
    p.add_argument("--candidates", nargs="+", help="candidate configurations to grade and select from")
    p.add_argument("--mode", choices=["nbh", "cfg", "both"], default="nbh",
                   help="per-neighbourhood or per-configuration rows (default nbh)")
    p.add_argument("--threshold", type=float, default=1.0, help="select while γ exceeds this (default 1.0)")
    p.add_argument("--max", type=int, default=None, help="at most this many configurations")
    p.add_argument("-o", "--output", help="write the selected configurations (extxyz, or .cfg)")
    p.add_argument("-u", "--update", help="write the model with the updated active set here (.pt)")
    p.add_argument("--grades", help="write the γ of every candidate to this text file")
    p.add_argument("--species", nargs="+", help="element names for a .mtp without them")
    p.add_argument("--type-map", nargs="+", help="element names of .cfg types 0, 1, ...")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=run)

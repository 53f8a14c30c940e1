"""`mlip train CONFIG.yaml`: fit a model (any family, any optimizer.name), write checkpoints, metrics,
plots and an export (RUN/model.pt; for an MTP also RUN/model.mtp, the MLIP-2 file)."""
from __future__ import annotations

import argparse
import os

import yaml


def _parse_set(items):
    """--set training.steps=200 → nested override dict (values parsed as YAML)."""
    over = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got '{item}'")
        key, val = item.split("=", 1)
        node = over
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(val)
    return over


def run(args: argparse.Namespace) -> int:
    from mlip.export import export_model
    from mlip.train.config import load_config
    from mlip.train.trainer import Trainer, load_checkpoint_model

    cfg = load_config(args.config, _parse_set(args.set))
    if args.output:
        cfg["output"] = args.output
    if args.quiet:  # scripts: no progress bar (metrics.csv and the final report are still written)
        cfg["training"]["progress"] = False
    trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
    trainer.run()
    model = load_checkpoint_model(os.path.join(cfg["output"], "checkpoints", "best.pt"))
    out = os.path.join(cfg["output"], "model.pt")
    export_model(model, out, dtype=cfg["export"]["dtype"] or cfg["dtype"])
    print(f"exported {out}")
    if hasattr(model, "to_mtp_file"):  # MTP: the MLIP-2 potential file too (mlip convert reads it back)
        mtp = os.path.join(cfg["output"], "model.mtp")
        model.to_mtp_file(mtp)
        print(f"wrote {mtp}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML configuration")
    p.add_argument("config", nargs="?", help="YAML configuration (see training/)")
    p.add_argument("-o", "--output", help="run directory (overrides 'output' in the config)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoints/last.pt "
                   "(varpro/lbfgs: from its parameters, with a fresh L-BFGS history)")
    p.add_argument("--overwrite", action="store_true", help="start again in an existing run directory")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. training.steps=100")
    p.add_argument("--quiet", action="store_true", help="no progress bar (same as --set training.progress=false)")
    p.set_defaults(func=run)

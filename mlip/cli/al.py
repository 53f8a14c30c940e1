"""`mlip al CONFIG.yaml`: the resumable active-learning loop (train → explore → select → label).

    mlip al training/al_cu.yaml [-o OUT] [--iterations N] [--set select.max_labels=10]

Run it again after an interruption (Ctrl-C, kill, crash, a node's time limit): it resumes where it
stopped, without losing, duplicating or recomputing labels (see `mlip.active.loop`).
"""
from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from mlip.active.loop import load_al_config, run_loop
    from mlip.train.config import parse_settings

    over = {}
    if args.output:
        over["output"] = args.output
    if args.iterations is not None:
        over["iterations"] = args.iterations
    cfg = load_al_config(args.config, over, parse_settings(args.set))
    run_loop(cfg, log=not args.quiet)
    return 0


def add_parser(sub) -> None:
    from mlip.checks import POSITIVE_INT, arg_type

    p = sub.add_parser("al", help="active learning: train -> explore -> select -> label, resumable")
    p.add_argument("config", help="YAML configuration (see training/al_cu.yaml)")
    p.add_argument("-o", "--output", help="run directory (overrides 'output' in the config)")
    p.add_argument("--iterations", type=arg_type(POSITIVE_INT), help="maximum number of iterations")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="set one config value, e.g. select.max_labels=10 or train.model.rcut=4.5")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines (still logged to OUT/al.log)")
    p.set_defaults(func=run)

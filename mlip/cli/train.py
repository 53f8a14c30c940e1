"""`mlip train CONFIG.yaml`: fit a model (any family, any optimizer.name), write checkpoints, metrics,
plots and an export (RUN/model.pt; for an MTP also RUN/model.mtp, the MLIP-2 file)."""
from __future__ import annotations

import argparse
import os
import sys


def run(args: argparse.Namespace) -> int:
    from mlip.train.config import load_config, parse_settings
    from mlip.train.trainer import Trainer

    cfg = load_config(args.config, {"output": args.output} if args.output is not None else None,
                      parse_settings(args.set))
    if args.quiet:  # scripts: no progress bar (metrics.csv and the final report are still written)
        cfg["training"]["progress"] = False
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from mlip.train.distributed import launch

        if cfg["optimizer"]["name"] != "adam":
            raise ValueError(f"optimizer {cfg['optimizer']['name']} runs in one process (a full-batch "
                             "quasi-Newton fit): drop --nproc, or use optimizer.name: adam")
        return launch(_rank_argv(args), args.nproc, cfg["output"])
    from mlip.cli import UserError
    from mlip.train.distributed import RankLost

    try:
        trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
        trainer.run()
    except RankLost as exc:
        raise UserError(f"{exc}; the job stops here: continue it with --resume from "
                        f"{cfg['output']}/checkpoints/last.pt (any number of ranks)") from None
    try:
        if trainer.dist.is_main:  # rank 0 exports; the others wait for it in close()
            _export(cfg)
    finally:
        trainer.dist.close()
    if trainer.dist.active:
        _leave_rank()
    return 0


def _leave_rank() -> None:
    """End a rank's process now that every rank has left the group and rank 0 has written everything.

    Interpreter finalisation is skipped on purpose: gloo can keep its process group alive past
    destroy_process_group() (a reference held inside torch), and its worker threads then die during
    finalisation with "terminate called without an active exception" (SIGABRT). That was seen in full
    test suites on a loaded machine, once even with `Distributed.close`'s barrier and destroy. Nothing
    of the run is lost: its files are closed, and stdout/stderr are flushed here."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _export(cfg) -> None:
    """RUN/model.pt from the best checkpoint (and RUN/model.mtp for an MTP)."""
    from mlip.export import export_model
    from mlip.train.trainer import load_checkpoint_model

    model = load_checkpoint_model(os.path.join(cfg["output"], "checkpoints", "best.pt"))
    out = os.path.join(cfg["output"], "model.pt")
    export_model(model, out, dtype=cfg["export"]["dtype"] or cfg["dtype"])
    print(f"exported {out}")
    if hasattr(model, "to_mtp_file"):  # MTP: the MLIP-2 potential file too (mlip convert reads it back)
        mtp = os.path.join(cfg["output"], "model.mtp")
        model.to_mtp_file(mtp)
        print(f"wrote {mtp}")


def _rank_argv(args: argparse.Namespace) -> list:
    """The `mlip train` arguments each rank of a `--nproc` job runs with (everything but --nproc)."""
    argv = ["train"] + ([args.config] if args.config else [])
    if args.output is not None:
        argv += ["-o", args.output]
    argv += [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite),
                                   ("--quiet", args.quiet)) if on]
    for item in args.set or []:
        argv += ["--set", item]
    return argv


def add_parser(sub) -> None:
    from mlip.checks import POSITIVE_INT, arg_type

    p = sub.add_parser("train", help="train a model from a YAML configuration")
    p.add_argument("config", nargs="?", help="YAML configuration (see training/)")
    p.add_argument("-o", "--output", help="run directory (overrides 'output' in the config)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoints/last.pt "
                   "(varpro/lbfgs: from its parameters, with a fresh L-BFGS history)")
    p.add_argument("--overwrite", action="store_true", help="start again in an existing run directory")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="set one config value, e.g. "
                   "training.steps=100 or model.rcut=4.5 (the rest of the section is kept)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (same as --set training.progress=false)")
    p.add_argument("--nproc", type=arg_type(POSITIVE_INT), default=None, metavar="N",
                   help="data-parallel training on N processes of this machine (torch.distributed, gloo); "
                        "torchrun/mpirun/srun work too, through the env:// variables")
    p.set_defaults(func=run)

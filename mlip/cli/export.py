"""`mlip export CHECKPOINT|RUN_DIR -o MODEL.pt`: TorchScript export with metadata."""
from __future__ import annotations

import argparse
import os


def run(args: argparse.Namespace) -> int:
    from mlip.export import export_model
    from mlip.train.trainer import load_checkpoint_model

    src = args.checkpoint
    if os.path.isdir(src):
        src = os.path.join(src, "checkpoints", "last.pt" if args.last else "best.pt")
    model = load_checkpoint_model(src, which="model" if args.raw else "eval_model")
    dtype = args.dtype or str(next(model.parameters()).dtype).replace("torch.", "")
    meta = export_model(model, args.output, dtype=dtype)
    print(f"exported {args.output}: family {meta['family']}, species {meta['species']}, "
          f"cutoff {meta['cutoff']} Å, {dtype}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to a TorchScript model file")
    p.add_argument("checkpoint", help="checkpoint file, or a run directory (uses checkpoints/best.pt)")
    p.add_argument("-o", "--output", default="model.pt")
    p.add_argument("--dtype", choices=["float64", "float32"], help="default: the training dtype")
    p.add_argument("--last", action="store_true", help="with a run directory: export last.pt instead of best.pt")
    p.add_argument("--raw", action="store_true", help="export the raw weights instead of their EMA")
    p.set_defaults(func=run)

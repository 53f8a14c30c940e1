"""`mlip` command line. Each verb lives in its own module `mlip/cli/<verb>.py` exposing
`add_parser(subparsers)` (registers arguments, sets `func`) — adding a verb means adding a module
and one name to VERBS. Errors that users can fix (bad files, unknown elements, bad keywords) are
raised as `UserError`/`ValueError`/`FileNotFoundError` and printed as one clear line, exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

VERBS = ["train", "export", "test", "md", "info", "convert", "select", "al"]


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    from mlip import __version__

    parser = argparse.ArgumentParser(prog="mlip", description="Machine-learned interatomic potentials")
    parser.add_argument("--version", action="version", version=f"mlip {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        try:
            mod = importlib.import_module(f"mlip.cli.{verb}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mlip.cli.{verb}":
                raise
            continue  # verb not implemented in this build
        mod.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        rc = args.func(args)
    except (UserError, ValueError, FileNotFoundError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"mlip {args.verb}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlip {args.verb}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

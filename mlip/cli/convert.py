"""`mlip convert`: MLIP-2 `.mtp` <-> mlip export (`.pt`), and untrained `.mtp` templates.

    mlip convert POT.mtp -o POT.pt [--species Mo Nb] [--dtype float64|float32]
    mlip convert POT.pt  -o POT.mtp                    (an MTP export; data from its metadata JSON)
    mlip convert POT.mtp -o OTHER.mtp [--species ...]  (normalise / attach element names)
    mlip convert --template 16 -o 16.mtp [--species-count 2] [--min-dist 2] [--max-dist 5]

Element names: MLIP-2 files only number the types (0, 1, ...). mlip writes the names into the
`potential_tag` line (MLIP-2 ignores that line's content); for files without them pass `--species`
in type order.
"""
from __future__ import annotations

import argparse
import os


def _kind(path: str) -> str:
    low = path.lower()
    if low.endswith(".mtp"):
        return "mtp"
    if low.endswith((".pt", ".pth", ".ts")):
        return "pt"
    raise ValueError(f"'{path}': cannot tell the format from the extension (use .mtp or .pt)")


def run(args: argparse.Namespace) -> int:
    from mlip.io.mtp_file import read_mtp, write_mtp
    from mlip.models.mtp_basis import template_dict

    out = args.output
    if args.template is not None:
        if _kind(out) != "mtp":
            raise ValueError("--template writes an untrained .mtp: give -o NAME.mtp")
        if not args.min_dist < args.max_dist:
            raise ValueError(f"--min-dist ({args.min_dist}) must be below --max-dist ({args.max_dist})")
        d = template_dict(args.template, species_count=len(args.species) if args.species else args.species_count,
                          min_dist=args.min_dist, max_dist=args.max_dist,
                          radial_basis_size=args.radial_basis_size)
        if args.species:
            d["species"] = list(args.species)
        write_mtp(out, d, untrained=True)
        print(f"wrote untrained level-{args.template} template {out}: {len(d['alpha_moment_mapping'])} basis "
              f"functions, {d['radial_funcs_count']} radial functions, species_count {d['species_count']}")
        return 0
    if not args.input:
        raise ValueError("give an input file (or --template LEVEL)")
    src = args.input
    if not os.path.isfile(src):
        raise FileNotFoundError(f"'{src}' does not exist")
    kin, kout = _kind(src), _kind(out)
    if kin == "mtp":
        from mlip.models.mtp import MTP

        model = MTP.from_mtp_file(src, species=args.species)
        if model.moment_coeffs is None:  # pragma: no cover
            raise ValueError(f"'{src}' is not usable")
        if kout == "pt":
            from mlip.export import export_model

            d = read_mtp(src)
            if d.get("moment_coeffs") is None or d.get("radial_coeffs") is None:
                raise ValueError(f"'{src}' is an untrained template (no coefficients): train it first "
                                 f"(`mlip train` with model: {{family: mtp, from_file: {src}}})")
            export_model(model, out, dtype=args.dtype)
            print(f"exported {out}: MTP with {model.n_alpha} basis functions, species {model.species}, "
                  f"cutoff {model.cutoff} Å, {args.dtype}")
        else:
            d = read_mtp(src)
            d["species"] = list(model.species)
            write_mtp(out, d)
            print(f"wrote {out}")
        return 0
    # .pt -> .mtp
    from mlip.export import read_metadata

    meta = read_metadata(src)
    if meta.get("family") != "mtp" or "mtp" not in meta:
        raise ValueError(f"'{src}' is a '{meta.get('family')}' model: only MTP exports convert to .mtp")
    if kout != "mtp":
        raise ValueError("a .pt converts to .mtp only")
    d = dict(meta["mtp"])
    if args.species:
        if len(args.species) != len(d["species"]):
            raise ValueError(f"--species gives {len(args.species)} names, the model has {len(d['species'])}")
        d["species"] = list(args.species)
    write_mtp(out, d)
    note = ""
    if meta.get("dtype") == "float32":
        note = " (from a float32 export: coefficients carry float32 precision)"
    if meta.get("active_set"):
        note += "; the active set is not part of .mtp files and was not written"
    print(f"wrote {out}: {len(d['alpha_moment_mapping'])} basis functions, species {d['species']}{note}")
    return 0


def add_parser(sub) -> None:
    from mlip.checks import NONNEG, POSITIVE, POSITIVE_INT, Number, arg_type
    from mlip.models.mtp_basis import MAX_LEVEL, MIN_LEVEL

    p = sub.add_parser("convert", help="convert MLIP-2 .mtp potentials to/from mlip exports; write templates")
    p.add_argument("input", nargs="?", help="POT.mtp or an MTP export POT.pt")
    p.add_argument("-o", "--output", required=True, help="output .pt or .mtp")
    p.add_argument("--species", nargs="+", help="element names in type order (.mtp files without names)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="export dtype (default float64)")
    p.add_argument("--template", type=arg_type(Number(integer=True, low=MIN_LEVEL, high=MAX_LEVEL)), metavar="LEVEL",
                   help="write an untrained template of this level")
    p.add_argument("--species-count", type=arg_type(POSITIVE_INT), default=1, help="with --template (default 1)")
    p.add_argument("--min-dist", type=arg_type(NONNEG), default=2.0, help="with --template (default 2.0 Å)")
    p.add_argument("--max-dist", type=arg_type(POSITIVE), default=5.0, help="with --template (default 5.0 Å)")
    p.add_argument("--radial-basis-size", type=arg_type(Number(integer=True, low=2)), default=8,
                   help="with --template (default 8)")
    p.set_defaults(func=run)

"""The metadata JSON inside an mlip export (`mlip_metadata.json`, an extra file of the TorchScript
archive): read without running the model.

It lives in the data layer, below the models, because models (`MTP.from_export`), training
(`model: {from_file: X.pt}`) and the tools all need to read an export's description, while only
`mlip.export` writes one.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict

METADATA_FILE = "mlip_metadata.json"


def check_export_archive(path: str) -> None:
    """The engine's integrity check of an export (every zip entry against its recorded CRC-32; torch's
    loader has none): ValueError "model file 'X' is damaged: entry 'Y' fails its CRC check ...".
    Call it before `torch.jit.load` of a user's export."""
    try:
        from mlip._core import check_archive
    except ImportError:  # C++ parts not built: torch reads the file unchecked
        return
    try:
        check_archive(path)
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None


def read_metadata(path: str) -> Dict[str, Any]:
    """Metadata of an export without running it (FileNotFoundError / ValueError naming the file; a
    damaged archive is refused as the engine refuses it)."""
    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file '{path}' does not exist")
    check_export_archive(path)
    files = {METADATA_FILE: ""}
    try:
        torch.jit.load(path, map_location="cpu", _extra_files=files)
    except Exception as exc:  # torch raises RuntimeError with a C++ backtrace: keep the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"'{path}' is not a loadable TorchScript file: {first}") from None
    if not files[METADATA_FILE]:
        raise ValueError(f"'{path}' is not an mlip export (no {METADATA_FILE})")
    return json.loads(files[METADATA_FILE])

"""Model families behind the common contract; `build_model` is the one factory used by training,
checkpoints and the CLI so that adding a family means adding a module and one registry line."""
from __future__ import annotations

import importlib
from typing import Any, Dict

from mlip.models.base import AtomicModel

# family name -> "module:Class"; imported lazily so optional dependencies (e3nn) stay optional.
FAMILIES: Dict[str, str] = {
    "deepmd": "mlip.models.deepmd:DeepPotSeA",
    "mtp": "mlip.models.mtp:MTP",
    "nequip": "mlip.models.nequip:NequIP",
}


def model_class(family: str) -> type:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family '{family}'; known: {sorted(FAMILIES)}")
    mod, cls = FAMILIES[family].split(":")
    return getattr(importlib.import_module(mod), cls)


def build_model(family: str, config: Dict[str, Any]) -> AtomicModel:
    return model_class(family)(**config)


__all__ = ["AtomicModel", "FAMILIES", "build_model", "model_class"]

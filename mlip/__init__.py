"""mlip: machine-learned interatomic potentials (Deep Potential, MTP, NequIP-style) with one export
format, one C++ engine, one ASE calculator and one LAMMPS pair_style.

Heavy modules (torch, the compiled core) are imported lazily so that `import mlip` stays cheap and
`mlip --help` works even when the compiled extension is missing.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["MLIPCalculator", "__version__"]


def __getattr__(name: str):
    if name == "MLIPCalculator":
        from mlip.calculator import MLIPCalculator

        return MLIPCalculator
    raise AttributeError(f"module 'mlip' has no attribute {name!r}")

"""NequIP-style E(3)-equivariant message-passing potential (family "nequip"), built on e3nn.

One concept per module, bottom to top (each imports only from those above it in this list):

| module | what |
|---|---|
| `irreps.py` | irreps choices: hidden features, edge harmonics, irreps pruning towards the energy |
| `activations.py` | normalised nonlinearities: second-moment constants, the gate |
| `radial.py` | Bessel basis × polynomial cutoff envelope, the radial MLP |
| `convolution.py` | per-centre slot layout of the edges, CG coupling tensors, the GEMM convolution |
| `blocks.py` | the interaction block (linears, convolution, self-interaction, gate, residual) |
| `pair.py` | optional learned two-body energy beside the network (`pair_basis`) |
| `baseline.py` | optional frozen MTP under the network, Δ-learning (`baseline`) |
| `pruning.py` | pruned evaluation of a LAMMPS graph: only atoms that reach the local energies |
| `model.py` | `NequIP`, the AtomicModel: edge features, embed → interaction layers → readout |

The convolution is ours (edges per centre atom, neighbour sum and Clebsch-Gordan contraction of a
path in one batched GEMM); Wigner 3j symbols, spherical harmonics, linears and the self-interaction
are e3nn's public API. Everything scripts with TorchScript.
"""
from mlip.models.nequip.activations import Gate, second_moment_constant
from mlip.models.nequip.blocks import InteractionBlock
from mlip.models.nequip.convolution import CGBank, EdgeConvolution
from mlip.models.nequip.model import NequIP
from mlip.models.nequip.radial import BesselBasis, RadialMLP

__all__ = ["BesselBasis", "CGBank", "EdgeConvolution", "Gate", "InteractionBlock", "NequIP", "RadialMLP",
           "second_moment_constant"]

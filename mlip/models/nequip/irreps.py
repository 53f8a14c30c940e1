"""Which irreducible representations the NequIP model carries, layer by layer.

The choices are made once, at construction, from (num_features, l_max, parity, num_layers), and fix
the shapes of every block:

* hidden features: `num_features` copies of every l <= l_max (both parities for O(3));
* edge spherical harmonics: Y_0..Y_lmax (true harmonics 1o, 2e, ... for O(3), all even for SO(3));
* "irreps pruning": the targets of the blocks are cut back to what can still reach the scalar
  energy. The last block only has to produce 0e, the one before only irreps that couple with some
  Y_l to 0e, and so on backwards. Dropping the rest changes nothing in the function (those channels
  never reach the readout) and only saves work. The other pruning, of atoms in a LAMMPS ghost
  shell, is in `pruning.py`.
"""
from typing import List

from e3nn import o3


def hidden_irreps(num_features: int, l_max: int, parity: bool) -> o3.Irreps:
    """`num_features` x every (l, p), l <= l_max; p in (+1, -1) with parity, else +1 only."""
    ps = (1, -1) if parity else (1,)
    return o3.Irreps([(num_features, (l, p)) for l in range(l_max + 1) for p in ps])


def sh_irreps(l_max: int, parity: bool) -> o3.Irreps:
    """Irreps of the edge harmonics: parity=True gives true spherical harmonics (1o, 2e, ...), which
    makes the model O(3)-equivariant; parity=False labels them all even (SO(3) only)."""
    return o3.Irreps.spherical_harmonics(l_max, p=-1 if parity else 1)


def needed_irreps(hidden: o3.Irreps, irreps_sh: o3.Irreps, num_layers: int) -> List[o3.Irreps]:
    """Target irreps of every block, pruned to what can still reach the scalar energy: the last
    block outputs only 0e, the one before only irreps that couple with Y to 0e, and so on."""
    needed = [o3.Irreps("0e")]
    for _ in range(num_layers - 1):
        nxt = needed[0]
        keep = o3.Irreps(
            [(m, ir) for m, ir in hidden
             if any(ir3 in nxt for _, ir2 in irreps_sh for ir3 in ir * ir2)]
        )
        needed.insert(0, keep)
    return needed


__all__ = ["hidden_irreps", "needed_irreps", "sh_irreps"]

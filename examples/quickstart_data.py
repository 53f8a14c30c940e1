"""Independent EMT test data and a starting structure for the quick start (seeds differ from training)."""
import sys

from ase.build import bulk
from ase.io import write

from mlip.data import write_extxyz
from mlip.datagen import generate_frames

out = sys.argv[1] if len(sys.argv) > 1 else "runs/quickstart"
write_extxyz(generate_frames(n_frames=20, size=2, seed=1234), f"{out}/test.xyz")
write(f"{out}/cu_108.xyz", bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3))
print(f"wrote {out}/test.xyz (20 EMT frames) and {out}/cu_108.xyz")

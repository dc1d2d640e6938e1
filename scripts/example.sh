#!/usr/bin/env bash
# The README's first command: set up prs-mpi on a fresh machine and run the MNIST example job.
#   bash scripts/example.sh [IMAGES] [RANKS]      (defaults: 200 images, 2 ranks)
# Makes 28x28 digit PNGs from scikit-learn's bundled digits, trains a small Keras CNN on CPU,
# runs `mpiexec -n RANKS prs-mpi scripts/examples/mnist/job.toml`, and scores the results with pandas.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
images=${1:-200}
ranks=${2:-2}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip_install() {   # quiet unless it fails
  "$VENV/bin/python" -m pip install -q "$@" > "$VENV/pip-install.log" 2>&1 || { cat "$VENV/pip-install.log"; exit 1; }
}
pip_install --upgrade pip
pip_install -e '.[mpich,tensorflow,examples]'
export PATH="$PWD/$VENV/bin:$PATH"
PYTHON="$VENV/bin/python" bash scripts/examples/mnist/setup.sh "$images"
mpiexec -n "$ranks" prs-mpi run scripts/examples/mnist/job.toml --set allow_reuse=false
"$VENV/bin/python" scripts/examples/mnist/check_results.py

#!/usr/bin/env bash
# The README's first command: set up prs-mpi on a fresh machine and run the MNIST example job.
#   bash scripts/example.sh [IMAGES] [RANKS]      (defaults: 200 images, 2 ranks)
# Makes 28x28 digit PNGs from scikit-learn's bundled digits, trains a small Keras CNN on CPU,
# runs `mpiexec -n RANKS prs-mpi scripts/examples/mnist/job.toml`, and scores the results with pandas.
set -euo pipefail
cd "$(dirname "$0")/.."
images=${1:-200}
ranks=${2:-2}
source scripts/venv.sh 'mpich,tensorflow,examples'
PYTHON="$VENV/bin/python" bash scripts/examples/mnist/setup.sh "$images"
mpiexec -n "$ranks" prs-mpi run scripts/examples/mnist/job.toml --set allow_reuse=false
"$VENV/bin/python" scripts/examples/mnist/check_results.py

#!/usr/bin/env bash
# Prepare the MNIST example offline: PNG digits in data/ and a trained Keras model in models/mnist/.
#   scripts/examples/mnist/setup.sh [COUNT]        (default 200 images; PYTHON=... to pick the interpreter)
# The model is trained only if models/mnist/model.keras is missing (FORCE_TRAIN=1 retrains).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
scripts="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
count="${1:-200}"

"$python" "$scripts/make_mnist_data.py" --out "$here/data" --count "$count" --overwrite
if [[ ! -f "$here/models/mnist/model.keras" || "${FORCE_TRAIN:-0}" == 1 ]]; then
    "$python" "$scripts/train_mnist.py" --out "$here/models/mnist"
else
    echo "model already trained: $here/models/mnist/model.keras (FORCE_TRAIN=1 retrains)"
fi
echo "next: mpiexec -n 2 prs-mpi $here/job.toml"

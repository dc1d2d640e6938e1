# Sourced by scripts/test.sh and scripts/example.sh: make (or reuse) the virtual environment
# $VENV, install prs-mpi into it with the extras given, put its bin/ first on PATH.
#   source scripts/venv.sh 'mpich,test'
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip_install() {   # quiet unless it fails
  "$VENV/bin/python" -m pip install -q "$@" > "$VENV/pip-install.log" 2>&1 || { cat "$VENV/pip-install.log"; exit 1; }
}
pip_install --upgrade pip
pip_install -e ".[$1]"
export PATH="$PWD/$VENV/bin:$PATH"

#!/usr/bin/env bash
# Set up everything convmixer needs, from scratch or on top of an earlier run (idempotent):
#   the Fashion-MNIST Debian package (where apt is available), a venv in .venv, the local CPU torch wheel,
#   and this package with its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing the Fashion-MNIST dataset package (dataset-fashion-mnist)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
    || echo "   (could not install it; convmixer will download Fashion-MNIST into ~/.cache/convmixer instead)"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || { echo "== creating .venv"; "$PY" -m venv .venv; }
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>/dev/null || true
# torch first, pinned: on this machine 2.13.0 is a local CPU wheel; any other spec pulls CUDA packages.
python -c "import torch" 2>/dev/null || { echo "== installing torch"; python -m pip install -q "torch==2.13.0" 2> >(grep -v "is ignored: it is neither" >&2); }
echo "== installing convmixer[dev]"
# (this machine's pip config names local index folders that may not exist; hide that warning, keep real errors)
python -m pip install -q -e ".[dev]" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
python -c "import convmixer, torch; print(f'== ready: convmixer {convmixer.__version__}, torch {torch.__version__}')"

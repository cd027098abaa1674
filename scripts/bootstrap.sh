#!/usr/bin/env bash
# Set up torchvat for development on a fresh machine with Python 3.11: a virtual environment in
# .venv with the package (editable) and its test tools, and the offline Fashion-MNIST files that
# some tests and benchmarks read (Debian's dataset-fashion-mnist, when apt-get can install it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[all,dev]"
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
    || echo "bootstrap: could not install dataset-fashion-mnist; Fashion-MNIST tests will fail" >&2
fi

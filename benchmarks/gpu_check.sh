#!/usr/bin/env bash
# One GPU check, one table: the CUDA tests, then QPT pretraining at paper settings (images/s,
# data-wait share, peak memory), HyperIQA paper-recipe fine-tuning, scoring against pyiqa, and
# achieved TFLOP/s against the GPU's bf16 matmul rate measured in the same run.
#
#   benchmarks/gpu_check.sh             # on a CUDA machine: <= 8 minutes on one GPU
#   benchmarks/gpu_check.sh --dry-run   # on CPU, toy sizes, seconds: checks this script's plumbing
#
# Environment: PYTHON (default .venv/bin/python, else python3).  Wheels in .whl/ (pyiqa and its
# needs, torchcodec) are installed into /tmp/site first when present; without pyiqa the scoring
# row says it was skipped.  Writes the table to stdout and, with OUT set, to $OUT/gpu_check.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
DRY=""
case "${1:-}" in
  --dry-run) DRY="--dry-run" ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac
export PYTHONUNBUFFERED=1
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

if [ -z "$DRY" ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import biqabench_plugins" 2>/dev/null; then  # a bare machine: install this checkout
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . >&2 || { echo "error: cannot install biqabench" >&2; exit 2; }
fi

echo "== pytest -m cuda" >&2
T_TESTS=180; T_BENCH=290      # together under 8 minutes
if [ -n "$DRY" ]; then T_TESTS=120; T_BENCH=120; fi
timeout "$T_TESTS" "$PY" -m pytest -m cuda -q -p no:randomly --junitxml="$TMP/cuda.xml" tests/system/test_cuda.py >&2
echo "== measurements" >&2
timeout "$T_BENCH" "$PY" benchmarks/gpu_bench.py $DRY --junit "$TMP/cuda.xml" | tee "$TMP/table.md"
rc=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then cp "$TMP/table.md" "$OUT/gpu_check.md"; fi
if [ "$rc" = 124 ]; then echo "error: the measurements ran past ${T_BENCH} s" >&2; fi
exit "$rc"

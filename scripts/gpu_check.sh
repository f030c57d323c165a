#!/usr/bin/env bash
# GPU check before a paper-scale run (issue 17). On a machine with a CUDA GPU:
#   1. the paper-scale rehearsal (stand-in data, random weights, a few steps per training) on the
#      GPU, once under fp16 and once under bf16 autocast — every notebook's paper code path on CUDA,
#      plus one data-parallel training under torchrun (2 processes; NCCL when 2+ GPUs, else gloo on CPU);
#   2. the paper models timed (python -m ppml.gpu_estimate): seconds per step, per epoch, and the
#      estimated GPU-hours of each notebook at paper scale (training only; a lower bound).
# Nothing downloads; nothing is written to figures/ (build/gpu-check/…). Usage:
#   scripts/gpu_check.sh [NOTEBOOK …]        e.g. scripts/gpu_check.sh 03 04
# Environment: PYTHON (default .venv/bin/python), STEPS (timed steps per model, default 10),
#   PPML_REHEARSE_STEPS (steps per epoch in the rehearsal, default 2), SKIP_REHEARSAL=1, SKIP_TIMING=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
STEPS=${STEPS:-10}
OUT=build/gpu-check
mkdir -p "$OUT"
"$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("scripts/gpu_check.sh needs a CUDA GPU (torch.cuda.is_available() is False); "
             "on a CPU machine run: python -m ppml.reproduce --scale paper --rehearse")
print(f"GPU: {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB), "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}")
PY
status=0
if [[ -z "${SKIP_REHEARSAL:-}" ]]; then
  root=$(mktemp -d -t ppml-gpu-rehearsal-XXXX)
  trap 'rm -rf "$root"' EXIT
  for amp in fp16 bf16; do
    echo "== rehearsal on CUDA, $amp autocast"
    start=$(date +%s)
    if PPML_AMP_DTYPE=$amp PPML_REHEARSE_STEPS=${PPML_REHEARSE_STEPS:-2} \
       "$PY" -m ppml.reproduce --scale paper --rehearse --rehearse-root "$root" \
             --build-dir "$OUT/$amp" "$@" 2>&1 | tee "$OUT/rehearsal-$amp.log"; then
      echo "== rehearsal $amp: ok in $(( $(date +%s) - start )) s"
    else
      echo "== rehearsal $amp: FAILED (see $OUT/rehearsal-$amp.log and $OUT/$amp/rehearsal/)"; status=1
    fi
  done
fi
if [[ -z "${SKIP_TIMING:-}" ]]; then
  echo "== one timed stretch of each paper model ($STEPS steps after warm-up, bf16 autocast)"
  "$PY" -m ppml.gpu_estimate --device cuda --amp bf16 --steps "$STEPS" 2>&1 | tee "$OUT/estimate-bf16.txt" || status=1
fi
exit $status

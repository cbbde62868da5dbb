#!/usr/bin/env bash
# Every chapter's full-profile code path at its real sizes, on one GPU, under a Colab T4's
# limits (15 GiB memory cap, fp16 where the chapters use P.precision), with random
# official-size weights and generated CIFAR-format files instead of downloads
# (benchmarks/full_profile.py explains the details). Writes into $OUT (4 files):
#   full_profile.md    per-notebook and per-cell table: status, seconds, peak memory
#   full_profile.json  the same, machine-readable
#   cells.jsonl        one line per cell as it finishes (survives a time limit)
#   full_profile.log   everything printed
# Time: at most 8 min (a 450 s budget for the notebooks, then a hard limit at 470 s).
#
# On the GPU machine (needs matplotlib, scipy, scikit-learn, scikit-image next to torch):
#     bash benchmarks/gpu_full_profile.sh
# CPU smoke test here (quick sizes, small stand-in models, hard-coded trainings cut to
# 20 steps; a 1500 s budget, 6 GiB of host memory per notebook): about 14 min on a 2-core
# AMD EPYC with one core busy (815 s for the notebooks, every cell passing, 2026-12):
#     OUT=/tmp/fp SMOKE=1 bash benchmarks/gpu_full_profile.sh
# Some notebooks only:  NOTEBOOKS=06,07 bash benchmarks/gpu_full_profile.sh
# Another interpreter than the python3 on PATH (a virtual environment not activated):
#     PYTHON=.venv/bin/python bash benchmarks/gpu_full_profile.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/teachkit-full-profile}"
PYTHON="${PYTHON:-python3}"  # every notebook's process runs under this one too
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "$PYTHON cannot import torch: activate the course's environment, or name its" \
        "interpreter with PYTHON=/path/to/bin/python" >&2
    exit 2
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "${SMOKE:-0}" = 1 ]; then BUDGET=${BUDGET_S:-1500}; else BUDGET=${BUDGET_S:-450}; fi
LIMIT=$((BUDGET + 20))
args=(--out "$OUT" --budget-s "$BUDGET")
[ "${SMOKE:-0}" = 1 ] && args+=(--smoke)
[ -n "${NOTEBOOKS:-}" ] && args+=(--notebooks "$NOTEBOOKS")

{
    echo "== card"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null ||
        echo "no nvidia-smi: CPU run"
    "$PYTHON" - <<'PY'
import importlib
import platform

import torch

gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print(f"python {platform.python_version()}, torch {torch.__version__}, GPU {gpu}")
for name in ("torchvision", "matplotlib", "scipy", "sklearn", "skimage", "tqdm", "timm"):
    try:
        module = importlib.import_module(name)
        print(f"  {name:12} {getattr(module, '__version__', '?')}")
    except ImportError as err:
        print(f"  {name:12} MISSING ({err}): the cells that import it will fail")
PY
    echo "== notebooks (limit ${LIMIT} s)"
    timeout -k 10 "$LIMIT" "$PYTHON" benchmarks/full_profile.py "${args[@]}"
    echo "== exit $? (0: every cell passed; 1: see full_profile.md; 124: time limit)"
} 2>&1 | tee "$OUT/full_profile.log"

#!/usr/bin/env bash
# The one command for the GPU machine (an H100 or H200 with PyTorch, torchvision and timm,
# no package index): install the carried wheels, print the card, run the three
# benchmarks each under its own time limit, profile the DINO loop, and write JSON, logs
# and the results table into $OUT (8 files). Worst case 7 min 45 s (the limits below add
# up to 465 s); about 5.5 min expected.
#
# On the device machine (carry .whl, made by benchmarks/fetch_wheels.sh):
#     bash benchmarks/gpu_all.sh
# Dry run here on the CPU with smoke-test sizes:
#     OUT=/tmp/bench TINY=1 bash benchmarks/gpu_all.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/teachkit-bench}"
mkdir -p "$OUT"
START=$(date +%s)
export PYTHONUNBUFFERED=1
elapsed() { echo $(($(date +%s) - START)); }

echo "== card"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null ||
    echo "no nvidia-smi: CPU run"

echo "== carried wheels"
wheels=()
for w in .whl/*.whl; do [ -e "$w" ] && wheels+=("$w"); done
# Install these only when missing: the image may hold other versions that other packages need.
for pair in lightning_utilities:lightning_utilities packaging:packaging; do
    module=${pair%%:*}
    file=${pair##*:}
    if ! python3 -c "import $module" 2>/dev/null; then
        for w in .whl/if-missing/"$file"-*.whl; do [ -e "$w" ] && wheels+=("$w"); done
        echo "$module is missing here: installing it from .whl/if-missing"
    fi
done
if [ ${#wheels[@]} -gt 0 ]; then
    if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "${wheels[@]}"; then
        echo "pip failed: unpacking the (pure-Python) wheels instead"
        for w in "${wheels[@]}"; do python3 -m zipfile -e "$w" /tmp/site; done
    fi
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no .whl/*.whl: lightly and segment-anything rows will say 'skipped' unless installed"
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
python3 - <<'PY'
import importlib, platform
import torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"GPU {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
for name in ("torchvision", "timm", "lightly", "segment_anything", "lightning_utilities",
             "sklearn", "scipy"):
    try:
        module = importlib.import_module(name)
        print(f"  {name:20} {getattr(module, '__version__', '?'):10} {module.__file__}")
    except ImportError as err:
        print(f"  {name:20} MISSING ({err})")
PY

if [ "${TINY:-0}" = 1 ]; then
    DEVICE=cpu SIZE=--tiny COMPILE= # compiling on a CPU takes minutes
else
    DEVICE=cuda SIZE= COMPILE=--compile
fi

run() { # run NAME LIMIT_S COMMAND...: the log streams and is kept in $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s; $(elapsed) s so far)"
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]} (124 = time limit), $(elapsed) s so far"
}

# Each script writes its JSON after every row, and skips rows it has no time left to
# start (--budget-s, a little under the hard limit), so a limit loses at most one row.
run knn 45 python3 benchmarks/knn.py --device "$DEVICE" $SIZE --skip-sklearn --peak \
    --repeats 5 --out "$OUT/knn.json"
run sam 140 python3 benchmarks/sam_latency.py --device "$DEVICE" $SIZE $COMPILE \
    --budget-s 110 --out "$OUT/sam.json"
run dino 250 python3 benchmarks/dino_throughput.py --device "$DEVICE" $SIZE \
    --budget-s 215 --out "$OUT/dino.json"
# issue 14: e2e vs step alone again, the loop's regions, and on CUDA its host syncs per step
run profile 30 python3 benchmarks/profile_dino_loop.py --device "$DEVICE" $SIZE

echo "== results ($(elapsed) s in all)"
python3 benchmarks/results_table.py "$OUT" | tee "$OUT/results.md"

#!/usr/bin/env bash
# Longer versions of the shipped DINO models on the critters dataset, on one GPU.
#
# Two runs share the card (teachkit's own command line, `python -m teachkit.train dino`):
# the small CNN and ViT-nano (conv stem), each with the recipe of its shipped model
# (teachkit/pretrained/dino_*_critters.json) at batch 512 instead of 128. Each run is
# stopped by `timeout` (a checkpoint every 200 steps, so a stop loses at most 200 steps).
# Then each run folder is packed, slimmed, into ONE tar file under $OUT: metrics.json
# (every step's loss and entropies, the per-epoch k-NN) and a checkpoint.pt that keeps the
# teacher, the config, the step and the history (what `ship-dino` reads), without the
# student and optimiser state (a few MB per run instead of 25-45).
# Expected: under 8 min on one H100 (two runs of at most 420 s, in parallel).
#
# Then, here: tar -xf runs.tar -C /tmp/gpu_runs and
#     python -m teachkit.train ship-dino --run /tmp/gpu_runs/dino_vit_nano_critters ...
#
# On the device machine:   bash benchmarks/gpu_train.sh
# CPU smoke test (tiny):   OUT=/tmp/gpu_train bash benchmarks/gpu_train.sh --tiny
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/teachkit-train}"
RUNS="${RUNS:-/tmp/teachkit-train-runs}"
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
START=$(date +%s)

if [ "${1:-}" = "--tiny" ]; then
    # a few seconds on a CPU: the same commands at toy sizes
    LIMIT=300
    SIZE=(--profile quick --device cpu --epochs 2 --steps-per-epoch 3 --batch-size 16
          --warmup-epochs 1 --knn-train 200 --knn-test 100 --checkpoint-every 2)
else
    LIMIT=420
    SIZE=(--profile full --epochs 40 --steps-per-epoch 100 --batch-size 512
          --warmup-epochs 4 --knn-train 5000 --knn-test 1000 --checkpoint-every 200)
fi

echo "== card"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null ||
    echo "no nvidia-smi: CPU run"

# The shipped recipes (the cards' commands) without their size flags.
COMMON=(--dataset critters --out-dim 1024 --hidden-dim 512 --bottleneck-dim 128
        --use-bn-in-head --local-crops-number 4 --no-progress)
CNN=(--arch small_cnn --lr 0.001 --momentum-teacher 0.99 --teacher-temp 0.04)
VIT=(--arch vit_nano --conv-stem --patch-size 4 --drop-path-rate 0.0 --lr 0.002
     --momentum-teacher 0.99 --teacher-temp 0.04)

run() { # run NAME FLAGS...: background job, log in $OUT/NAME.log
    local name=$1
    shift
    timeout -s INT -k 20 "$LIMIT" python3 -m teachkit.train dino "${COMMON[@]}" "$@" \
        "${SIZE[@]}" --out "$RUNS/$name" >"$OUT/$name.log" 2>&1 &
}
run dino_cnn_critters "${CNN[@]}"
run dino_vit_nano_critters "${VIT[@]}"
wait
echo "== runs finished after $(($(date +%s) - START)) s"

SLIM="$RUNS-slim"
rm -rf "$SLIM" && mkdir -p "$SLIM"
python3 - "$RUNS" "$OUT/summary.json" "$SLIM" <<'PY'
import json, pathlib, shutil, sys
import torch
runs, out, slim = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
summary = {}
for run in sorted(p for p in runs.iterdir() if (p / "metrics.json").is_file()):
    m = json.loads((run / "metrics.json").read_text())
    (slim / run.name).mkdir()
    shutil.copy(run / "metrics.json", slim / run.name / "metrics.json")
    if (run / "checkpoint.pt").is_file():
        ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
        keep = {k: ckpt[k] for k in ("teacher", "config", "step", "epoch", "history")}
        torch.save(keep, slim / run.name / "checkpoint.pt")
    epochs = m.get("epochs", [])
    summary[run.name] = {
        "steps": len(m.get("steps", [])),
        "knn_top1": [e.get("knn_top1") for e in epochs],
        "elapsed_s": epochs[-1].get("elapsed_s") if epochs else None,
        "hardware": m.get("run", {}).get("hardware"),
    }
    print(run.name, json.dumps(summary[run.name]))
pathlib.Path(out).write_text(json.dumps(summary, indent=1))
PY
tar -cf "$OUT/runs.tar" -C "$SLIM" .
ls -la "$OUT"
echo "== done in $(($(date +%s) - START)) s"

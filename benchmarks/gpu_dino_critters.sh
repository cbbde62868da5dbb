#!/usr/bin/env bash
# The shipped critters DINO models, each from its random initialisation by one package
# command, and the contrastive ViT-nano that sees as many images, on one GPU (issue 21):
#
#   python -m teachkit.train dino --preset cnn_critters       (4,500 steps of 512)
#   python -m teachkit.train dino --preset vit_nano_critters  (4,200 steps of 512)
#   python -m teachkit.train contrastive --dataset critters --arch vit_nano --conv-stem \
#       --steps 4200 --batch-size 512                          (the same 2.15 M images)
#
# The three share the card (2026-11-27, one H100: the two DINO runs side by side took 319 s
# and 349 s of training). Each is limited to LIMIT_S; a DINO run stopped by the limit keeps
# its last checkpoint and is shipped from it (its card says how many steps it made), and
# re-running the same line resumes it. Then `ship` measures each DINO run on the
# chapters' split (k-NN of the teacher, its random init and raw pixels; attention Jaccard
# for the ViT) and writes its card and weights; the contrastive run writes its own.
#
# Files under $OUT (at most 8): summary.md (each model's card summary), shipped.tar (NAME.pt,
# NAME.json, NAME.md of dino_cnn_critters, dino_vit_nano_critters and
# contrastive_vit_nano_critters: copy them into teachkit/pretrained/ after reading the
# cards), runs.tar (each run's metrics.json), logs.tar.
#
# On the device machine:   bash benchmarks/gpu_dino_critters.sh
# CPU smoke test (tiny):   OUT=/tmp/gpu_dino bash benchmarks/gpu_dino_critters.sh --tiny
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/teachkit-dino-critters}"
RUNS="${RUNS:-/tmp/teachkit-dino-critters-runs}"
SHIP="$RUNS/shipped"
export PYTHONUNBUFFERED=1
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
START=$(date +%s)
rm -rf "$RUNS" && mkdir -p "$OUT" "$RUNS/logs" "$SHIP"

if [ "${1:-}" = "--tiny" ]; then
    DEVICE=cpu LIMIT_S=150
    SHORT=(--epochs 2 --steps-per-epoch 2 --warmup-epochs 1 --batch-size 8
        --knn-train 200 --knn-test 100)
    CONTRASTIVE=(--steps 4 --batch-size 8)
    SPLIT=(--split 200 100)
else
    DEVICE=cuda LIMIT_S=400
    SHORT=()
    CONTRASTIVE=(--steps 4200 --batch-size 512)
    SPLIT=()
fi

echo "== card"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null ||
    echo "no nvidia-smi: CPU run"

limited() { # limited NAME COMMAND...: one background run under the time limit, logged
    local name=$1
    shift
    timeout -s INT -k 20 "$LIMIT_S" "$@" >"$RUNS/logs/$name.log" 2>&1 &
}
echo "== three runs side by side (limit ${LIMIT_S} s each)"
for preset in cnn_critters vit_nano_critters; do
    limited "$preset" python3 -m teachkit.train dino --preset "$preset" --device "$DEVICE" \
        --no-progress "${SHORT[@]}" --out "$RUNS/$preset"
done
limited contrastive python3 -m teachkit.train contrastive --dataset critters --arch vit_nano \
    --conv-stem --device "$DEVICE" "${CONTRASTIVE[@]}" --out "$RUNS/contrastive_vit_nano_critters"
wait
echo "== runs finished after $(($(date +%s) - START)) s"

echo "== ship (the chapters' split)"
for preset in cnn_critters vit_nano_critters; do
    python3 - "$RUNS/$preset" "dino_$preset" "$SHIP" "${SPLIT[@]}" >>"$RUNS/logs/ship.log" 2>&1 <<'PY'
import sys
from pathlib import Path
from teachkit.dino.export import ship_run

run, name, folder, *split = sys.argv[1:]
n_train, n_test = (int(split[1]), int(split[2])) if split else (5000, 1000)
card = ship_run(run, name, f"DINO on critters from its random initialisation, one GPU run "
                f"(python -m teachkit.train dino --preset {name[5:]}).",
                directory=Path(folder), n_train=n_train, n_test=n_test)
print(card.summary())
PY
done
python3 - "$RUNS/contrastive_vit_nano_critters" "$SHIP" >>"$RUNS/logs/ship.log" 2>&1 <<'PY'
import json, sys
from pathlib import Path
import torch
from teachkit.pretrained import ModelCard, save_card

run, folder = Path(sys.argv[1]), Path(sys.argv[2])
card = ModelCard(**json.loads((run / "metrics.json").read_text()))
card.name = "contrastive_vit_nano_critters"
state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()},
           folder / f"{card.name}.pt")
save_card(card, folder)
print(card.summary())
PY
cat "$RUNS"/shipped/*.md >"$OUT/summary.md" 2>/dev/null
cat "$RUNS/logs/ship.log"

tar -cf "$OUT/shipped.tar" -C "$SHIP" .
(cd "$RUNS" && find . -name metrics.json | tar -cf "$OUT/runs.tar" -T -)
tar -cf "$OUT/logs.tar" -C "$RUNS/logs" .
ls -la "$OUT"
echo "== done in $(($(date +%s) - START)) s"

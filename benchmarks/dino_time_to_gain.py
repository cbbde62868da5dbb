"""Watch DINO learn: k-NN against wall time, and the time to +N points over random init.

Runs ``python -m teachkit.train dino`` in this process (any of its flags after ``--``;
``--preset quick`` by default) with the k-NN monitor every ``steps_per_epoch`` steps on
the monitor's held-out critters split, and measures the same network at its random
initialisation on that split first. The clock starts before the first step and runs
through every evaluation, so the figure is what a student waits for::

    python benchmarks/dino_time_to_gain.py --threads 2
    python benchmarks/dino_time_to_gain.py --threads 2 -- --preset curve
    python benchmarks/dino_time_to_gain.py --tiny          # smoke test, seconds

Prints the curve (step, seconds, k-NN %, gain) and the first time the gain reached
``--gain`` points; ``--out FILE.json`` keeps all of it with the machine's description.
The run folder is a temporary one unless the flags name ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from teachkit.dino.cli import _prepare_dino
from teachkit.dino.export import build_run_backbone
from teachkit.dino.trainer import train_dino
from teachkit.infra.hardware import hardware_name
from teachkit.knn import extract_features, knn_accuracy
from teachkit.train import build_parser


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2: a Colab CPU)")
    parser.add_argument("--gain", type=float, default=10.0, help="points over random init (10)")
    parser.add_argument("--tiny", action="store_true", help="a few steps on a small split")
    parser.add_argument("--stop", action="store_true", help="stop once the gain is reached")
    parser.add_argument("--out", default=None, help="write the results here as JSON")
    parser.add_argument("dino", nargs="*", help="flags of python -m teachkit.train dino")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    flags = list(args.dino or ["--preset", "quick"])
    if args.tiny:
        flags += ["--max-steps", "4", "--steps-per-epoch", "2", "--batch-size", "8",
                  "--knn-train", "200", "--knn-test", "100"]
    with tempfile.TemporaryDirectory() as tmp:
        out = [] if "--out" in flags else ["--out", f"{tmp}/run"]
        dino_args = build_parser().parse_args(["dino", "--no-progress", *flags, *out])
        cfg, data, eval_data, backbone, run_info = _prepare_dino(dino_args)
        bank, bank_labels, queries, query_labels = eval_data
        random_init = backbone or build_run_backbone(cfg)
        feats = [extract_features(random_init, x, progress=False) for x in (bank, queries)]
        base = float(knn_accuracy(feats[0], bank_labels, feats[1], query_labels)["top1"])
        curve = [{"step": 0, "seconds": 0.0, "knn_top1": round(base, 2), "gain": 0.0}]
        print(f"random init: k-NN top-1 {base:.1f} % ({len(queries)} queries)", flush=True)
        start = time.perf_counter()  # the student's wait starts with training

        def watch(kind: str, record: dict) -> bool:
            if kind == "epoch" and "knn_top1" in record:
                row = {"step": record["step"], "seconds": round(time.perf_counter() - start, 1),
                       "knn_top1": round(record["knn_top1"], 2),
                       "gain": round(record["knn_top1"] - base, 2)}
                curve.append(row)
                print(f"step {row['step']:5d}  {row['seconds']:7.1f} s  k-NN {row['knn_top1']:5.1f} %"
                      f"  ({row['gain']:+.1f})", flush=True)
                return args.stop and row["gain"] >= args.gain
            return False

        train_dino(cfg, data, backbone=backbone, eval_data=eval_data, callbacks=[watch],
                   progress=False, run_info=run_info)
    reached = next((r for r in curve[1:] if r["gain"] >= args.gain), None)
    when = f"{reached['seconds']:.0f} s (step {reached['step']})" if reached else "not reached"
    print(f"time to +{args.gain:g} points: {when}")
    result = {
        "command": "python -m teachkit.train dino " + " ".join(flags),
        "threads": args.threads,
        "hardware": hardware_name(torch.device("cpu")),
        "queries": int(len(queries)),
        "random_init_knn_top1": round(base, 2),
        "curve": curve,
        "gain": args.gain,
        "time_to_gain_s": reached["seconds"] if reached else None,
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()

"""Images per second of the procedural shapes generator.

    python benchmarks/shapes_speed.py                 # CPU, 32 and 224 px
    python benchmarks/shapes_speed.py --device cuda   # on a GPU

Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from teachkit.data.shapes import make_scenes, make_shapes


def images_per_second(fn, n: int, repeats: int) -> float:
    fn(min(n, 64))  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(n)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args()
    rows = []
    for res, n in ((32, 10000), (64, 4000), (224, 500)):
        rate = images_per_second(
            lambda k, r=res: make_shapes(k, resolution=r, device=args.device), n, args.repeats
        )
        rows.append({"kind": "single object", "resolution": res, "images_per_s": round(rate)})
    rate = images_per_second(
        lambda k: make_scenes(k, resolution=128, device=args.device), 1000, args.repeats
    )
    rows.append({"kind": "scenes (2-5 objects)", "resolution": 128, "images_per_s": round(rate)})
    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}")
    print(f"{'kind':<22}{'px':>5}{'images/s':>12}")
    for r in rows:
        print(f"{r['kind']:<22}{r['resolution']:>5}{r['images_per_s']:>12,}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {"device": args.device, "threads": torch.get_num_threads(), "rows": rows},
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()

"""The critters dataset's fitness table: how far each cheap feature gets, before any training.

Weighted k-NN (k = 20, T = 0.07) on ``critters_splits(5000, 1000, seed=0)`` at 32 px, the
split every chapter uses, for:

* raw pixels (:func:`teachkit.knn.pixel_features`);
* a colour histogram (4 x 4 x 4 RGB bins, counts per image);
* the small CNN and ViT-nano (conv stem, patch 4) at random initialisation (seed 0),
  the networks the shipped DINO models start from.

The supervised and DINO rows of the README's table come from model cards
(``python -m teachkit.train supervised --dataset critters``; the DINO learning curve).

Usage::

    python benchmarks/critters_fitness.py [--out fitness.json] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from teachkit.data.critters import critters_splits
from teachkit.knn import extract_features, knn_accuracy, pixel_features
from teachkit.models.registry import build_backbone


def colour_histogram(images: torch.Tensor, bins: int = 4) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, bins**3) counts of pixels per RGB bin."""
    q = images.long() * bins // 256
    index = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    hist = torch.zeros(images.shape[0], bins**3)
    return hist.scatter_add_(1, index.flatten(1), torch.ones(index.flatten(1).shape))


def measure() -> dict[str, float]:
    train, test = critters_splits(5000, 1000, seed=0)

    def knn(features) -> float:
        bank, queries = features(train.images), features(test.images)
        return round(float(knn_accuracy(bank, train.labels, queries, test.labels)["top1"]), 1)

    rows = {"raw pixels": knn(pixel_features), "colour histogram (4^3 bins)": knn(colour_histogram)}
    for name, arch, kw in (
        ("small CNN, random init", "small_cnn", {}),
        ("ViT-nano (conv stem), random init", "vit_nano", {"conv_stem": True}),
    ):
        torch.manual_seed(0)
        model = build_backbone(arch, **kw).eval()
        rows[name] = knn(lambda x, m=model: extract_features(m, x, progress=False))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="write the table as JSON here")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = measure()
    for name, value in rows.items():
        print(f"| {name} | {value:.1f} % |")
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

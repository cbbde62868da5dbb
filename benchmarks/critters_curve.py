"""The DINO learning curve of a critters variant: the test every data design had to pass.

A small CNN trained with DINO for 1,000 steps of 128 fresh images on one CPU thread,
with the per-epoch k-NN monitor on the split the model cards use
(``critters_splits(5000, 1000, seed=0)``), next to the same network at its random
initialisation. The data variant is a JSON object of :class:`CrittersConfig` fields, so
the variants of the design log (README, "The critters dataset") can be re-run::

    python benchmarks/critters_curve.py --out /tmp/runs/curve_D
    python benchmarks/critters_curve.py --out /tmp/runs/curve_A \\
        --data '{"context_p": 0.4, "lighting": [0.45, 1.35], "cast": 0.15,
                 "hue_spread": 0.07, "colour_p": 0.75, "clutter": [1, 4]}'

The run resumes from ``--out`` (the trainer's checkpoints). ``metrics.json`` records the
command, the data variant and the random-init k-NN, so ``python -m teachkit.train
ship-dino --history-only`` can turn it into a card.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

import torch

from teachkit import pretrained
from teachkit.data.critters import CrittersConfig, CrittersStream, critters_splits
from teachkit.dino.augment import MultiCropConfig
from teachkit.dino.config import DINOConfig
from teachkit.dino.export import build_run_backbone
from teachkit.dino.trainer import train_dino
from teachkit.knn import extract_features, knn_accuracy
from teachkit.models.registry import build_backbone
from teachkit.profiles import hardware_name

#: The recipe of the curve (the shipped small CNN's, with a 1,000-step schedule).
RECIPE = dict(
    arch="small_cnn",
    out_dim=1024,
    hidden_dim=512,
    bottleneck_dim=128,
    use_bn_in_head=True,
    batch_size=128,
    epochs=10,
    steps_per_epoch=100,
    warmup_epochs=1,
    lr=0.001,
    momentum_teacher=0.99,
    teacher_temp=0.04,
    checkpoint_every=100,
    device="cpu",
)


def _shipped_backbone(name: str, cfg: DINOConfig) -> torch.nn.Module:
    """The student backbone for ``--init``: ``cfg``'s architecture with the weights of the
    shipped DINO model ``name`` (loaded strictly: a mismatch names every key)."""
    if name not in pretrained.available():
        raise SystemExit(f"--init: unknown shipped model {name!r}; expected one of "
                         f"{', '.join(pretrained.available())}")
    start = DINOConfig.from_dict(pretrained.load_card(name).config)
    keys = ("arch", "patch_size", "conv_stem")
    if any(getattr(start, k) != getattr(cfg, k) for k in keys):
        raise SystemExit(
            f"--init {name}: its backbone is "
            f"{ {k: getattr(start, k) for k in keys} }, the recipe asks for "
            f"{ {k: getattr(cfg, k) for k in keys} }"
        )
    backbone = build_backbone(cfg.arch, drop_path_rate=cfg.drop_path_rate,
                              patch_size=cfg.patch_size, img_size=cfg.crops.global_size,
                              conv_stem=cfg.conv_stem)
    pretrained.load_shipped(name, backbone)
    return backbone


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="run folder (resumed if it exists)")
    parser.add_argument("--data", default="{}", help="CrittersConfig fields as JSON")
    parser.add_argument("--recipe", default="{}", help="DINOConfig overrides as JSON")
    parser.add_argument("--crops", default="{}", help="MultiCropConfig overrides as JSON")
    parser.add_argument(
        "--init",
        default=None,
        help="a shipped DINO backbone to start from instead of the random initialisation "
        "(continued training, e.g. on another critters variant); its architecture must "
        "match the recipe's",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument(
        "--split",
        type=int,
        nargs=2,
        default=(5000, 1000),
        metavar=("TRAIN", "TEST"),
        help="k-NN bank and query sizes of critters_splits(TRAIN, TEST, seed=0) (5000 1000)",
    )
    parser.add_argument(
        "--device", default="cpu", help="where to draw, train and evaluate (cpu; cuda on a GPU)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data_kw = json.loads(args.data)
    recipe = {**RECIPE, "device": str(device), **json.loads(args.recipe)}
    data_cfg = CrittersConfig(**data_kw)
    crops = MultiCropConfig(**{"local_crops_number": 4, **json.loads(args.crops)})
    cfg = DINOConfig(**recipe, out_dir=args.out, crops=crops)
    train, test = critters_splits(*args.split, seed=0, config=data_cfg)
    random_init = build_run_backbone(cfg).to(device)
    feats = [
        extract_features(random_init, x, device=device, progress=False)
        for x in (train.images, test.images)
    ]
    r0 = knn_accuracy(feats[0], train.labels, feats[1], test.labels)["top1"]
    print(f"random init: k-NN top-1 {r0:.1f} %", flush=True)
    backbone = None if args.init is None else _shipped_backbone(args.init, cfg)
    argv = sys.argv[1:] if argv is None else argv
    run_info = {
        "command": "python benchmarks/critters_curve.py " + shlex.join(argv),
        "dataset": "critters",
        "data_variant": data_kw,
        "random_init_knn_top1": round(float(r0), 2),
        "hardware": hardware_name(device),
    }
    if args.init is not None:
        start = pretrained.load_card(args.init)
        run_info["init"] = {"name": args.init, "command": start.command,
                            "hardware": start.hardware, "results": start.results}
    stream = CrittersStream(cfg.batch_size, seed=cfg.seed, config=data_cfg, device=device)

    def report(kind: str, record: dict) -> bool:
        if kind == "epoch":
            knn = record.get("knn_top1", float("nan"))
            print(f"step {record['step']:5d}: k-NN top-1 {knn:.1f} %", flush=True)
        return False

    train_dino(
        cfg,
        stream,
        backbone=backbone,
        eval_data=(train.images, train.labels, test.images, test.labels),
        callbacks=[report],
        progress=False,
        run_info=run_info,
    )


if __name__ == "__main__":
    main()

"""Turn the JSON files of one benchmark run into the results table of benchmarks/README.md.

One Markdown row per comparison of the issue (card, date, teachkit, peer, ratio, target,
command), read from ``dino.json``, ``sam.json`` and ``knn.json`` in a folder; a file that
is missing, or a row that was skipped, gives "not run" instead of a number.

    python benchmarks/results_table.py "$OUT"          # prints the rows
    python benchmarks/results_table.py "$OUT" > "$OUT/results.md"
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

HEADER = (
    "| card | date | comparison | teachkit | peer | ratio | target | command |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- |"
)


def load(folder: Path, name: str) -> dict[str, Any]:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def number(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not run"
    return format(value, fmt)


def row_value(rows: dict[str, Any], key: str, field: str, fmt: str, unit: str) -> str:
    row = rows.get(key, {})
    if "skipped" in row or "error" in row:
        return f"not run ({row.get('skipped') or row.get('error')})"[:80]
    text = number(row.get(field), fmt)
    return text if text == "not run" else f"{text} {unit}"


def ratio(a: Any, b: Any) -> float:
    try:
        return float(a) / float(b)
    except (TypeError, ValueError, ZeroDivisionError):
        return math.nan


def lines(folder: Path) -> list[str]:
    dino, sam, knn = load(folder, "dino"), load(folder, "sam"), load(folder, "knn")
    machine = dino.get("machine") or sam.get("machine") or {}
    card = machine.get("gpu") or machine.get("cpu") or "?"
    date = (machine.get("date") or "?")[:10]
    out = [HEADER]

    def add(comparison, ours, peer, value, target, command):
        shown = "-" if value is None or math.isnan(value) else f"{value:.2f}x"
        out.append(
            f"| {card} | {date} | {comparison} | {ours} | {peer} | {shown} | {target} | "
            f"`{command}` |"
        )

    d = dino.get("rows", {})
    ds = dino.get("summary", {})
    dino_cmd = "python benchmarks/dino_throughput.py --device cuda"
    add(
        "1 DINO e2e, ResNet-18, 32 px, batch 256",
        row_value(d, "e2e.teachkit", "img_s", ",.0f", "img/s"),
        "lightly " + row_value(d, "e2e.lightly", "img_s", ",.0f", "img/s"),
        ds.get("e2e_vs_lightly", {}).get("ratio"),
        ">= 8x",
        dino_cmd,
    )
    add(
        "1 teachkit e2e / own step alone",
        row_value(d, "e2e.teachkit", "img_s", ",.0f", "img/s"),
        "step alone " + row_value(d, "e2e.teachkit_step", "img_s", ",.0f", "img/s"),
        ds.get("e2e_vs_own_step", {}).get("ratio"),
        ">= 0.85x",
        dino_cmd,
    )
    best = max(
        (d.get(k, {}) for k in ("step.teachkit", "step.teachkit_compiled")),
        key=lambda r: r.get("img_s", -1.0),
    )
    mfu = number(best.get("mfu", math.nan) * 100 if "mfu" in best else None, ".1f")
    add(
        "2 DINO step, ViT-Tiny/4 (MFU of teachkit)",
        f"{number(best.get('img_s'), ',.0f')} img/s, MFU {mfu} %",
        "timm per-crop " + row_value(d, "step.timm_per_crop", "img_s", ",.0f", "img/s"),
        ds.get("vit_step_vs_timm_per_crop", {}).get("ratio"),
        ">= 3x",
        dino_cmd,
    )
    s = sam.get("rows", {})
    ss = sam.get("summary", {})
    sam_cmd = "python benchmarks/sam_latency.py --device cuda --compile"
    for prec, target in (("fp32", "<= 0.4x"), ("bf16", "<= 0.8x")):
        add(
            f"3 SAM ViT-B encoder, batch 1, vs official {prec}",
            f"{number(ss.get('teachkit_best_ms'), '.1f')} ms ({ss.get('teachkit_best_variant')})",
            "official " + row_value(s, f"encoder.b1.official.{prec}", "ms", ".1f", "ms"),
            ss.get(f"vs_official_{prec}", {}).get("ratio"),
            target,
            sam_cmd,
        )
    batch = next((k.split(".")[1] for k in s if k.startswith("encoder.b") and k[9] != "1"), "b8")
    for prec in ("fp32", "bf16"):
        ours = s.get(f"encoder.{batch}.teachkit.{prec}", {}).get("img_s")
        peer = s.get(f"encoder.{batch}.official.{prec}", {}).get("img_s")
        add(
            f"3 SAM ViT-B encoder, {batch}, {prec} throughput",
            f"{number(ours, ',.1f')} img/s",
            f"official {number(peer, ',.1f')} img/s",
            ratio(ours, peer),
            "(higher is better)",
            sam_cmd,
        )
    add(
        "3 box-mask IoU vs teachkit fp32 (lowest)",
        number(ss.get("mask_iou_min"), ".4f"),
        "-",
        math.nan,
        ">= 0.99 IoU",
        sam_cmd,
    )
    bound = knn.get("matmul_bound_seconds")
    add(
        "4 k-NN 10k x 50k x 384, k=20 (vs 2MND / fp32 peak)",
        f"{number(ratio(knn.get('teachkit_seconds'), 1e-3), '.2f')} ms",
        f"bound {number(ratio(bound, 1e-3), '.2f')} ms",
        knn.get("teachkit_over_bound"),
        "(time / bound, lower is better)",
        "python benchmarks/knn.py --device cuda --skip-sklearn --repeats 5",
    )
    fp16 = d.get("fp16.check", {})
    add(
        "5 T4 path: fp16 + GradScaler vs fp32",
        "PASS" if fp16.get("pass") else ("FAIL" if "pass" in fp16 else "not run"),
        f"max rel. loss diff {number(fp16.get('max_rel_diff', math.nan) * 100, '.2f')} %",
        math.nan,
        f"<= {number(fp16.get('tolerance', math.nan) * 100, '.1f')} %",
        dino_cmd + " --parts fp16",
    )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("folder", type=Path, help="folder holding dino.json, sam.json, knn.json")
    args = p.parse_args(argv)
    print("\n".join(lines(args.folder)))


if __name__ == "__main__":
    main()

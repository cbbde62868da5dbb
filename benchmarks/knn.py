"""Benchmark: teachkit.knn.knn_classify vs scikit-learn's brute-force cosine k-NN.

Both sides solve the same problem: the ``k`` nearest bank rows under cosine similarity,
votes weighted by ``exp(s / T)`` (DINO's weighted k-NN). scikit-learn gets
``KNeighborsClassifier(metric="cosine", algorithm="brute", weights=<callable>)`` whose
callable turns its cosine *distances* ``d = 1 - s`` back into ``exp((1 - d) / T)``, so the
predictions are comparable one by one; the agreement rate is reported. Both sides are
limited to the same number of threads (torch.set_num_threads and threadpoolctl).

The features are synthetic: ``--classes`` Gaussian clusters on the unit sphere, so the
neighbours are meaningful and near-ties (where float rounding could flip a neighbour)
are rare. Timings exclude data generation and include everything each side does; each
side runs once untimed first (on a GPU: cuBLAS set-up, kernel loading), then
``--repeats`` timed runs, alternating, of which the median is reported (and the best).

On a GPU the reference that matters is the arithmetic bound: the similarity products
need ``2 M N D`` FLOPs, and ``--peak`` (default on CUDA) measures the card's rate for a
large matrix product in the dtype and matmul precision that ``knn_classify`` uses here
(float32 with torch's current TF32 setting), so ``2 M N D / peak`` is the least time any
implementation computing the same products could take. scikit-learn (CPU) is optional.

    python benchmarks/knn.py                        # 10,000 x 50,000 x 384, k=20, CPU
    python benchmarks/knn.py --tiny                 # smoke test, seconds
    python benchmarks/knn.py --device cuda --skip-sklearn --repeats 5 --out knn.json
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path

import bench_timing as bt
import numpy as np
import torch

from teachkit.knn import knn_classify

TINY = {"queries": 500, "bank": 2_000, "dim": 64, "classes": 10}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--queries", type=int, default=10_000, help="M, number of query features")
    p.add_argument("--bank", type=int, default=50_000, help="N, number of reference features")
    p.add_argument("--dim", type=int, default=384, help="D, feature size (ViT-S/16: 384)")
    p.add_argument("--classes", type=int, default=100, help="C, number of classes / clusters")
    p.add_argument("--k", type=int, default=20, help="neighbours that vote (DINO: 20)")
    p.add_argument("--temperature", type=float, default=0.07, help="T in exp(s/T) (DINO: 0.07)")
    p.add_argument("--noise", type=float, default=1.0, help="cluster spread; larger = harder")
    p.add_argument("--chunk-size", type=int, default=1024, help="queries per similarity block")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where ours runs")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both sides")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="timed runs per side, alternating (the median is reported)",
    )
    p.add_argument("--skip-sklearn", action="store_true", help="time only ours")
    p.add_argument(
        "--peak",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure the float32 matrix-product rate and report the 2MND bound "
        "(default: on CUDA only)",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help=f"smoke-test sizes {TINY} (overrides --queries/--bank/--dim/--classes)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic features")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.tiny:
        vars(args).update(TINY)
    if args.peak is None:
        args.peak = args.device == "cuda"
    return args


def make_features(args: argparse.Namespace) -> tuple[torch.Tensor, ...]:
    """Clustered unit vectors: bank (N, D), bank labels (N,), queries (M, D), labels (M,)."""
    g = torch.Generator().manual_seed(args.seed)
    centres = torch.randn(args.classes, args.dim, generator=g)
    centres = torch.nn.functional.normalize(centres, dim=1) * args.dim**0.5 / 4

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, args.classes, (n,), generator=g)
        x = centres[y] + args.noise * torch.randn(n, args.dim, generator=g)
        return torch.nn.functional.normalize(x, dim=1), y

    bank, bank_y = sample(args.bank)
    queries, query_y = sample(args.queries)
    return bank, bank_y, queries, query_y


def run_ours(args, bank, bank_y, queries) -> tuple[float, np.ndarray]:
    """Seconds and predictions of one knn_classify call (inputs already on the device)."""
    cuda = bank.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = knn_classify(
        bank,
        bank_y,
        queries,
        k=args.k,
        temperature=args.temperature,
        chunk_size=args.chunk_size,
    )
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, result.predictions.cpu().numpy()


def run_floor(args, bank, queries) -> float:
    """Seconds of the bare minimum: chunked ``queries @ bank.T`` and ``topk``, nothing else."""
    cuda = bank.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    bank_t = bank.t()
    for s in range(0, queries.shape[0], args.chunk_size):
        (queries[s : s + args.chunk_size] @ bank_t).topk(args.k, dim=1)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def sklearn_available() -> str | None:
    """None when scikit-learn and threadpoolctl import, else why not."""
    try:
        import sklearn.neighbors  # noqa: F401
        import threadpoolctl  # noqa: F401
    except ImportError as err:
        return f"scikit-learn not installed ({err})"
    return None


def thread_limit(threads: int):
    """threadpoolctl's limit for BLAS / OpenMP pools, or nothing without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


def run_sklearn(args, bank, bank_y, queries) -> tuple[float, np.ndarray]:
    """Seconds (fit + predict) and predictions of scikit-learn with DINO's vote weights."""
    from sklearn.neighbors import KNeighborsClassifier

    T = args.temperature

    def dino_weights(distances: np.ndarray) -> np.ndarray:
        return np.exp((1.0 - distances) / T)  # cosine distance d = 1 - s  ->  exp(s / T)

    start = time.perf_counter()
    clf = KNeighborsClassifier(
        n_neighbors=args.k, metric="cosine", algorithm="brute", weights=dino_weights
    )
    clf.fit(bank.numpy(), bank_y.numpy())
    preds = clf.predict(queries.numpy())
    return time.perf_counter() - start, preds


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    bank, bank_y, queries, query_y = make_features(args)
    device = torch.device(args.device)
    on_device = bank.to(device), bank_y.to(device), queries.to(device)
    sk_skipped = "--skip-sklearn" if args.skip_sklearn else sklearn_available()
    ours_s, floor_s, sk_s = [], [], []
    sk_pred = None
    with thread_limit(args.threads):
        _, ours_pred = run_ours(args, *on_device)  # untimed: cuBLAS / kernel set-up
        run_floor(args, on_device[0], on_device[2])
        for _ in range(args.repeats):  # alternate the sides so all see the same load
            seconds, ours_pred = run_ours(args, *on_device)
            ours_s.append(seconds)
            floor_s.append(run_floor(args, on_device[0], on_device[2]))
            if sk_skipped is None:
                seconds, sk_pred = run_sklearn(args, bank, bank_y, queries)
                sk_s.append(seconds)
    peak = math.nan
    if args.peak:
        peak = bt.matmul_peak_flops(device, torch.float32, n=8192 if device.type == "cuda" else 512)
    flops = 2.0 * args.queries * args.bank * args.dim
    ours, sk = bt.median(ours_s), bt.median(sk_s)

    y = query_y.numpy()
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"gpu": None, **bt.machine_info(device)},
        "teachkit_seconds": ours,
        "teachkit_seconds_best": min(ours_s),
        "teachkit_seconds_all": ours_s,
        "sklearn_seconds": sk,
        "sklearn_skipped": sk_skipped,
        "matmul_topk_floor_seconds": bt.median(floor_s),
        "similarity_flops": flops,
        "float32_matmul_peak_flops": peak if args.peak else None,
        "matmul_bound_seconds": flops / peak if args.peak else None,
        "teachkit_over_bound": ours / (flops / peak) if args.peak else None,
        "speedup": sk / ours,
        "agreement": None if sk_pred is None else float((sk_pred == ours_pred).mean()),
        "teachkit_top1": float((ours_pred == y).mean() * 100),
        "sklearn_top1": None if sk_pred is None else float((sk_pred == y).mean() * 100),
    }
    print_table(args, report)
    if args.out is not None:
        bt.write_json(args.out, report)
        print(f"wrote {args.out}")
    return report


def print_table(args: argparse.Namespace, r: dict) -> None:
    where = r["machine"]["gpu"] or r["machine"]["cpu"]
    print(
        f"weighted k-NN: {args.queries:,} queries x {args.bank:,} bank x D={args.dim}, "
        f"k={args.k}, T={args.temperature}, C={args.classes}, {args.threads} CPU threads, "
        f"{where}, median of {args.repeats}"
    )
    print("both: exact cosine top-k, votes exp(s/T); sklearn: brute force, weights callable")
    print(f"{'':36}{'seconds':>10}{'top-1 %':>10}")
    print(
        f"{'teachkit (' + args.device + ')':36}{r['teachkit_seconds']:>10.4f}"
        f"{r['teachkit_top1']:>10.2f}"
    )
    print(f"{'  floor: matmul + topk only':36}{r['matmul_topk_floor_seconds']:>10.4f}")
    if r["matmul_bound_seconds"] is not None:
        peak = r["float32_matmul_peak_flops"] / 1e12
        print(
            f"{'  bound: 2MND / fp32 matmul peak':36}{r['matmul_bound_seconds']:>10.4f}"
            f"   ({r['similarity_flops'] / 1e9:,.1f} GFLOP at a measured {peak:,.1f} TFLOP/s)"
        )
        print(f"teachkit / bound: {r['teachkit_over_bound']:.2f}x")
    if r["agreement"] is not None:
        print(f"{'scikit-learn (cpu)':36}{r['sklearn_seconds']:>10.4f}{r['sklearn_top1']:>10.2f}")
        print(f"speed-up: {r['speedup']:.1f}x   prediction agreement: {100 * r['agreement']:.3f}%")
    else:
        print(f"{'scikit-learn (cpu)':36}skipped: {r['sklearn_skipped']}")


if __name__ == "__main__":
    main()

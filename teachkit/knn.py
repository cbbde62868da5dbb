"""Weighted k-NN classification and retrieval on frozen features (DINO paper, Sec. 4.1).

DINO evaluates a frozen backbone without training anything: embed the training set once
(the *bank*), and label each test image by a vote of its ``k`` nearest bank images under
cosine similarity, each neighbour weighted by ``exp(s / T)`` (Wu et al., 2018)::

    score(c | q) = sum_{i in top-k(q)} exp(cos(q, x_i) / T) * [y_i == c]
    prediction(q) = argmax_c score(c | q)          (ties: the smallest class id)

with ``k = 20`` and ``T = 0.07`` as in ``eval_knn.py``. The vote is taken on
``exp((cos(q, x_i) - s_max) / T)``, with ``s_max`` the query's largest similarity: the same
argmax, but the nearest neighbour weighs exactly 1, so nothing overflows in float32 at small
``T`` (``exp(1 / 0.005)`` is ``inf``, and tied ``inf`` scores would go to class 0). Typical
use::

    bank = extract_features(model, train_images)
    queries = extract_features(model, test_images)
    knn_accuracy(bank, train_labels, queries, test_labels)   # {"top1": ..., "top5": ...}

Compared with the official ``knn_classifier``: the work is chunked over queries with a
size you choose (the official one splits into 100 chunks and fails with fewer than 100
queries), votes are summed with ``scatter_add`` instead of a ``(M, k, C)`` one-hot tensor,
inputs are validated with messages that say what was wrong, and an opt-in fast first
pass (``precision="bf16"`` or ``"tf32"``) picks candidates at low precision and re-scores
them in full precision, so the neighbours are still exactly those of the fp32 pass.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from teachkit.infra.hardware import pick_device
from teachkit.infra.tensor_checks import describe, require_tensor

# Re-exported: the chapters import the preprocessing from here, beside the k-NN it feeds.
from teachkit.preprocess import imagenet_preprocess

__all__ = [
    "KnnResult",
    "PRECISIONS",
    "extract_features",
    "knn_accuracy",
    "knn_classify",
    "pixel_features",
    "retrieve",
]

#: The largest ``(queries, classes)`` table of votes :func:`knn_classify` makes (1 GiB of
#: float32): class ids far beyond the classes there are (10**10, a hash) are refused
#: instead of allocated.
MAX_VOTE_ENTRIES = 2**28

#: ``precision`` of the first similarity pass -> its rounding relative to a unit vector.
_PASS_ROUNDING = {"bf16": 2.0**-8, "tf32": 2.0**-11}
PRECISIONS = ("fp32", *_PASS_ROUNDING)


# ----------------------------------------------------------------------------- features


def pixel_features(images: Tensor) -> Tensor:
    """Raw pixels as features, the floor of every k-NN comparison in the course.

    ``(N, 3, H, W)`` -> ``(N, 3HW)`` float32, centred per image and L2-normalised.
    """
    x = images.float().flatten(1)
    return F.normalize(x - x.mean(1, keepdim=True), dim=1)


def _check_rgb_batch(x: Tensor, what: str) -> None:
    """Raise unless ``x`` is an ``(N, 3, H, W)`` tensor; name the likely mix-up."""
    require_tensor(what, x, "of shape (N, 3, H, W)")
    shape = tuple(x.shape)
    if x.ndim == 4 and shape[1] == 3:
        return
    hint = ""
    if x.ndim == 4 and shape[-1] == 3:
        hint = " (channels last? use images.permute(0, 3, 1, 2))"
    elif x.ndim == 4 and shape[1] == 1:
        hint = " (one channel? repeat it: images.expand(-1, 3, -1, -1))"
    raise ValueError(f"{what} must be (N, C, H, W) with C = 3 (RGB); got shape {shape}{hint}")


def _batches(images: Tensor | Dataset | DataLoader, batch_size: int) -> Iterable:
    if isinstance(images, Tensor):
        _check_rgb_batch(images, "images")
        return images.split(batch_size)
    if isinstance(images, DataLoader):
        return images
    if isinstance(images, Dataset):
        return DataLoader(images, batch_size=batch_size, shuffle=False)
    raise TypeError(
        "images must be a torch.Tensor of shape (N, 3, H, W), a Dataset or a DataLoader; "
        f"got {describe(images)}"
    )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def extract_features(
    model: nn.Module,
    images: Tensor | Dataset | DataLoader,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    progress: bool = True,
    cache: dict[str, Tensor] | None = None,
    cache_key: str | None = None,
) -> Tensor:
    """Embed ``images`` with a frozen ``model``: L2-normalised features ``(N, D)``.

    The model runs in eval mode under ``torch.inference_mode`` (no dropout, no
    gradients, no autograd memory); its previous train/eval mode is restored afterwards.

    Args:
        model: maps a ``(B, 3, H, W)`` float batch to ``(B, D)`` features (a DINO backbone
            returns its CLS token).
        images: a ``(N, 3, H, W)`` tensor (uint8 or float), a ``Dataset`` or a
            ``DataLoader`` yielding ``(image, label)`` pairs or bare images; a ``Dataset``
            is read in order with ``batch_size``.
        batch_size: images per forward pass (ignored for a ``DataLoader``).
        device: where the model runs; ``None`` means where its parameters already are.
            The model is not moved: put it there yourself.
        preprocess: applied to every batch (on ``device``) before the model. ``None``
            means :func:`imagenet_preprocess` for uint8 batches and nothing for float
            batches, which are taken to be normalised already.
        progress: show a tqdm bar over batches.
        cache: an optional dict shared between calls; with ``cache_key`` the features are
            stored there and returned without recomputing on the next call with the same
            key. The key is yours: nothing checks that the model or images are unchanged.
        cache_key: the name of this feature set in ``cache`` (e.g. ``"cifar10-train"``).

    Returns:
        ``(N, D)`` float32 features on the CPU, each row of unit L2 norm.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or ``images`` is neither a tensor
            nor a ``Dataset``/``DataLoader`` (a list of images, say).
        ValueError: a bad ``images`` shape (anything but ``(N, 3, H, W)``, e.g. one
            channel or channels last), ``batch_size`` not an int >= 1, a CUDA ``device``
            without a GPU, only one of ``cache`` /
            ``cache_key`` given, or a model output that is not ``(B, D)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {describe(model)}")
    if (cache is None) != (cache_key is None):
        raise ValueError("pass both cache and cache_key, or neither")
    if cache is not None and cache_key in cache:
        return cache[cache_key]
    _check_positive_int("batch_size", batch_size)
    device = pick_device(device) if device is not None else _model_device(model)
    batches = _batches(images, batch_size)

    was_training = model.training
    model.eval()
    chunks: list[Tensor] = []
    try:
        with torch.inference_mode():
            for batch in tqdm(batches, desc="features", disable=not progress):
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                _check_rgb_batch(x, "every batch of images")
                x = x.to(device)
                if preprocess is not None:
                    x = preprocess(x)
                elif not x.is_floating_point():
                    x = imagenet_preprocess(x)
                out = model(x)
                if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
                    shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                    raise ValueError(
                        f"model must return (B, D) features for a batch of {x.shape[0]}; "
                        f"got {shape}"
                    )
                chunks.append(F.normalize(out.float(), dim=1).cpu())
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("images is empty: no features to extract")
    features = torch.cat(chunks)
    if cache is not None:
        cache[cache_key] = features
    return features


# ----------------------------------------------------------------------------- k-NN


@dataclass
class KnnResult:
    """What :func:`knn_classify` found for ``M`` queries, ``k`` neighbours, ``C`` classes.

    Attributes:
        predictions: ``(M,)`` int64, the class with the largest vote (ties: smallest id).
        scores: ``(M, C)`` summed votes ``exp(s / T)`` per class (not normalised); 0 for
            a class none of the ``k`` neighbours belongs to. Always finite: in a row where
            ``exp(s / T)`` would overflow (or underflow) the dtype (``T < 1/88`` in float32
            for a similarity near 1), the row holds the overflow-free votes
            ``sum exp((s - s_max) / T)`` instead, in which the nearest neighbour weighs 1:
            the same row divided by ``exp(s_max / T)``, so the ranking of the classes
            and ``predictions`` are the same.
        topk_indices: ``(M, k)`` int64 bank rows of the neighbours, most similar first.
        topk_similarities: ``(M, k)`` their cosine similarities.
    """

    predictions: Tensor
    scores: Tensor
    topk_indices: Tensor
    topk_similarities: Tensor


def _check_features(name: str, x: Tensor) -> None:
    require_tensor(name, x, "of shape (N, D)")
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (rows, D) tensor; got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point; got {x.dtype}")
    # One reduction is enough to know: any NaN/inf makes the sum non-finite.
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise ValueError(f"{name} has non-finite values (NaN or inf) in {bad} row(s)")
    if x.shape[0] and x.shape[1]:
        zero = torch.linalg.vector_norm(x, ord=math.inf, dim=1) == 0
        if zero.any():
            rows = zero.nonzero()[:5, 0].tolist()
            raise ValueError(
                f"{name} has {int(zero.sum())} all-zero row(s) (first: {rows}); a zero vector "
                "has no direction, so its cosine similarity is undefined. Drop those rows or "
                "check the model that produced them"
            )


def _check_labels(name: str, labels: Tensor, n: int) -> None:
    require_tensor(name, labels, f"of shape ({n},) (int64 class ids)")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor (int64 class ids); got {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(
            f"{name} must have shape ({n},), one per feature row; got {tuple(labels.shape)}"
        )
    if n and int(labels.min()) < 0:
        raise ValueError(f"{name} must be >= 0; got min {int(labels.min())}")


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")


def _validate_bank_queries(bank: Tensor, queries: Tensor, k: int, precision: str) -> None:
    _check_features("bank", bank)
    _check_features("queries", queries)
    if bank.shape[0] == 0:
        raise ValueError("bank is empty: k-NN needs at least one reference feature")
    if bank.shape[1] != queries.shape[1]:
        raise ValueError(
            f"feature dims differ: bank has D={bank.shape[1]}, queries have D={queries.shape[1]}"
        )
    _check_positive_int("k", k)
    if k > bank.shape[0]:
        raise ValueError(f"k={k} is larger than the bank, which has {bank.shape[0]} features")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")


def _working_dtype(bank: Tensor, queries: Tensor) -> torch.dtype:
    return torch.float64 if torch.float64 in (bank.dtype, queries.dtype) else torch.float32


@contextlib.contextmanager
def _tf32_matmul(enabled: bool) -> Iterator[None]:
    """Let CUDA float32 matmuls use TF32 inside the block (no effect on the CPU)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled or before
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _topk_cosine(
    bank: Tensor, queries: Tensor, k: int, chunk_size: int, precision: str = "fp32"
) -> Iterator[tuple[slice, Tensor, Tensor]]:
    """Yield ``(rows, similarities (m, k), indices (m, k))`` for chunks of queries.

    With ``precision`` ``"bf16"`` / ``"tf32"`` a low-precision pass picks candidates, which
    are re-scored in the working dtype (see :func:`_fast_topk`).
    """
    _check_positive_int("chunk_size", chunk_size)
    dtype = _working_dtype(bank, queries)
    bank = F.normalize(bank.to(dtype), dim=1)
    queries = F.normalize(queries.to(device=bank.device, dtype=dtype), dim=1)
    bank_t = bank.t()
    if precision == "bf16":
        fast_t = bank_t.to(torch.bfloat16)
    elif precision == "tf32":
        fast_t = bank_t.float()
    for start in range(0, queries.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        if precision == "fp32":
            sims = queries[rows] @ bank_t  # (m, N): the only large intermediate
            values, indices = sims.topk(k, dim=1, largest=True, sorted=True)
        else:
            values, indices = _fast_topk(queries[rows], bank, bank_t, fast_t, k, precision)
        yield rows, values, indices


def _fast_topk(
    q: Tensor, bank: Tensor, bank_t: Tensor, fast_t: Tensor, k: int, precision: str
) -> tuple[Tensor, Tensor]:
    """The exact top-``k`` of ``q @ bank_t`` from a low-precision first pass.

    1. ``q @ fast_t`` in bf16 (or TF32) gives approximate similarities; keep the best
       ``c = max(2k, k + 32)`` candidates per query.
    2. Re-score the candidates in the working dtype and keep their top ``k``.
    3. The first pass errs by at most ``eps`` (input rounding on both sides, output rounding
       and the accumulation, for unit vectors), so a non-candidate's true similarity is at
       most ``c-th approximate + eps``. Where the ``k``-th re-scored value is not above
       that bound, the row is recomputed in full precision: the result is always exact.
    """
    n, d = bank.shape
    c = min(n, max(2 * k, k + 32))
    u = _PASS_ROUNDING[precision]
    eps = 4 * u + 2 * d * 2.0**-24
    with _tf32_matmul(precision == "tf32"):
        approx = q.to(fast_t.dtype) @ fast_t
    approx_values, candidates = approx.float().topk(c, dim=1, largest=True, sorted=True)
    # Re-score in slices so the gathered (rows, c, D) block stays near 2**24 numbers.
    exact = torch.empty(candidates.shape, dtype=q.dtype, device=q.device)
    step = max(1, 2**24 // (c * d))
    for i in range(0, q.shape[0], step):
        picked = bank[candidates[i : i + step]]  # (r, c, D)
        exact[i : i + step] = (picked @ q[i : i + step, :, None])[..., 0]
    values, order = exact.topk(k, dim=1, largest=True, sorted=True)
    indices = candidates.gather(1, order)
    if c < n:
        unsure = (values[:, -1].float() <= approx_values[:, -1] + eps).nonzero()[:, 0]
        if unsure.numel():
            sims = q[unsure] @ bank_t
            values[unsure], indices[unsure] = sims.topk(k, dim=1, largest=True, sorted=True)
    return values, indices


def _vote(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    *,
    k: int,
    temperature: float,
    num_classes: int | None,
    chunk_size: int,
    precision: str,
) -> tuple[KnnResult, Tensor, Tensor]:
    """:func:`knn_classify`'s result, its overflow-free votes ``(M, C)`` and who voted."""
    _validate_bank_queries(bank, queries, k, precision)
    _check_labels("bank_labels", bank_labels, bank.shape[0])
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a number; got {temperature!r}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be > 0 and finite; got {temperature}")
    needed = int(bank_labels.max()) + 1
    if num_classes is None:
        num_classes = needed
    else:
        _check_positive_int("num_classes", num_classes)
        if num_classes < needed:
            raise ValueError(f"num_classes={num_classes} but bank_labels go up to {needed - 1}")
    m = queries.shape[0]
    if m * num_classes > MAX_VOTE_ENTRIES:
        raise ValueError(
            f"num_classes={num_classes} (bank_labels go up to {needed - 1}) for {m} queries "
            f"would need a ({m}, {num_classes}) table of votes, more than {MAX_VOTE_ENTRIES:,} "
            "numbers: class ids must be 0..C-1 for C classes (renumber them with "
            "torch.unique(labels, return_inverse=True)), or classify fewer queries at a time"
        )

    labels = bank_labels.to(device=bank.device, dtype=torch.int64)
    dtype = _working_dtype(bank, queries)
    votes = torch.zeros(m, num_classes, dtype=dtype, device=bank.device)
    voted = torch.zeros(m, num_classes, dtype=torch.bool, device=bank.device)
    top_sims = torch.empty(m, k, dtype=dtype, device=bank.device)
    top_idx = torch.empty(m, k, dtype=torch.int64, device=bank.device)
    for rows, values, indices in _topk_cosine(bank, queries, k, chunk_size, precision):
        # values are sorted: column 0 is the row's largest similarity, whose weight is 1
        weights = (values - values[:, :1]).div_(temperature).exp_()
        neighbour_labels = labels[indices]
        votes[rows].scatter_add_(1, neighbour_labels, weights)
        voted[rows].scatter_(1, neighbour_labels, True)
        top_sims[rows], top_idx[rows] = values, indices
    scores = _scores(votes, top_sims, temperature)
    return KnnResult(votes.argmax(dim=1), scores, top_idx, top_sims), votes, voted


def _scores(votes: Tensor, top_sims: Tensor, temperature: float) -> Tensor:
    """DINO's scores ``sum exp(s / T)`` from the overflow-free votes, row by row where
    they fit the dtype; the votes themselves in the rows where they do not."""
    # exp(s_max / T) * sum exp((s - s_max) / T) = sum exp(s / T), the scores DINO defines
    factor = top_sims[:, :1].div(temperature).exp()
    scores = votes * factor
    normal = factor >= torch.finfo(factor.dtype).tiny  # not 0, not subnormal
    fits = torch.isfinite(scores).all(dim=1, keepdim=True) & normal
    return torch.where(fits, scores, votes)


def knn_classify(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    precision: str = "fp32",
) -> KnnResult:
    """DINO's weighted k-NN vote for every query.

    Both feature sets are L2-normalised inside (so cosine similarity is a dot product);
    already-normalised features are unchanged by this. Memory is bounded by one
    ``(chunk_size, N)`` similarity block. The result does not depend on ``chunk_size``
    beyond float rounding (BLAS may round a 1-row product in the last bit differently).
    Everything runs on ``bank``'s device. The vote is overflow-free at any ``T`` (see the
    module docstring): float32 gives float64's predictions at ``T = 0.005`` too.

    Args:
        bank: ``(N, D)`` reference features.
        bank_labels: ``(N,)`` integer class ids (>= 0) of the bank rows.
        queries: ``(M, D)`` features to classify, any ``M`` (including 0 or 1).
        k: neighbours that vote, ``1 <= k <= N`` (DINO: 20).
        temperature: ``T`` in the vote weight ``exp(s / T)`` (DINO: 0.07); smaller
            values let the closest neighbours dominate.
        num_classes: ``C``; ``None`` means ``bank_labels.max() + 1``.
        chunk_size: queries per similarity block.
        precision: the first similarity pass. ``"fp32"`` (the default) computes every
            similarity in the features' dtype. ``"bf16"`` (any device) or ``"tf32"``
            (CUDA; plain fp32 elsewhere) find candidates at low precision, faster on a
            GPU, and re-score them in the features' dtype: the neighbours, similarities
            and predictions are those of ``"fp32"`` (rows where low precision cannot
            guarantee that are recomputed in full).

    Returns:
        A :class:`KnnResult`.

    Raises:
        TypeError: ``bank``, ``bank_labels`` or ``queries`` is not a tensor (a list, a
            NumPy array); the message names the argument and the shape expected.
        ValueError: k < 1 or k > N, different feature dims, an empty bank, labels of the
            wrong length or dtype, negative labels, non-finite or all-zero feature rows,
            a non-positive temperature, ``num_classes`` too small for the labels, class
            ids so large that the ``(M, C)`` votes would exceed :data:`MAX_VOTE_ENTRIES`
            numbers (ids must be 0..C-1), or an unknown ``precision``.
    """
    result, _, _ = _vote(
        bank,
        bank_labels,
        queries,
        k=k,
        temperature=temperature,
        num_classes=num_classes,
        chunk_size=chunk_size,
        precision=precision,
    )
    return result


def knn_accuracy(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    query_labels: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    precision: str = "fp32",
) -> dict[str, float]:
    """Top-1 (and top-5) accuracy in percent of :func:`knn_classify`, as DINO reports it.

    ``top5`` is present only when there are at least 5 classes. A query counts as a top-5
    hit when its true class received votes and fewer than 5 classes scored strictly more;
    a class nobody voted for never counts (with ``k < 5`` at most ``k`` classes can).

    Args:
        query_labels: ``(M,)`` integer true classes of ``queries``, each below the number
            of classes; the other arguments are those of :func:`knn_classify`.

    Returns:
        ``{"top1": float, "top5": float}`` in percent (0..100).

    Raises:
        TypeError: an argument that is not a tensor, as for :func:`knn_classify`.
        ValueError: what :func:`knn_classify` refuses; ``query_labels`` of the wrong
            length or dtype or beyond the classes; no queries.
    """
    require_tensor("queries", queries, "of shape (M, D)")
    _check_labels("query_labels", query_labels, queries.shape[0])
    if queries.shape[0] == 0:
        raise ValueError("queries is empty: accuracy is undefined")
    result, votes, voted = _vote(
        bank,
        bank_labels,
        queries,
        k=k,
        temperature=temperature,
        num_classes=num_classes,
        chunk_size=chunk_size,
        precision=precision,
    )
    target = query_labels.to(device=votes.device, dtype=torch.int64)
    n_classes = votes.shape[1]
    if int(target.max()) >= n_classes:
        raise ValueError(
            f"query_labels go up to {int(target.max())} but there are {n_classes} classes; "
            "pass num_classes"
        )
    out = {"top1": 100.0 * (result.predictions == target).double().mean().item()}
    if n_classes >= 5:
        true_vote = votes.gather(1, target[:, None])
        rank = (votes > true_vote).sum(dim=1)
        hit = voted.gather(1, target[:, None])[:, 0] & (rank < 5)
        out["top5"] = 100.0 * hit.double().mean().item()
    return out


def retrieve(
    bank: Tensor,
    queries: Tensor,
    *,
    k: int = 5,
    chunk_size: int = 1024,
    precision: str = "fp32",
) -> tuple[Tensor, Tensor]:
    """The ``k`` most cosine-similar bank rows of every query (image retrieval).

    Args:
        bank: ``(N, D)`` features to search.
        queries: ``(M, D)`` features to look up.
        k: how many neighbours, ``1 <= k <= N``.
        chunk_size: queries per ``(chunk_size, N)`` similarity block.
        precision: ``"fp32"``, or ``"bf16"`` / ``"tf32"`` for a faster first pass with
            the same result (see :func:`knn_classify`).

    Returns:
        ``(similarities, indices)``, both ``(M, k)``, most similar first; ``indices`` are
        int64 rows of ``bank`` (draw the images with them).
    """
    _validate_bank_queries(bank, queries, k, precision)
    m = queries.shape[0]
    dtype = _working_dtype(bank, queries)
    sims = torch.empty(m, k, dtype=dtype, device=bank.device)
    idx = torch.empty(m, k, dtype=torch.int64, device=bank.device)
    for rows, values, indices in _topk_cosine(bank, queries, k, chunk_size, precision):
        sims[rows], idx[rows] = values, indices
    return sims, idx

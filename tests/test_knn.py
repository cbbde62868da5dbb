"""Tests for teachkit.knn against a from-the-definition reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from teachkit.knn import (
    extract_features,
    knn_accuracy,
    knn_classify,
    retrieve,
)
from teachkit.preprocess import imagenet_preprocess


def reference_knn(bank, labels, queries, k, T, C):
    """DINO paper, Sec. 4.1 / Wu et al. 2018, written as plainly as possible (Python loops)."""
    bank = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in bank.tolist()]
    preds, scores = [], []
    for q in queries.tolist():
        norm = math.sqrt(sum(x * x for x in q))
        q = [v / norm for v in q]
        sims = [(sum(a * b for a, b in zip(q, row, strict=True)), i) for i, row in enumerate(bank)]
        sims.sort(key=lambda t: -t[0])
        score = [0.0] * C
        for s, i in sims[:k]:
            score[int(labels[i])] += math.exp(s / T)
        best = max(range(C), key=lambda c: (score[c], -c))  # ties -> smallest class
        preds.append(best)
        scores.append(score)
    return torch.tensor(preds), torch.tensor(scores, dtype=torch.float64)


def problem(n=60, m=25, d=6, c=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    bank = torch.randn(n, d, generator=g, dtype=dtype) * 3  # not normalised on purpose
    labels = torch.randint(0, c, (n,), generator=g)
    queries = torch.randn(m, d, generator=g, dtype=dtype)
    return bank, labels, queries


@pytest.mark.parametrize("k,T", [(1, 0.07), (5, 0.07), (20, 0.5), (60, 1.0)])
def test_matches_reference_definition(k: int, T: float) -> None:
    bank, labels, queries = problem()
    ref_pred, ref_scores = reference_knn(bank, labels, queries, k, T, 4)
    out = knn_classify(bank, labels, queries, k=k, temperature=T, chunk_size=7)
    assert torch.equal(out.predictions, ref_pred)
    torch.testing.assert_close(out.scores, ref_scores, rtol=1e-9, atol=0)
    assert out.topk_indices.shape == (25, k) and out.topk_similarities.shape == (25, k)
    assert (out.topk_similarities[:, :-1] >= out.topk_similarities[:, 1:]).all()


def test_float32_matches_reference_predictions() -> None:
    bank, labels, queries = problem(n=200, m=40, d=16, c=7, seed=1, dtype=torch.float32)
    ref_pred, ref_scores = reference_knn(bank.double(), labels, queries.double(), 20, 0.07, 7)
    out = knn_classify(bank, labels, queries)
    assert torch.equal(out.predictions, ref_pred)
    torch.testing.assert_close(out.scores.double(), ref_scores, rtol=1e-4, atol=0)


def test_single_query_and_empty_queries() -> None:
    bank, labels, queries = problem()
    one = knn_classify(bank, labels, queries[:1], k=3)
    full = knn_classify(bank, labels, queries, k=3)
    assert one.predictions.shape == (1,) and one.predictions[0] == full.predictions[0]
    none = knn_classify(bank, labels, queries[:0], k=3)
    assert none.predictions.shape == (0,) and none.scores.shape == (0, 4)


def test_chunking_invariance() -> None:
    bank, labels, queries = problem(n=300, m=50, d=32, c=10, seed=2, dtype=torch.float32)
    a = knn_classify(bank, labels, queries, chunk_size=1)
    b = knn_classify(bank, labels, queries, chunk_size=1024)
    assert torch.equal(a.predictions, b.predictions)
    assert torch.equal(a.topk_indices, b.topk_indices)
    torch.testing.assert_close(a.scores, b.scores, rtol=1e-5, atol=0)  # BLAS gemv vs gemm


def test_num_classes_and_accuracy() -> None:
    # Two well separated clusters: every query is classified correctly.
    bank = torch.cat([torch.randn(30, 4) * 0.05 + 5, torch.randn(30, 4) * 0.05 - 5])
    labels = torch.tensor([0] * 30 + [3] * 30)
    queries = torch.tensor([[5.0, 5, 5, 5], [-5.0, -5, -5, -5]])
    out = knn_classify(bank, labels, queries, num_classes=6)
    assert out.scores.shape == (2, 6) and out.predictions.tolist() == [0, 3]
    acc = knn_accuracy(bank, labels, queries, torch.tensor([0, 3]), num_classes=6)
    assert acc == {"top1": 100.0, "top5": 100.0}
    acc = knn_accuracy(bank, labels, queries, torch.tensor([0, 0]))
    assert acc == {"top1": 50.0}  # C = 4 < 5: no top-5
    # A class with no votes is never a top-5 hit even though only 2 classes scored.
    acc = knn_accuracy(bank, labels, queries, torch.tensor([1, 3]), num_classes=6)
    assert acc == {"top1": 50.0, "top5": 50.0}


def test_retrieve() -> None:
    bank, _, _ = problem()
    sims, idx = retrieve(bank, bank[[4, 9]] * 2.0, k=3)
    assert idx[:, 0].tolist() == [4, 9]
    torch.testing.assert_close(sims[:, 0], torch.ones(2, dtype=bank.dtype))
    assert sims.shape == idx.shape == (2, 3)


def test_errors() -> None:
    bank, labels, queries = problem()
    with pytest.raises(ValueError, match="k=61 is larger than the bank, which has 60"):
        knn_classify(bank, labels, queries, k=61)
    with pytest.raises(ValueError, match="k must be >= 1; got 0"):
        knn_classify(bank, labels, queries, k=0)
    with pytest.raises(ValueError, match="bank has D=6, queries have D=5"):
        knn_classify(bank, labels, queries[:, :5])
    with pytest.raises(ValueError, match="bank is empty"):
        knn_classify(bank[:0], labels[:0], queries)
    with pytest.raises(ValueError, match=r"bank_labels must have shape \(60,\).*\(59,\)"):
        knn_classify(bank, labels[:59], queries)
    nan_bank = bank.clone()
    nan_bank[3, 2] = float("nan")
    with pytest.raises(ValueError, match="bank has non-finite values"):
        knn_classify(nan_bank, labels, queries)
    inf_q = queries.clone()
    inf_q[0, 0] = float("inf")
    with pytest.raises(ValueError, match="queries has non-finite"):
        retrieve(bank, inf_q)
    with pytest.raises(ValueError, match="integer tensor.*float32"):
        knn_classify(bank, labels.float(), queries)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        knn_classify(bank, labels, queries, temperature=0.0)
    with pytest.raises(ValueError, match="num_classes=2 but bank_labels go up to 3"):
        knn_classify(bank, labels, queries, num_classes=2)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        knn_classify(bank, labels, queries, chunk_size=0)
    with pytest.raises(ValueError, match="k=100 is larger than the bank"):
        retrieve(bank, queries, k=100)


class MeanColour(nn.Module):
    """A stand-in backbone: per-channel mean (B, 3) plus a dropout that eval mode disables."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))
        self.drop = nn.Dropout(0.9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(x.mean(dim=(2, 3)) * self.scale)


def test_extract_features_tensor_dataset_and_cache() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8, generator=g)
    model = MeanColour().train()
    feats = extract_features(model, images, batch_size=4, progress=False)
    assert model.training  # mode restored
    assert feats.shape == (10, 3) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(10))
    expected = torch.nn.functional.normalize(imagenet_preprocess(images).mean(dim=(2, 3)), dim=1)
    torch.testing.assert_close(feats, expected)  # dropout was off, uint8 was preprocessed

    ds = TensorDataset(imagenet_preprocess(images), torch.arange(10))
    torch.testing.assert_close(extract_features(model, ds, batch_size=3, progress=False), feats)

    double = extract_features(model, images, preprocess=lambda x: 2 * x.float(), progress=False)
    assert not torch.allclose(double, feats)

    cache: dict[str, torch.Tensor] = {}
    first = extract_features(model, images, cache=cache, cache_key="train", progress=False)
    assert extract_features(model, images[:1], cache=cache, cache_key="train") is first
    with pytest.raises(ValueError, match="both cache and cache_key"):
        extract_features(model, images, cache=cache)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        extract_features(model, images[0], progress=False)


# --------------------------------------------------------------------------- bad input, issue 13


def clusters(n_per_class=10, m_per_class=4, d=16, c=5, spread=0.35, seed=0, dtype=torch.float32):
    """Easy data: classes around related directions (cross-class cosine around 0.5)."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(d, generator=g, dtype=torch.float64)
    centres = torch.randn(c, d, generator=g, dtype=torch.float64) + shared

    def draw(n):
        labels = torch.arange(c).repeat_interleave(n)
        x = centres[labels] + spread * torch.randn(len(labels), d, generator=g, dtype=torch.float64)
        return x.to(dtype), labels

    bank, labels = draw(n_per_class)
    queries, query_labels = draw(m_per_class)
    return bank, labels, queries, query_labels


@pytest.mark.parametrize("T", [0.005, 0.001, 1e-5])
def test_small_temperature_float32_gives_the_float64_vote(T: float) -> None:
    bank, labels, queries, truth = clusters()
    assert F_cos(bank, bank).min() > 0.1, "classes share direction: every vote is large"
    ref = knn_classify(bank.double(), labels, queries.double(), k=20, temperature=T)
    out = knn_classify(bank, labels, queries, k=20, temperature=T)
    assert torch.equal(out.predictions, ref.predictions)
    assert torch.equal(out.predictions, truth)
    acc32 = knn_accuracy(bank, labels, queries, truth, k=20, temperature=T)
    acc64 = knn_accuracy(bank.double(), labels, queries.double(), truth, k=20, temperature=T)
    assert acc32 == acc64 == {"top1": 100.0, "top5": 100.0}


def F_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    return a @ b.T


def test_top5_counts_a_voted_class_whose_weight_underflows() -> None:
    # Query 0's true class 1 has one neighbour, far behind the nearest (class 0): its weight
    # exp(-0.8 / 0.001) underflows to 0, yet it voted, so it is a top-5 hit.
    bank = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 2])
    queries = torch.tensor([[1.0, 0.0]])
    acc = knn_accuracy(
        bank, labels, queries, torch.tensor([1]), k=2, temperature=1e-3, num_classes=5
    )
    assert acc == {"top1": 0.0, "top5": 100.0}
    acc = knn_accuracy(
        bank, labels, queries, torch.tensor([2]), k=2, temperature=1e-3, num_classes=5
    )
    assert acc == {"top1": 0.0, "top5": 0.0}  # class 2 did not vote


def test_default_scores_are_the_sum_of_exp_s_over_T() -> None:
    bank, labels, queries, _ = clusters(seed=3)
    out = knn_classify(bank, labels, queries)  # k = 20, T = 0.07
    sims = F_cos(queries.double(), bank.double())
    top = sims.topk(20, dim=1)
    expected = torch.zeros(len(queries), 5, dtype=torch.float64)
    expected.scatter_add_(1, labels[top.indices], (top.values / 0.07).exp())
    torch.testing.assert_close(out.scores.double(), expected, rtol=1e-5, atol=0)


def test_all_zero_rows_are_refused() -> None:
    bank, labels, queries, _ = clusters()
    zero_bank = bank.clone()
    zero_bank[[3, 7]] = 0
    with pytest.raises(ValueError, match=r"bank has 2 all-zero row\(s\) \(first: \[3, 7\]\)"):
        knn_classify(zero_bank, labels, queries)
    zero_q = queries.clone()
    zero_q[1] = 0
    with pytest.raises(ValueError, match="queries has 1 all-zero row"):
        knn_accuracy(bank, labels, zero_q, torch.zeros(len(queries), dtype=torch.long))
    with pytest.raises(ValueError, match="bank has 50 all-zero row"):
        retrieve(torch.zeros_like(bank), queries)


def test_labels_must_be_integer_class_ids_of_the_right_length_and_range() -> None:
    bank, labels, queries, truth = clusters()
    with pytest.raises(ValueError, match="integer tensor.*torch.bool"):
        knn_classify(bank, labels > 2, queries)
    with pytest.raises(TypeError, match=r"bank_labels must be a torch.Tensor of shape \(50,\)"):
        knn_classify(bank, labels.tolist(), queries)
    with pytest.raises(ValueError, match=r"bank_labels must have shape \(50,\).*\(50, 1\)"):
        knn_classify(bank, labels[:, None], queries)
    with pytest.raises(ValueError, match="bank_labels must be >= 0; got min -1"):
        knn_classify(bank, labels - 1, queries)
    with pytest.raises(ValueError, match=r"query_labels must have shape \(20,\)"):
        knn_accuracy(bank, labels, queries, truth[:5])
    with pytest.raises(ValueError, match="query_labels go up to 7 but there are 5 classes"):
        knn_accuracy(bank, labels, queries, truth + 3)
    with pytest.raises(ValueError, match="integer tensor.*float32"):
        knn_accuracy(bank, labels, queries, truth.float())
    with pytest.raises(ValueError, match="num_classes must be an int; got 5.0"):
        knn_classify(bank, labels, queries, num_classes=5.0)
    with pytest.raises(ValueError, match="temperature must be > 0 and finite; got nan"):
        knn_classify(bank, labels, queries, temperature=float("nan"))


@pytest.mark.parametrize(
    "shape,hint",
    [((4, 1, 8, 8), "one channel"), ((4, 8, 8, 3), "channels last"), ((4, 4, 8, 8), "C = 3")],
)
def test_extract_features_wants_rgb_channels_first(shape, hint) -> None:
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    expected = rf"\(N, C, H, W\) with C = 3 \(RGB\); got shape \({', '.join(map(str, shape))}\)"
    with pytest.raises(ValueError, match=expected) as err:
        extract_features(MeanColour(), images, progress=False)
    assert hint in str(err.value)
    with pytest.raises(ValueError, match="every batch of images must be"):
        extract_features(MeanColour(), TensorDataset(images), batch_size=2, progress=False)


# --------------------------------------------------------------------------- fast first pass


@pytest.mark.parametrize("precision", ["bf16", "tf32"])
def test_fast_precision_finds_the_fp32_neighbours_and_votes(precision: str) -> None:
    bank, labels, queries, truth = clusters(
        n_per_class=200, m_per_class=40, d=64, c=10, spread=1.0, seed=4
    )
    ref = knn_classify(bank, labels, queries, chunk_size=64)
    out = knn_classify(bank, labels, queries, chunk_size=64, precision=precision)
    assert torch.equal(out.predictions, ref.predictions)
    assert torch.equal(out.topk_indices.sort(1).values, ref.topk_indices.sort(1).values)
    torch.testing.assert_close(out.topk_similarities, ref.topk_similarities, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.scores, ref.scores, rtol=1e-5, atol=0)
    assert knn_accuracy(bank, labels, queries, truth, precision=precision) == knn_accuracy(
        bank, labels, queries, truth
    )
    sims, idx = retrieve(bank, queries, k=7, precision=precision)
    ref_sims, ref_idx = retrieve(bank, queries, k=7)
    assert torch.equal(idx.sort(1).values, ref_idx.sort(1).values)
    torch.testing.assert_close(sims, ref_sims, rtol=0, atol=1e-6)


def test_fast_precision_stays_exact_where_bf16_cannot_rank() -> None:
    # 300 near-duplicates of the query, 1e-4 apart in cosine: far below bf16's resolution,
    # so the candidates of the bf16 pass are a lottery and every row must be re-done.
    g = torch.Generator().manual_seed(5)
    q = torch.randn(3, 32, generator=g, dtype=torch.float64)
    bank = q.repeat_interleave(100, 0) + 1e-2 * torch.randn(
        300, 32, generator=g, dtype=torch.float64
    )
    bank = torch.cat([bank, torch.randn(200, 32, generator=g, dtype=torch.float64)])
    ref_sims, ref_idx = retrieve(bank, q, k=10)
    sims, idx = retrieve(bank, q, k=10, precision="bf16")
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(sims, ref_sims, rtol=0, atol=1e-12)


def test_unknown_precision() -> None:
    bank, labels, queries, _ = clusters()
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'bf16', 'tf32'\)"):
        knn_classify(bank, labels, queries, precision="fp16")


def test_extract_features_batch_size_and_device() -> None:
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(ValueError, match="batch_size must be an int; got 2.5"):
        extract_features(MeanColour(), images, batch_size=2.5, progress=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1; got 0"):
        extract_features(MeanColour(), images, batch_size=0, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU is available"):
            extract_features(MeanColour(), images, device="cuda", progress=False)


def test_imagenet_preprocess_resizes_as_the_dino_monitor_does():
    """``size=`` resizes before normalising, bilinear with antialiasing: the trainer's
    k-NN monitor's preprocessing, so a chapter and the monitor see the same input."""
    import torch.nn.functional as F

    from teachkit.dino.augment import MultiCropConfig
    from teachkit.preprocess import IMAGENET_MEAN, IMAGENET_STD

    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    crops = MultiCropConfig()
    assert (crops.mean, crops.std) == (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD))
    x = F.interpolate(images.float() / 255, size=(48, 48), mode="bilinear", antialias=True)
    expected = (x - torch.tensor(crops.mean).view(1, 3, 1, 1)) / torch.tensor(crops.std).view(1, 3, 1, 1)
    assert torch.allclose(imagenet_preprocess(images, size=48), expected, atol=1e-6)
    assert torch.equal(imagenet_preprocess(images, size=32), imagenet_preprocess(images))


@pytest.mark.parametrize("T", [1e-4, 1e-6])
def test_scores_are_finite_at_tiny_temperatures_and_zero_without_votes(T: float) -> None:
    bank, labels, queries, _ = clusters()
    labels = labels.clone()
    labels[labels == 4] = 5  # class 4 gets no votes at all; 6 classes
    for dtype in (torch.float32, torch.float64):
        out = knn_classify(bank.to(dtype), labels, queries.to(dtype), k=20, temperature=T)
        assert torch.isfinite(out.scores).all()
        assert (out.scores[:, 4] == 0).all()
        assert torch.equal(out.scores.argmax(dim=1), out.predictions)
        # in such rows the nearest neighbour weighs 1: its class scores at least 1
        nearest = labels[out.topk_indices[:, 0]]
        assert (out.scores.gather(1, nearest[:, None]) >= 1).all()


def test_scores_without_votes_are_zero_at_the_default_temperature() -> None:
    bank, labels, queries, _ = clusters()
    out = knn_classify(bank, labels, queries, k=3, num_classes=8)
    voted = torch.zeros_like(out.scores, dtype=torch.bool)
    voted.scatter_(1, labels[out.topk_indices], True)
    assert (out.scores[~voted] == 0).all() and (out.scores[voted] > 0).all()


def test_arguments_that_are_not_tensors_are_named_with_the_type_expected() -> None:
    bank, labels, queries, truth = clusters()
    with pytest.raises(TypeError, match=r"queries must be a torch.Tensor of shape \(M, D\); "
                                        r"got a list of 20"):
        knn_accuracy(bank, labels, queries.tolist(), truth)
    with pytest.raises(TypeError, match=r"queries must be a torch.Tensor of shape \(N, D\)"):
        knn_classify(bank, labels, queries.tolist())
    with pytest.raises(TypeError, match=r"bank must be a torch.Tensor of shape \(N, D\); got "
                                        r"ndarray"):
        retrieve(bank.numpy(), queries)
    with pytest.raises(TypeError, match=r"query_labels must be a torch.Tensor of shape \(20,\)"):
        knn_accuracy(bank, labels, queries, truth.tolist())
    model = nn.Flatten()
    with pytest.raises(TypeError, match=r"images must be a torch.Tensor of shape \(N, 3, H, W\), "
                                        r"a Dataset or a DataLoader; got a list of 2"):
        extract_features(model, [torch.zeros(3, 8, 8)] * 2, progress=False)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module; got function"):
        extract_features(lambda x: x, torch.zeros(2, 3, 8, 8), progress=False)


def test_class_ids_far_beyond_the_classes_are_refused_not_allocated() -> None:
    bank, labels, queries, truth = clusters()
    huge = labels.clone()
    huge[0] = 10**10
    with pytest.raises(ValueError, match=r"bank_labels go up to 10000000000\) for 20 queries "
                                         r"would need a \(20, 10000000001\) table"):
        knn_classify(bank, huge, queries)
    with pytest.raises(ValueError, match=r"num_classes=10000000000 .* class ids must be 0..C-1"):
        knn_accuracy(bank, labels, queries, truth, num_classes=10**10)
    with pytest.raises(ValueError, match="k=51 is larger than the bank, which has 50 features"):
        knn_classify(bank, labels, queries, k=51)

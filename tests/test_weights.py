"""teachkit.infra.weights.load_strict: the one strict loader of the hub, pretrained and SAM."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from teachkit.infra.weights import LISTED_KEYS, StateDictMismatchError, load_strict


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_every_kind_of_mismatch_in_one_error_naming_the_source() -> None:
    state = _net().state_dict()
    del state["0.bias"]
    state["0.extra"] = torch.zeros(2)
    state["0.weight"] = torch.zeros(5, 4)
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    with pytest.raises(StateDictMismatchError) as err:
        load_strict(model, state, source="checkpoint 'tiny.pt'")
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert msg.startswith("checkpoint 'tiny.pt' does not fit this model: ")
    assert "missing keys (1): 0.bias" in msg
    assert "unexpected keys (1): 0.extra" in msg
    assert "shape mismatches (1): 0.weight: checkpoint (5, 4) vs model (3, 4)" in msg
    assert "Sequential" in msg and "nothing was loaded" in msg
    assert (err.value.missing, err.value.unexpected) == (["0.bias"], ["0.extra"])
    assert err.value.source == "checkpoint 'tiny.pt'"
    for k, v in model.state_dict().items():  # nothing was copied, not even what fitted
        assert torch.equal(v, before[k]), k


def test_long_lists_are_cut_with_a_count() -> None:
    model = nn.ModuleList(nn.Linear(1, 1, bias=False) for _ in range(LISTED_KEYS + 5))
    with pytest.raises(ValueError, match=rf"missing keys \({LISTED_KEYS + 5}\): .*\(5 more\)"):
        load_strict(model, {}, source="empty.pt")


def test_success_is_bit_exact_and_floats_take_the_model_dtype() -> None:
    source = _net()
    source[1].running_mean.normal_()
    source[1].num_batches_tracked.fill_(7)
    exact = _net().double()
    state = {k: v.double() if v.is_floating_point() else v for k, v in source.state_dict().items()}
    assert load_strict(exact, state, source="x") is exact
    for k, v in exact.state_dict().items():
        assert torch.equal(v, state[k]), k
        assert v.dtype == (torch.float64 if v.is_floating_point() else torch.int64)

    half = {k: v.half() if v.is_floating_point() else v for k, v in source.state_dict().items()}
    model = _net()
    load_strict(model, half, source="x")
    for k, v in model.state_dict().items():
        assert v.dtype == source.state_dict()[k].dtype, k
        assert torch.equal(v, half[k].to(v.dtype)), k


def test_ignored_prefixes_and_values_that_are_not_tensors() -> None:
    model = _net()
    state = {**_net().state_dict(), "head.weight": torch.zeros(1)}
    load_strict(model, state, source="x", ignore_prefixes=("head.",))
    with pytest.raises(ValueError, match="unexpected keys \\(1\\): head.weight"):
        load_strict(model, state, source="x")
    with pytest.raises(ValueError, match="f.pt must be a mapping of names to tensors; got list"):
        load_strict(model, [1], source="f.pt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"f.pt: values must be tensors; not so for \['epoch'\]"):
        load_strict(model, {**state, "epoch": 3}, source="f.pt")  # type: ignore[dict-item]


def _unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "spoil,message",
    [
        # a meta tensor fails only while copying: the tensors before it would be copied
        (lambda s: s.update({"1.running_var": torch.empty(3, device="meta")}),
         r"f.pt: tensors on the meta device, which hold no values \(1\): 1.running_var"),
        (lambda s: s.update({"1.weight": s["1.weight"].to_sparse()}),
         r"tensors that are not dense \(strided\) \(1\): 1.weight \(torch.sparse_coo\)"),
        (lambda s: s.update({3: torch.zeros(1)}), r"keys must be parameter names \(strings\)"),
        (lambda s: s.update({"1.num_batches_tracked": torch.tensor(2.5)}),
         r"cannot hold \(1\): 1.num_batches_tracked: checkpoint torch.float32 vs model torch.int64"),
        (lambda s: s.update({"0.bias": s["0.bias"].to(torch.complex64)}),
         r"0.bias: checkpoint torch.complex64 vs model torch.float32"),
    ],
)
def test_tensors_that_fail_late_are_refused_before_the_first_copy(spoil, message) -> None:
    state = {k: v + 1 for k, v in _net().state_dict().items()}  # differs from the model
    spoil(state)
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        load_strict(model, state, source="f.pt")
    assert _unchanged(model, before)

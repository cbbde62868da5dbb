import pytest
import torch

from teachkit.infra.hardware import pick_device, pick_precision
from teachkit.profiles import get_profile, seed_everything


def test_quick_is_default_and_runs_on_cpu(monkeypatch):
    monkeypatch.delenv("TEACHKIT_PROFILE", raising=False)
    p = get_profile()
    assert p.name == "quick" and p.device.type == "cpu" and p.dataset == "shapes"
    assert p.offline and p.precision.name == "fp32"
    assert p.choose(quick=1, full=2) == 1


def test_full_profile_from_environment(monkeypatch):
    monkeypatch.setenv("TEACHKIT_PROFILE", "full")
    p = get_profile()
    assert p.name == "full" and p.dataset == "cifar10" and not p.offline
    assert p.choose(quick=1, full=2) == 2


def test_unknown_profile_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown profile 'fast'.*\['quick', 'full'\]"):
        get_profile("fast")


@pytest.mark.parametrize(
    ("capability", "name", "dtype", "scaler"),
    [
        ((7, 5), "fp16", torch.float16, True),  # T4: bf16 would be emulated
        ((7, 0), "fp16", torch.float16, True),  # V100
        ((8, 0), "bf16", torch.bfloat16, False),  # A100
        ((9, 0), "bf16", torch.bfloat16, False),  # H100
    ],
)
def test_precision_follows_compute_capability(capability, name, dtype, scaler):
    prec = pick_precision("cuda", capability=capability)
    assert (prec.name, prec.autocast_dtype, prec.use_grad_scaler) == (name, dtype, scaler)


def test_precision_reads_capability_from_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert pick_precision("cuda").name == "fp16"


def test_cpu_precision_is_fp32_and_autocast_is_a_no_op():
    prec = pick_precision("cpu")
    assert prec.name == "fp32" and not prec.use_grad_scaler
    with prec.autocast("cpu"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


def test_pick_device_order(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device().type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device().type == "cpu"
    assert pick_device("cpu").type == "cpu"


def test_pick_device_is_the_one_resolver_with_one_message(monkeypatch):
    """A device this machine lacks gets the same message from a function and a flag."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^device='cuda:1': no GPU is available to PyTorch"):
        pick_device("cuda:1")
    with pytest.raises(ValueError, match=r"^--device cuda: no GPU is available to PyTorch"):
        pick_device("cuda", what="--device")
    with pytest.raises(ValueError, match=r"^device='mps': MPS is not available here"):
        pick_device("mps")
    with pytest.raises(ValueError, match=r"^device='tpu9' is not a device name \(cpu, cuda"):
        pick_device("tpu9")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"device='cuda:1': there are only 1 GPU\(s\)"):
        pick_device("cuda:1")
    # the shapes' generator, the k-NN and the commands ask the same resolver
    from teachkit.data.shapes import make_shapes
    from teachkit.infra.cli_checks import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^device='cuda': no GPU is available"):
        make_shapes(2, device="cuda")
    with pytest.raises(ValueError, match=r"^--device cuda: no GPU is available"):
        check_device("cuda")


def test_seeding_repeats_random_numbers():
    seed_everything(3)
    a = torch.randn(5)
    seed_everything(3)
    assert torch.equal(a, torch.randn(5))


def test_describe_prints_settings_and_model_size():
    text = get_profile("quick").describe(torch.nn.Linear(10, 10))
    for key in ("profile", "device", "precision", "dataset", "model size"):
        assert key in text
    assert "0.00 M" in text  # 110 parameters

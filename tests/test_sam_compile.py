"""``torch.compile`` on SAM's image encoder (issue 14: the benchmark's compiled row failed
with ``TypeError: ImageEncoderViT does not support len()``).

The cause was the benchmark, not the model: ``encoder or default`` asks for the truth
value of the compiled module, and the ``OptimizedModule`` that ``torch.compile`` returns
answers through ``len()``, which the encoder does not have. These tests compile the tiny
encoder with inductor on the CPU, check it against eager, and time it through the
benchmark's own row function.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from teachkit.sam import build_sam

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SLOW = os.environ.get("TEACHKIT_SLOW_TESTS") == "1"
CAN_COMPILE = torch._dynamo.is_dynamo_supported() and any(
    shutil.which(cc) for cc in ("g++", "c++", "clang++")
)

pytestmark = [
    pytest.mark.usefixtures("one_thread"),  # see conftest.py
    pytest.mark.skipif(not CAN_COMPILE, reason="torch.compile (inductor + a C++ compiler) missing"),
]


def sam_latency():
    """benchmarks/sam_latency.py as a module (it imports bench_timing from its folder)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("sam_latency", BENCHMARKS / "sam_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_encoder():
    torch.manual_seed(0)
    sam = build_sam("vit_tiny_shapes")
    with torch.no_grad():  # trained-like position tables, so the rel-pos path does work
        for name, p in sam.image_encoder.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                p.copy_(0.1 * torch.randn(p.shape))
    return sam.image_encoder.eval()


def test_compiled_encoder_matches_eager_and_times_in_the_benchmark(tiny_encoder):
    torch._dynamo.reset()
    compiled = torch.compile(tiny_encoder)
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        eager = tiny_encoder(x)
        got = compiled(x)
    assert got.shape == eager.shape == (1, 64, 16, 16)
    assert torch.allclose(got, eager, atol=1e-4, rtol=1e-4), (got - eager).abs().max()

    # The benchmark's row on the compiled module (same mode and shapes: no recompile).
    row = sam_latency().time_encoder(
        compiled, x, device=torch.device("cpu"), bf16=False, warmup=0, repeats=1
    )
    assert row["batch"] == 1 and row["ms"] > 0


@pytest.mark.skipif(not SLOW, reason="about a minute (a bf16 compile); TEACHKIT_SLOW_TESTS=1")
def test_benchmark_tiny_compile_row_has_no_error(tmp_path):
    """The whole `sam_latency.py --tiny --compile` run, as on the GPU machine."""
    torch._dynamo.reset()
    args = "--tiny --compile --device cpu --threads 1 --repeats 1 --batch 1".split()
    report = sam_latency().main([*args, "--out", str(tmp_path / "sam.json")])
    row = report["rows"]["encoder.b1.teachkit.bf16_compiled"]
    assert "error" not in row and row["ms"] > 0, row

"""teachkit.sam model code against the official ``segment_anything`` package.

The official modules are the reference: the same state dict is loaded into both models
(strictly) and their outputs are compared. Random weights are perturbed first so that
parameters the official code zero-initialises (``pos_embed``, ``rel_pos_*``) and
LayerNorm affines (ones / zeros) take part in the comparison.

The full ViT-B image encoder at 1024 x 1024 takes minutes on two busy CPU cores, so
that comparison only runs with ``TEACHKIT_SLOW_TESTS=1``; by default ViT-B is compared
block by block on a small token grid, which also exercises window padding and the
interpolation of the relative-position tables.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from sam_reference import SMALL, official_sam
from segment_anything import sam_model_registry
from segment_anything.utils.transforms import ResizeLongestSide

from teachkit.profiles import count_parameters
from teachkit.sam import build_sam, build_sam_from_config, load_sam_checkpoint
from teachkit.sam.model import preprocess_shape, resize_longest_side
from teachkit.sam.sizes import SAM_CONFIGS

TOL = 1e-4
SLOW = os.environ.get("TEACHKIT_SLOW_TESTS") == "1"


@torch.no_grad()
def perturb_(model: torch.nn.Module, seed: int, rel_std: float = 0.1) -> None:
    """Give zero-initialised tables and LayerNorm affines random values, in place."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if "rel_pos" in name or "pos_embed" in name:
            p.copy_(rel_std * noise)
        elif p.ndim == 1:
            p.add_(0.1 * noise)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def prompts(g: int, img_size: int, batch: int = 2, seed: int = 0) -> dict[str, dict]:
    """Point, box, mask and combined prompts in the input frame."""
    gen = torch.Generator().manual_seed(seed)
    coords = torch.rand(batch, 3, 2, generator=gen) * (img_size - 1)
    labels = torch.tensor([[1, 0, 1], [0, 1, 1]])[:batch]
    lo = torch.rand(batch, 2, generator=gen) * img_size / 2
    boxes = torch.cat([lo, lo + torch.rand(batch, 2, generator=gen) * img_size / 2], dim=1)
    masks = torch.randn(batch, 1, 4 * g, 4 * g, generator=gen)
    return {
        "points": dict(points=(coords, labels), boxes=None, masks=None),
        "box": dict(points=None, boxes=boxes, masks=None),
        "mask": dict(points=None, boxes=None, masks=masks),
        "combined": dict(points=(coords, labels), boxes=boxes, masks=masks),
    }


def decode_both(pair, embedding, prompt, multimask):
    """(official, ours) decoder outputs on the same embedding and prompt."""
    outs = []
    for model in pair:
        sparse, dense = model.prompt_encoder(**prompt)
        outs.append(
            model.mask_decoder(
                embedding, model.prompt_encoder.get_dense_pe(), sparse, dense, multimask
            )
        )
    return outs


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ---------------------------------------------------------------- small architecture
@pytest.fixture(scope="module")
def small_pair():
    torch.manual_seed(0)
    ref = official_sam(SMALL)
    perturb_(ref, seed=1, rel_std=0.5)
    ours = build_sam_from_config(SMALL)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def test_small_encoder_matches_official(small_pair):
    ref, ours = small_pair
    x = torch.randn(
        2, 3, SMALL.img_size, SMALL.img_size, generator=torch.Generator().manual_seed(2)
    )
    with torch.no_grad():
        expected, got = ref.image_encoder(50 * x), ours.image_encoder(50 * x)
    assert got.shape == (2, 64, 10, 10)
    assert max_err(expected, got) < TOL


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("kind", ["points", "box", "mask", "combined"])
def test_small_decoder_matches_official(small_pair, kind, multimask):
    g = SMALL.embedding_size
    embedding = torch.randn(1, 64, g, g, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        (m_ref, iou_ref), (m_ours, iou_ours) = decode_both(
            small_pair, embedding, prompts(g, SMALL.img_size)[kind], multimask
        )
    assert m_ours.shape == (2, 3 if multimask else 1, 4 * g, 4 * g)
    assert iou_ours.shape == (2, 3 if multimask else 1)
    assert max_err(m_ref, m_ours) < TOL
    assert max_err(iou_ref, iou_ours) < TOL


def test_small_forward_matches_official_end_to_end(small_pair):
    ref, ours = small_pair
    gen = torch.Generator().manual_seed(4)
    image = torch.randint(0, 256, (3, 120, 160), generator=gen).float()  # resized already
    record = {
        "image": image,
        "original_size": (90, 120),
        "boxes": torch.tensor([[10.0, 20.0, 100.0, 110.0]]),
        "point_coords": torch.tensor([[[50.0, 60.0]]]),
        "point_labels": torch.tensor([[1]]),
    }
    expected = ref([record], multimask_output=True)[0]
    got = ours([record], multimask_output=True, return_logits=True)[0]
    assert got["masks"].shape == (1, 3, 90, 120)
    assert max_err(expected["low_res_logits"], got["low_res_logits"]) < TOL
    assert max_err(expected["iou_predictions"], got["iou_predictions"]) < TOL
    confident = got["masks"].abs() > 1e-3
    assert torch.equal(expected["masks"][confident], (got["masks"] > 0)[confident])


def test_decoder_accepts_one_embedding_per_prompt(small_pair):
    _, ours = small_pair
    g = SMALL.embedding_size
    embeddings = torch.randn(2, 64, g, g, generator=torch.Generator().manual_seed(5))
    boxes = torch.tensor([[0.0, 0.0, 80.0, 80.0], [40.0, 30.0, 150.0, 120.0]])
    with torch.no_grad():
        batched, _ = ours.decode(embeddings, boxes=boxes)
        singles = [ours.decode(embeddings[i : i + 1], boxes=boxes[i : i + 1])[0] for i in range(2)]
    assert max_err(batched, torch.cat(singles)) < 1e-5


# ------------------------------------------------------------------------- ViT-B
@pytest.fixture(scope="module")
def vit_b_pair():
    torch.manual_seed(0)
    ref = sam_model_registry["vit_b"](checkpoint=None)
    perturb_(ref, seed=6)
    ours = build_sam("vit_b")
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def test_vit_b_state_dict_matches_official(vit_b_pair):
    ref, ours = vit_b_pair
    ref_sd, ours_sd = ref.state_dict(), ours.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert all(ours_sd[k].shape == v.shape for k, v in ref_sd.items())
    assert "pixel_mean" not in ours_sd  # non-persistent, as in the official release
    assert torch.equal(ours.pixel_mean, ref.pixel_mean)
    assert torch.equal(ours.pixel_std, ref.pixel_std)


def _encode_small_grid(encoder: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Patch embed + all blocks + neck on a grid smaller than 64 x 64 (no size check)."""
    tokens = encoder.patch_embed(x)
    h, w = tokens.shape[1:3]
    tokens = tokens + encoder.pos_embed[:, :h, :w]
    for block in encoder.blocks:
        tokens = block(tokens)
    return encoder.neck(tokens.permute(0, 3, 1, 2))


def test_vit_b_encoder_blocks_match_official_on_small_grid(vit_b_pair):
    """12 x 12 grid: windows of 14 are padded, global rel-pos tables are interpolated."""
    ref, ours = vit_b_pair
    x = torch.randn(1, 3, 192, 192, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = _encode_small_grid(ref.image_encoder, x)
        got = _encode_small_grid(ours.image_encoder, x)
    assert got.shape == (1, 256, 12, 12)
    assert max_err(expected, got) < TOL


@pytest.mark.parametrize("kind", ["points", "box", "mask", "combined"])
def test_vit_b_decoder_matches_official(vit_b_pair, kind):
    """All 4 mask tokens at once (single-mask output = token 0, multimask = tokens 1..3)."""
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(8))
    prompt = prompts(64, 1024, batch=1)[kind]
    outs = []
    with torch.no_grad():
        for model in vit_b_pair:
            sparse, dense = model.prompt_encoder(**prompt)
            pe = model.prompt_encoder.get_dense_pe()
            outs.append(model.mask_decoder.predict_masks(embedding, pe, sparse, dense))
    (m_ref, iou_ref), (m_ours, iou_ours) = outs
    assert m_ours.shape == (1, 4, 256, 256) and iou_ours.shape == (1, 4)
    assert max_err(m_ref, m_ours) < TOL
    assert max_err(iou_ref, iou_ours) < TOL


@pytest.mark.skipif(not SLOW, reason="ViT-B at 1024 px takes minutes on CPU; TEACHKIT_SLOW_TESTS=1")
def test_vit_b_full_resolution_matches_official(vit_b_pair):
    ref, ours = vit_b_pair
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected, got = ref.image_encoder(x), ours.image_encoder(x)
        assert got.shape == (1, 256, 64, 64)
        assert max_err(expected, got) < TOL
        for kind, prompt in prompts(64, 1024).items():
            for multimask in (True, False):
                sparse, dense = ref.prompt_encoder(**prompt)
                m_ref, iou_ref = ref.mask_decoder(
                    expected, ref.prompt_encoder.get_dense_pe(), sparse, dense, multimask
                )
                m_ours, iou_ours = ours.decode(
                    got,
                    point_coords=None if prompt["points"] is None else prompt["points"][0],
                    point_labels=None if prompt["points"] is None else prompt["points"][1],
                    boxes=prompt["boxes"],
                    mask_input=prompt["masks"],
                    multimask_output=multimask,
                )
                assert max_err(m_ref, m_ours) < TOL, kind
                assert max_err(iou_ref, iou_ours) < TOL, kind


# ------------------------------------------------------------ ViT-L / ViT-H on meta
@pytest.mark.parametrize("name", ["vit_l", "vit_h"])
def test_large_configs_match_official_on_meta(name):
    with torch.device("meta"):
        ref = sam_model_registry[name](checkpoint=None)
        ours = build_sam(name)
    ref_sd, ours_sd = ref.state_dict(), ours.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in ref_sd.items()}
    assert count_parameters(ours) == count_parameters(ref)
    blocks = ours.image_encoder.blocks
    assert [i for i, b in enumerate(blocks) if b.window_size == 0] == list(
        SAM_CONFIGS[name].encoder_global_attn_indexes
    )


# ------------------------------------------------------------- build and checkpoints
def test_build_sam_rejects_unknown_name():
    with pytest.raises(ValueError, match=r"unknown SAM model 'vit_x'.*vit_b.*vit_h.*vit_l"):
        build_sam("vit_x")


def test_checkpoint_round_trip_and_strict_errors(tmp_path):
    torch.manual_seed(10)
    source = build_sam("vit_tiny_shapes")
    perturb_(source, seed=11)
    path = tmp_path / "tiny.pth"
    torch.save(source.state_dict(), path)
    loaded = build_sam("vit_tiny_shapes", path)
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k

    broken = dict(source.state_dict())
    del broken["mask_decoder.iou_token.weight"]
    broken["mask_decoder.extra.weight"] = torch.zeros(1)
    torch.save(broken, path)
    with pytest.raises(ValueError, match=r"missing keys \['mask_decoder.iou_token.weight'\]"):
        build_sam("vit_tiny_shapes", path)
    with pytest.raises(ValueError, match=r"unexpected keys \['mask_decoder.extra.weight'\]"):
        load_sam_checkpoint(loaded, path)

    torch.save(source.state_dict(), path)
    small = build_sam_from_config(SMALL)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_sam_checkpoint(small, path)
    with pytest.raises(FileNotFoundError, match=r"weights file not found: .*missing.pth"):
        build_sam("vit_tiny_shapes", tmp_path / "missing.pth")


@pytest.mark.parametrize(
    "body",
    [
        lambda good: good[: len(good) // 2],  # truncated (a download cut short)
        lambda good: b"<html>404 Not Found</html>",  # not a checkpoint at all
        lambda good: b"",
    ],
)
def test_an_unreadable_checkpoint_names_the_file(tmp_path, body):
    path = tmp_path / "tiny.pth"
    torch.save(build_sam("vit_tiny_shapes").state_dict(), path)
    path.write_bytes(body(path.read_bytes()))
    model = build_sam("vit_tiny_shapes")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"cannot load {path}(: the file is| as a PyTorch "
                                         r"checkpoint \(\w+: .*\); is it truncated)"):
        load_sam_checkpoint(model, path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    torch.save({"step": 3}, path)  # a readable file that holds no weights
    with pytest.raises(ValueError, match=rf"{path}: checkpoint is neither a plain state dict"):
        load_sam_checkpoint(model, path)


def test_tiny_config_matches_official_architecture():
    cfg = SAM_CONFIGS["vit_tiny_shapes"]
    ref, ours = official_sam(cfg), build_sam("vit_tiny_shapes")
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert ours.prompt_encoder.mask_input_size == (64, 64)
    assert count_parameters(ours) < 1_500_000


# ------------------------------------------------------------------ training paths
# A box prompt needs no padding point; a mask prompt replaces the no-mask embedding.
UNUSED_WITH_BOX_AND_MASK = {
    "prompt_encoder.not_a_point_embed.weight",
    "prompt_encoder.no_mask_embed.weight",
}


def test_tiny_sam_trains_gradients_reach_every_parameter():
    torch.manual_seed(12)
    sam = build_sam("vit_tiny_shapes").train()
    perturb_(sam, seed=13)
    record = {
        "image": torch.rand(3, 128, 96) * 255,
        "original_size": (128, 96),
        "boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]),
        "point_coords": torch.tensor([[[30.0, 40.0]]]),
        "point_labels": torch.tensor([[1]]),
        "mask_inputs": torch.randn(1, 1, 64, 64),
    }
    out = sam([record], multimask_output=True)[0]
    loss = out["low_res_logits"].sigmoid().mean() + out["iou_predictions"].pow(2).mean()
    loss.backward()
    no_grad = [
        n for n, p in sam.named_parameters() if p.grad is None and n not in UNUSED_WITH_BOX_AND_MASK
    ]
    assert no_grad == []
    assert sam.image_encoder.blocks[1].attn.rel_pos_h.grad.abs().sum() > 0


def test_bf16_autocast_runs_attention_in_bf16_and_stays_close():
    torch.manual_seed(14)
    sam = build_sam("vit_tiny_shapes")
    perturb_(sam, seed=15)
    dtypes = []
    for block in sam.image_encoder.blocks:  # windowed and global attention
        block.attn.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        fp32 = sam.image_encoder(x)
        dtypes.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = sam.image_encoder(x)
    assert dtypes == [torch.bfloat16] * 4
    assert torch.isfinite(bf16).all()
    assert max_err(fp32, bf16.float()) < 0.1 * fp32.abs().max().item()


# ------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("size", [(90, 120), (120, 90), (64, 64), (33, 1000), (1, 7)])
def test_resize_geometry_matches_official(size):
    assert preprocess_shape(*size, 1024) == ResizeLongestSide.get_preprocess_shape(*size, 1024)
    image = np.random.default_rng(16).integers(0, 256, (*size, 3), dtype=np.uint8)
    ours = resize_longest_side(image, 128)
    assert np.array_equal(ours, ResizeLongestSide(128).apply_image(image))


def test_preprocess_pads_bottom_right_and_postprocess_crops(small_pair):
    _, ours = small_pair
    image = torch.full((3, 100, 160), 255.0)
    padded = ours.preprocess(image[None])
    assert padded.shape == (1, 3, 160, 160)
    assert torch.all(padded[..., 100:, :] == 0)
    assert torch.all(padded[..., :100, :] > 0)
    low_res = torch.zeros(1, 1, 40, 40)
    low_res[..., :25, :] = 1.0  # covers exactly the 100 unpadded input rows
    masks = ours.postprocess_masks(low_res, (100, 160), (50, 80))
    assert masks.shape == (1, 1, 50, 80)
    assert torch.all(masks > 0.5)

"""Every shipped checkpoint reproduces the results its model card records.

These tests also pin the procedural datasets (shapes, critters): if a generator
changed, the shipped models would no longer score what their cards say.
"""

import pytest
import torch

from teachkit import pretrained
from teachkit.data.shapes import make_shapes, shapes_splits
from teachkit.knn import extract_features, knn_accuracy


def _builders():
    from teachkit.models.resnet import small_cnn
    from teachkit.pretext.autoencoder import ConvAutoencoder
    from teachkit.pretext.contrastive import ContrastiveModel
    from teachkit.supervised import Classifier

    def autoencoder():
        model = ConvAutoencoder(resolution=32, code_dim=128)
        return model, torch.nn.Sequential(model.encoder), lambda x: x.float() / 255

    def contrastive():
        model = ContrastiveModel(small_cnn(width=32, embed_dim=128))
        return model, model, None

    def supervised_cnn():
        model = Classifier(small_cnn(), num_classes=10)
        return model, model.backbone, None

    return {
        "ch1_autoencoder_critters": autoencoder,  # Chapter 1
        "ch1_contrastive_critters": contrastive,
        "ch1_contrastive_shapes": contrastive,  # Chapter 3: the shortcut study
        "contrastive_shapes_shortcuts": contrastive,  # Chapter 3: trained with shortcuts
        "shapes_small_cnn_supervised": supervised_cnn,
    }


KNN_MODELS = [n for n in pretrained.available() if n in _builders()]


@pytest.fixture(scope="module")
def splits():
    """The split each card names, by dataset, drawn once."""
    from teachkit.data.critters import critters_splits

    torch.set_num_threads(1)  # deterministic reductions, and fast on a shared machine
    return {"shapes": shapes_splits(5000, 1000, seed=0),
            "critters": critters_splits(5000, 1000, seed=0)}


DINO_MODELS = [n for n in pretrained.available() if pretrained.load_card(n).config.get("arch")]


@pytest.mark.parametrize("name", DINO_MODELS)
def test_shipped_dino_backbone_reproduces_its_card(name):
    """The teacher backbones shipped by ``ship``: k-NN of the trained network, of its
    random initialisation and of raw pixels, on the split the card names."""
    from teachkit.dino.config import DINOConfig
    from teachkit.dino.export import build_run_backbone, evaluate_backbone

    torch.set_num_threads(1)
    card = pretrained.load_card(name)
    config = DINOConfig.from_dict(card.config)
    model = build_run_backbone(config)
    pretrained.load_shipped(name, model)
    shortcuts = "shortcuts=True" in card.data
    dataset = "critters" if card.data.startswith("critters") else "shapes"
    measured = evaluate_backbone(
        model, random_init=build_run_backbone(config), dataset=dataset, shortcuts=shortcuts,
        data_variant=card.data_variant,
    )
    for key in ("knn_top1_percent", "random_init_knn_top1_percent", "pixels_knn_top1_percent"):
        assert abs(measured[key] - card.results[key]) <= 1.0, (key, measured[key], card.results)
    for key in ("attention_jaccard_best_head", "attention_jaccard_head_average",
                "random_init_attention_jaccard_head_average"):
        if key in card.results:
            assert abs(measured[key] - card.results[key]) <= 0.01, (key, measured[key])


def test_the_critters_learning_curve_bar_is_met_by_the_default_data():
    """Issue 12's curve bar: a small CNN, batch 128, one thread, 1,000 steps of DINO must
    rise 10 points of k-NN above its random initialisation. It does on the defaults
    (faint context palettes, context_strength=0.2) and on one neutral background (0); it
    did not on the full-strength palettes that were the default before (+6.9). The k-NN
    of the shipped weights and of the random initialisation is re-measured above
    (test_shipped_dino_backbone_reproduces_its_card); here, the bar on those figures."""
    from teachkit.data.critters import CrittersConfig

    assert CrittersConfig().context_strength == 0.2
    default = pretrained.load_card("dino_cnn_critters_ctx20_curve")
    plain = pretrained.load_card("dino_cnn_critters_plain_curve")
    full = pretrained.load_card("dino_cnn_critters_curve")
    for card, strength in [(default, 0.2), (plain, 0.0), (full, 1.0)]:
        assert card.data_variant == {"context_strength": strength}, card.data_variant
        assert card.config["batch_size"] == 128 and card.history["epoch_step"][-1] == 1000
    for card in (default, plain):
        gain = card.results["knn_top1_percent"] - card.results["random_init_knn_top1_percent"]
        assert gain >= 10, card.results
    assert full.results["knn_top1_percent"] - full.results["random_init_knn_top1_percent"] < 10


def test_critters_vit_attention_segments_better_than_its_init_and_a_centre_blob():
    """Issue 12's attention bar, on the card's 1,000 test images: the heads' averaged
    [CLS] attention (60 % mass) of the DINO ViT-nano beats its random initialisation by
    0.15 Jaccard and a fixed centre blob put through the same threshold."""
    from teachkit.attention import jaccard, mass_threshold, upsample_patches
    from teachkit.data.critters import critters_splits

    card = pretrained.load_card("dino_vit_nano_critters")
    dino = card.results["attention_jaccard_head_average"]
    assert dino >= card.results["random_init_attention_jaccard_head_average"] + 0.15, card.results
    _, test = critters_splits(5000, 1000, seed=0)
    grid, patch = 8, card.config["patch_size"]
    yy, xx = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    c = (grid - 1) / 2
    bump = torch.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * (grid / 4) ** 2))
    blob = upsample_patches(mass_threshold(bump, mass=0.6), patch)
    blob_score = jaccard(blob.expand_as(test.masks), test.masks.bool()).mean().item()
    assert 0.3 < blob_score < dino, (blob_score, dino)
    # since the ViT continued on the default data, its best single head clears the blob too
    assert blob_score < card.results["attention_jaccard_best_head"], (blob_score, card.results)


@pytest.mark.parametrize("name", KNN_MODELS)
def test_shipped_model_reproduces_its_knn_accuracy(name, splits):
    model, features, preprocess = _builders()[name]()
    card = pretrained.load_shipped(name, model)
    train, test = splits["critters" if card.data.startswith("critters") else "shapes"]
    kw = dict(progress=False, preprocess=preprocess)
    bank = extract_features(features, train.images, **kw)
    queries = extract_features(features, test.images, **kw)
    top1 = knn_accuracy(bank, train.labels, queries, test.labels)["top1"]
    # fp16 storage moves a few borderline votes at most
    assert abs(top1 - card.results["knn_top1_percent"]) <= 1.0


def test_a_small_cnn_learns_the_shape_classes():
    """The dataset's bar: a small CNN trained briefly with labels reaches >= 90 % on
    images it never saw (fresh seed), where raw pixels stay <= 45 % (test_shapes.py)."""
    from teachkit.supervised import accuracy

    model, _, _ = _builders()["shapes_small_cnn_supervised"]()
    card = pretrained.load_shipped("shapes_small_cnn_supervised", model)
    fresh = make_shapes(1000, seed=2026)
    assert accuracy(model, fresh.images, fresh.labels) >= 90.0
    assert card.results["test_accuracy_percent"] >= 90.0


def test_a_small_cnn_learns_the_critter_classes():
    """The critters dataset's bar: the small CNN trained with labels (4,000 steps of 64
    fresh images) reaches >= 90 % on critters it never saw, and its card's k-NN figure
    is reproduced on the split the chapters use."""
    from teachkit.data.critters import critters_splits, make_critters
    from teachkit.supervised import accuracy

    torch.set_num_threads(1)
    model, features, _ = _builders()["shapes_small_cnn_supervised"]()
    card = pretrained.load_shipped("critters_small_cnn_supervised", model)
    fresh = make_critters(1000, seed=2026)
    assert accuracy(model, fresh.images, fresh.labels) >= 90.0
    assert card.results["test_accuracy_percent"] >= 90.0
    train, test = critters_splits(5000, 1000, seed=0)
    bank = extract_features(features, train.images, progress=False)
    queries = extract_features(features, test.images, progress=False)
    top1 = knn_accuracy(bank, train.labels, queries, test.labels)["top1"]
    assert abs(top1 - card.results["knn_top1_percent"]) <= 1.0


def test_dino_learns_on_critters_and_not_on_shapes():
    """What Chapter 3 tells: on critters DINO climbs above its random initialisation and
    raw pixels already in the 1,000-step CPU curve; on shapes it stays level with its
    random init."""
    curve = pretrained.load_card("dino_cnn_critters_curve").results
    assert curve["knn_top1_percent"] >= curve["random_init_knn_top1_percent"] + 5
    assert curve["knn_top1_percent"] >= curve["pixels_knn_top1_percent"] + 7
    for name in ("dino_cnn_shapes", "dino_vit_nano_shapes"):
        shapes = pretrained.load_card(name).results
        assert abs(shapes["knn_top1_percent"] - shapes["random_init_knn_top1_percent"]) < 3


@pytest.mark.parametrize("name", ["dino_cnn_critters", "dino_vit_nano_critters"])
def test_shipped_critters_dino_models_meet_the_bar(name):
    """Issue 12's bar for the shipped DINO models: k-NN >= random init + 20 points and
    >= raw pixels + 25 points on the default critters (the cards' figures, re-measured by
    the test above)."""
    card = pretrained.load_card(name)
    assert card.data_variant in ({}, {"context_strength": 0.2}), card.data_variant
    results = card.results
    assert results["knn_top1_percent"] >= results["random_init_knn_top1_percent"] + 20
    assert results["knn_top1_percent"] >= results["pixels_knn_top1_percent"] + 25


def test_the_small_cnn_was_made_in_one_stage_from_random_init_and_meets_its_bars():
    """Issue 21's one-stage bars: one package command from the random initialisation
    (no --init), k-NN >= random init + 25 points and >= raw pixels + 25 points."""
    card = pretrained.load_card("dino_cnn_critters")
    assert card.init == "" and "--init" not in card.command
    assert "python -m teachkit.train dino --preset cnn_critters" in card.command
    results = card.results
    assert results["knn_top1_percent"] >= results["random_init_knn_top1_percent"] + 25
    assert results["knn_top1_percent"] >= results["pixels_knn_top1_percent"] + 25


def test_shipped_tiny_sam_reproduces_its_card():
    """The tiny SAM's recorded mIoU (1 point, box, seen vs unseen) on the fixed held-out scenes."""
    from teachkit.sam.config import SamTrainConfig, seen_class_ids
    from teachkit.sam.evaluate import eval_scenes, evaluate_sam
    from teachkit.sam.train import build_training_sam

    cfg = SamTrainConfig()
    model = build_training_sam(cfg)
    card = pretrained.load_shipped("sam_tiny_shapes", model)
    scenes = eval_scenes(200, resolution=cfg.resolution)
    summary = evaluate_sam(model, scenes, seen_classes=seen_class_ids(cfg.holdout),
                           progress=False).summary()
    for key in ("miou_1point", "miou_1point_unseen", "miou_box"):
        assert abs(summary[key] - card.results[key]) <= 0.01, key


def test_tiny_sam_fine_tuned_on_critters_reproduces_its_card_and_beats_its_start():
    """Chapter 7's SAM: Chapter 6's model fine-tuned on critters scenes. Its card's mIoU
    on the fixed held-out critters scenes, well above the model it started from."""
    from teachkit.sam.config import SamTrainConfig
    from teachkit.sam.evaluate import eval_scenes, evaluate_sam
    from teachkit.sam.train import build_training_sam

    cfg = SamTrainConfig(dataset="critters")
    tuned, start = build_training_sam(cfg), build_training_sam(cfg)
    card = pretrained.load_shipped("sam_tiny_critters", tuned)
    assert "--dataset critters --init sam_tiny_shapes" in card.command, card.command
    pretrained.load_shipped("sam_tiny_shapes", start)
    scenes = eval_scenes(200, resolution=cfg.resolution, dataset="critters")
    tuned_scores = evaluate_sam(tuned, scenes, progress=False).summary()
    start_scores = evaluate_sam(start, scenes, progress=False).summary()
    for key in ("miou_1point", "miou_box"):
        assert abs(tuned_scores[key] - card.results[key]) <= 0.01, key
        assert tuned_scores[key] > start_scores[key] + 0.1, (key, tuned_scores, start_scores)
    # the starting point Chapter 7 quotes (0.67 one point, 0.74 box on these scenes)
    assert abs(start_scores["miou_1point"] - 0.672) <= 0.01 and abs(start_scores["miou_box"] - 0.736) <= 0.01


def test_shipped_unet_reproduces_its_card():
    from teachkit.sam.config import SamTrainConfig, seen_class_ids
    from teachkit.sam.evaluate import eval_scenes
    from teachkit.sam.unet import UNet, evaluate_unet

    cfg = SamTrainConfig()
    model = UNet(seen_class_ids(cfg.holdout), width=8, depth=4)
    card = pretrained.load_shipped("unet_shapes", model)
    summary = evaluate_unet(model, eval_scenes(200, resolution=cfg.resolution))
    assert abs(summary["miou_seen"] - card.results["miou_seen"]) <= 0.01

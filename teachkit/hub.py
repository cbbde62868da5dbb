"""Pretrained weights: registry of official checkpoints, hashed atomic downloads (the
transfer itself is :mod:`teachkit.infra.download`), strict loading (:mod:`teachkit.infra.weights`).

The course uses the official DINO backbones (Caron et al., 2021, `facebookresearch/dino`
``hubconf.py``) and the three Segment Anything checkpoints (Kirillov et al., 2023), and
ships small models of its own (:mod:`teachkit.pretrained`). One call gives any of them,
built and loaded strictly, with what is known of it::

    from teachkit import hub
    sam, entry = hub.load("sam_vit_b")                     # official: its registry entry
    tiny, card = hub.load("sam_tiny_shapes")               # shipped: its model card

Underneath, the weights alone::

    state = hub.load_state_dict("dino_vits16")         # downloads once, verifies, caches
    hub.load_into(model, state)                        # strict: lists any missing/extra keys

On an offline cluster, copy the file there and pass its path instead of the name::

    state = hub.load_state_dict("/data/weights/dino_deitsmall16_pretrain.pth")

Three things differ from ``torch.hub.load_state_dict_from_url`` + ``strict=False``, the
pattern of the official scripts:

* **Hashes.** Every download is checked against a sha256 before it is put in the cache,
  and a cached file is checked again before it is used. Where no trustworthy sha256 is
  known (the DINO files, see :data:`REGISTRY`), :func:`download` refuses to fetch the
  file unless you pass ``sha256=...`` yourself or say ``verify=False`` explicitly.
* **Atomic files.** The bytes go to a temporary ``.part`` file in the cache directory, and
  only a complete, verified file is renamed (``os.replace``) to its final name. An
  interrupted or corrupted transfer never leaves a file that a later run would load: the
  byte count is checked against ``Content-Length``, and a file without a known sha256 must
  be a complete PyTorch checkpoint (a zip archive whose central directory is there, or a
  legacy file that ``torch.load`` reads). ``.part`` files of killed downloads are removed
  by the next download once nothing has written to them for ten minutes.
* **Strict loading.** :func:`load_into` raises a ``ValueError`` naming every missing,
  unexpected or wrongly shaped key; ``strict=False`` would silently keep random weights.

The cache directory is ``$TEACHKIT_CACHE`` if set, else ``~/.cache/teachkit``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from torch import Tensor, nn

from teachkit.infra.download import check_sha256_format, download_file
from teachkit.infra.weights import load_strict, read_state_dict

__all__ = [
    "REGISTRY",
    "WeightsEntry",
    "download",
    "get_entry",
    "load",
    "load_into",
    "load_state_dict",
]


@dataclass(frozen=True)
class WeightsEntry:
    """One pretrained checkpoint.

    Attributes:
        name: the registry name, e.g. ``"dino_vits16"``.
        url: where the official file lives.
        sha256: the file's sha256 as 64 hex digits, or ``None`` when no trustworthy value
            is known; :func:`download` then refuses unless told ``verify=False``.
        family: ``"dino"`` or ``"sam"``.
        architecture: the keyword arguments that build the matching model, e.g.
            ``{"patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6, ...}``
            for ``teachkit.models.vit.VisionTransformer(**entry.architecture)`` (DINO
            ViTs, 224 px), the ``build_sam`` numbers for SAM, ``{"arch": "resnet50"}``.
        description: one line for humans (model, what it scores, where it comes from).
    """

    name: str
    url: str
    sha256: str | None
    family: str
    architecture: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.sha256 is not None:
            check_sha256_format(self.sha256, what=f"sha256 of {self.name!r}")
        object.__setattr__(self, "architecture", MappingProxyType(dict(self.architecture)))

    @property
    def filename(self) -> str:
        """The file name in the cache: the last component of the URL."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def _dino_vit(patch: int, size: str) -> dict[str, Any]:
    """The official DINO ViT of ``size`` (``VIT_SIZES``) with ``patch``-pixel patches."""
    from teachkit.models.vit import VIT_SIZES

    return dict(patch_size=patch, **VIT_SIZES[size], mlp_ratio=4.0, qkv_bias=True)


def _sam(size: str) -> dict[str, Any]:
    """The encoder numbers of the official SAM ``size`` (``SAM_CONFIGS``)."""
    from teachkit.sam.sizes import SAM_CONFIGS

    cfg = SAM_CONFIGS[size]
    names = ("encoder_embed_dim", "encoder_depth", "encoder_num_heads")
    return {
        **{n: getattr(cfg, n) for n in names},
        "encoder_global_attn_indexes": tuple(cfg.encoder_global_attn_indexes),
    }


_DINO = "https://dl.fbaipublicfiles.com/dino"
_SAM = "https://dl.fbaipublicfiles.com/segment_anything"

_ENTRIES = (
    # DINO (URLs as in facebookresearch/dino hubconf.py). No sha256 is published by the
    # authors and none could be corroborated, so these are None: see the module docstring.
    WeightsEntry(
        "dino_vits16",
        f"{_DINO}/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth",
        None,
        "dino",
        _dino_vit(16, "vit_small"),
        "DINO ViT-S/16 backbone, 21M params, ImageNet k-NN 74.5% top-1",
    ),
    WeightsEntry(
        "dino_vits8",
        f"{_DINO}/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth",
        None,
        "dino",
        _dino_vit(8, "vit_small"),
        "DINO ViT-S/8 backbone, 21M params, ImageNet k-NN 78.3% top-1",
    ),
    WeightsEntry(
        "dino_vitb16",
        f"{_DINO}/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
        None,
        "dino",
        _dino_vit(16, "vit_base"),
        "DINO ViT-B/16 backbone, 85M params, ImageNet k-NN 76.1% top-1",
    ),
    WeightsEntry(
        "dino_vitb8",
        f"{_DINO}/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth",
        None,
        "dino",
        _dino_vit(8, "vit_base"),
        "DINO ViT-B/8 backbone, 85M params, ImageNet k-NN 77.4% top-1",
    ),
    WeightsEntry(
        "dino_resnet50",
        f"{_DINO}/dino_resnet50_pretrain/dino_resnet50_pretrain.pth",
        None,
        "dino",
        dict(arch="resnet50", fc="identity"),
        "DINO ResNet-50 backbone (torchvision layout, fc = Identity), linear 75.3% top-1",
    ),
    # SAM (URLs as in facebookresearch/segment-anything README). The sha256 values are
    # those used for download verification by micro_sam (computational-cell-analytics,
    # micro_sam/util.py `_CHECKSUMS`) and independently by many other public projects.
    WeightsEntry(
        "sam_vit_b",
        f"{_SAM}/sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        "sam",
        _sam("vit_b"),
        "Segment Anything ViT-B, 91M encoder params, 375 MB",
    ),
    WeightsEntry(
        "sam_vit_l",
        f"{_SAM}/sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        "sam",
        _sam("vit_l"),
        "Segment Anything ViT-L, 308M encoder params, 1.2 GB",
    ),
    WeightsEntry(
        "sam_vit_h",
        f"{_SAM}/sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        "sam",
        _sam("vit_h"),
        "Segment Anything ViT-H, 636M encoder params, 2.4 GB",
    ),
)

REGISTRY: Mapping[str, WeightsEntry] = MappingProxyType({e.name: e for e in _ENTRIES})
"""Every known checkpoint by name (read-only)."""


def get_entry(name: str) -> WeightsEntry:
    """The registry entry called ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown pretrained weights {name!r}; expected one of {sorted(REGISTRY)}"
        ) from None


def _resolve(url_or_entry: str | WeightsEntry) -> tuple[str, str, str | None]:
    """(url, file name, known sha256) for a URL, a registry name or an entry."""
    if isinstance(url_or_entry, WeightsEntry):
        return url_or_entry.url, url_or_entry.filename, url_or_entry.sha256
    if "://" in url_or_entry:
        name = url_or_entry.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if not name:
            raise ValueError(f"cannot derive a file name from the URL {url_or_entry!r}")
        return url_or_entry, name, None
    entry = get_entry(url_or_entry)
    return entry.url, entry.filename, entry.sha256


def download(
    url_or_entry: str | WeightsEntry,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    verify: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download a file into the cache (once) and return its path.

    The transfer is atomic: bytes are written to a temporary file next to the final one,
    the byte count is checked against ``Content-Length``, the sha256 is checked (without
    a known sha256: the file must be a complete PyTorch checkpoint), and only then is the
    file renamed into place. On any failure the temporary file is removed, so nothing is
    ever left at the final path except a complete, verified file.

    A file already in the cache is hashed again before it is returned; if it no longer
    matches (a disk error, a manual edit) it is discarded with a warning and downloaded
    afresh. Without a known sha256, a cached file that is not a complete checkpoint (one
    cut short by an older version of this code, an empty file) is discarded the same way.

    Args:
        url_or_entry: a URL, a registry name (``"sam_vit_b"``) or a :class:`WeightsEntry`.
        cache_dir: the directory; ``None`` means :func:`resolve_cache_dir`
            (``$TEACHKIT_CACHE`` or ``~/.cache/teachkit``). The file is named after the
            last component of its URL.
        sha256: the expected hash; overrides the registry's. ``None`` uses the registry's.
        verify: with ``True`` (the default) a file whose expected sha256 is unknown is
            refused before anything is downloaded. ``verify=False`` downloads it anyway,
            checking only that it is a complete PyTorch checkpoint; compute its hash with
            :func:`file_sha256` and pin it with ``sha256=`` next time.
        progress: show a tqdm progress bar.
        timeout: seconds to wait for the server on connect and on each read.

    Returns:
        The path of the verified file in the cache.

    Raises:
        ValueError: unknown registry name, malformed ``sha256``, or no known hash while
            ``verify=True``.
        ChecksumMismatchError: (a ``ValueError``) the downloaded bytes have another
            sha256; the message names the expected and the actual hash.
        IncompleteDownloadError: (a ``ConnectionError``) the transfer was cut: fewer
            bytes than announced, a broken chunked transfer or connection, or (no sha256)
            a checkpoint whose end is missing.
        TimeoutError: the server sent nothing for ``timeout`` seconds (names the URL).
        ValueError: (no sha256) the file is empty or not a PyTorch checkpoint.
        urllib.error.URLError: the server could not be reached or answered an error.
    """
    url, filename, known = _resolve(url_or_entry)
    expected = sha256 if sha256 is not None else known
    return download_file(
        url,
        filename,
        expected,
        cache_dir=cache_dir,
        verify=verify,
        progress=progress,
        timeout=timeout,
    )


def load_state_dict(
    name_or_path: str | os.PathLike[str] | WeightsEntry,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    checkpoint_key: str | None = None,
    verify: bool = True,
    progress: bool = True,
) -> dict[str, Tensor]:
    """Load pretrained weights as a plain ``{name: tensor}`` dict on the CPU.

    Args:
        name_or_path: a registry name (downloaded and verified through :func:`download`),
            a :class:`WeightsEntry`, or the path of a local file (for offline machines; a
            local file is used as is, check it with :func:`file_sha256` if in doubt).
        cache_dir: see :func:`download`.
        checkpoint_key: see :func:`teachkit.infra.weights.unwrap_checkpoint`.
        verify: see :func:`download`; the DINO entries need ``verify=False`` (no
            trustworthy sha256 is known for them).
        progress: show a download progress bar.

    The file is read with ``torch.load(map_location="cpu", weights_only=True)``: tensors
    and plain containers only, no arbitrary pickled code.

    Raises:
        ValueError: neither an existing file nor a registry name (the message lists the
            names), a file that is empty, truncated or not a PyTorch checkpoint (the
            message names the file), or a checkpoint that holds no state dict.
    """
    if isinstance(name_or_path, WeightsEntry) or str(name_or_path) in REGISTRY:
        entry = name_or_path if isinstance(name_or_path, WeightsEntry) else REGISTRY[name_or_path]
        path = download(entry, cache_dir=cache_dir, verify=verify, progress=progress)
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ValueError(
                f"{str(name_or_path)!r} is neither an existing file nor a registered name; "
                f"expected a path or one of {sorted(REGISTRY)}"
            )
    return read_state_dict(path, checkpoint_key=checkpoint_key)


def load_into(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    ignore_prefixes: Iterable[str] = (),
) -> nn.Module:
    """Copy ``state_dict`` into ``model``, strictly, and return the model.

    Every parameter and persistent buffer of ``model`` must be present with the same
    shape, and every key of ``state_dict`` must be used. This is the point: the official
    scripts call ``load_state_dict(strict=False)`` and only print the mismatch, so a
    renamed layer silently keeps its random initialisation. The course's one strict
    loader, :func:`teachkit.infra.weights.load_strict`, does the work: floating tensors are
    cast to the model's dtypes, and nothing is copied unless everything fits.

    Args:
        model: the module to fill.
        state_dict: ``{name: tensor}``, e.g. from :func:`load_state_dict`.
        ignore_prefixes: keys of ``state_dict`` to drop on purpose, e.g. ``("head.",)``
            to load a full DINO teacher (backbone + projection head) into a backbone.

    Raises:
        ValueError: listing the missing keys, the unexpected keys and the shape
            mismatches (``name: checkpoint (..) vs model (..)``), all at once (a
            :class:`~teachkit.infra.weights.StateDictMismatchError`); or a ``state_dict``
            that is not a mapping of names to tensors.
    """
    return load_strict(
        model, state_dict, source="the given state dict", ignore_prefixes=ignore_prefixes
    )


def load(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    verify: bool = True,
    progress: bool = True,
) -> tuple[nn.Module, Any]:
    """The front door to every pretrained model: the network ``name``, built and loaded.

    Like ``segment-anything``'s ``sam_model_registry`` and timm's ``create_model``, the
    name alone builds the architecture:

    * an official name of :data:`REGISTRY` (``"dino_vits8"``, ``"sam_vit_b"``, ...): the
      architecture of its entry, and the weights downloaded and verified (:func:`download`)
      or read from ``weights``, a local copy of the official file;
    * a shipped name (:func:`teachkit.pretrained.available`): the architecture its card
      records: its ``python -m teachkit.train`` command, parsed by the course's own
      parser, builds it with the function that command trains (a DINO run's teacher
      backbone), and the shipped weights fill it.

    Args:
        name: an official or a shipped name.
        weights: official names only: a local file to load instead of downloading.
        cache_dir, verify, progress: see :func:`download` (official names only).

    Returns:
        ``(model, about)``: the model in eval mode on the CPU, loaded strictly; ``about`` is
        the :class:`WeightsEntry` of an official name or the
        :class:`~teachkit.pretrained.ModelCard` of a shipped one.

    Raises:
        ValueError: an unknown name (the message lists both kinds), ``weights`` with a
            shipped name, or weights that do not fit (every mismatched key named).
    """
    from teachkit import pretrained

    if name in REGISTRY:
        entry = REGISTRY[name]
        model = _official_architecture(entry)
        source = entry if weights is None else weights
        state = load_state_dict(source, cache_dir=cache_dir, verify=verify, progress=progress)
        load_strict(model, state, source=f"the {name} weights")
        return model.eval(), entry
    if name in pretrained.available():
        if weights is not None:
            raise ValueError(f"{name!r} is a shipped model: its weights come with the course, "
                             "so weights= applies to official names only")
        from teachkit.train import build_from_command

        card = pretrained.load_card(name)
        try:
            model = build_from_command(card.command)
        except ValueError as err:
            raise ValueError(
                f"the card of {name!r} cannot rebuild its architecture: {err}"
            ) from None
        pretrained.load_shipped(name, model)
        return model, card
    raise ValueError(
        f"unknown model {name!r}; expected an official name {sorted(REGISTRY)} or a "
        f"shipped one {pretrained.available()}"
    )


def _official_architecture(entry: WeightsEntry) -> nn.Module:
    """The random-weight network of an official entry."""
    if entry.family == "sam":
        from teachkit.sam.build import build_sam

        return build_sam(entry.name.removeprefix("sam_"))
    if entry.architecture.get("arch") == "resnet50":
        from torchvision.models import resnet50

        model = resnet50()
        model.fc = nn.Identity()
        return model
    from teachkit.models.vit import VisionTransformer

    return VisionTransformer(**entry.architecture)

#!/usr/bin/env bash
# Download the wheels the GPU benchmarks need and a stock PyTorch + torchvision + timm
# environment lacks, into .whl/ (git-ignored), to be carried to the GPU machine, which
# has no package index. All are pure-Python (py3-none-any) wheels.
#
#   .whl/             always installed by benchmarks/gpu_all.sh
#     lightly             DINOTransform, DINOProjectionHead, DINOLoss, update_momentum
#     segment-anything    the official SAM (no dependencies at import time)
#   .whl/if-missing/  installed only when the module is not importable there
#     lightning-utilities imported by lightly.transforms (RequirementCache)
#     packaging           imported by lightning_utilities
#
# lightly also declares pytorch-lightning and hydra-core; the modules the benchmarks
# import (lightly.loss.dino_loss, lightly.models.modules.heads, lightly.models.utils,
# lightly.transforms.dino_transform) do not import them, so they are not carried.
#
#   bash benchmarks/fetch_wheels.sh            # PYTHON_VERSION=3.12 by default
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON_VERSION:-3.12}"

download() {  # download DIR NAME==VERSION
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" \
        --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$1" "$2"
}

mkdir -p .whl/if-missing
download .whl lightly==1.6.0
download .whl segment-anything==1.0
download .whl/if-missing lightning-utilities==0.15.3
download .whl/if-missing packaging==26.2
ls -l .whl/*.whl .whl/if-missing/*.whl
du -cb .whl/*.whl .whl/if-missing/*.whl | tail -1 | awk '{printf "total %.2f MiB\n", $1 / 1048576}'

"""The book's configuration and the notebooks agree, and every notebook follows the contract."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _toc_files(node) -> list[str]:
    files = []
    if isinstance(node, dict):
        if "file" in node:
            files.append(node["file"])
        for value in node.values():
            files += _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            files += _toc_files(item)
    return files


def test_config_keeps_execution_off_and_repository_set():
    assert CONFIG["execute"]["execute_notebooks"] == "off"
    assert CONFIG["only_build_toc_files"] is True
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", CONFIG["repository"]["url"])
    assert CONFIG["repository"]["branch"]


def test_every_notebook_is_in_the_toc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = set(_toc_files(toc))
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.stem}" in listed, f"{nb.name} is not in _toc.yml"
    for entry in listed:
        assert any((ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")), entry


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_contract(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    src = ["".join(c["source"]) for c in cells]
    repo = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    branch = CONFIG["repository"]["branch"]
    # Badge above, pointing at this notebook in the configured repository and branch.
    assert f"colab.research.google.com/github/{repo}/blob/{branch}/notebooks/{path.name}" in src[0]
    # First code cell: install on Colab only, from the configured repository.
    code = [c for c in cells if c["cell_type"] == "code"]
    first, second = "".join(code[0]["source"]), "".join(code[1]["source"])
    assert '"google.colab" in sys.modules' in first
    assert f"git+https://github.com/{repo}@{branch}" in first
    # Second: picks the profile and prints the run settings.
    assert "PROFILE = " in second and "get_profile(PROFILE)" in second and "describe(" in second
    # Committed with outputs, all code cells executed in order.
    counts = [c["execution_count"] for c in code]
    assert all(n is not None for n in counts), "notebook saved with unexecuted cells"
    assert counts == sorted(counts), "cells were not executed top to bottom"
    # Ends with assertion cells; exercises with collapsible solutions (<details> blocks,
    # which collapse on Colab too; tests/test_colab_notebooks.py checks their form).
    assert "assert " in "".join(code[-1]["source"])
    solutions = sum(s.count("<summary>Solution</summary>") for s in src)
    assert 2 <= solutions <= 6, f"expected 2-6 exercises with solutions, found {solutions}"
    # No progress bars or warnings in checked cells.
    for c in code:
        if "nbval-ignore-output" in c.get("metadata", {}).get("tags", []):
            continue
        for out in c.get("outputs", []):
            where = "".join(c["source"])[:80]
            assert out.get("name") != "stderr", f"stderr in a checked cell: {where}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_has_alt_text_and_a_caption(path):
    """Figures reach every reader: alt text for screen readers, a caption saying what to notice."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        outputs = cell.get("outputs", [])
        if not any("image/png" in o.get("data", {}) for o in outputs):
            continue
        meta = cell.get("metadata", {}).get("mystnb", {})
        where = "".join(cell["source"])[:60]
        assert len(meta.get("image", {}).get("alt", "")) > 20, f"no alt text: {where}"
        assert len(meta.get("figure", {}).get("caption", "")) > 20, f"no caption: {where}"

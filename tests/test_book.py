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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_citations_read_on_colab(path):
    """Colab renders no MyST roles: a chapter cites with a plain link, never ``{cite}``."""
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"])
            assert "{cite" not in text, f"a MyST citation role, shown raw on Colab: {text[:60]}"


# ---- the data each page names per chapter is the data the notebook loads ----------------
LOADERS = {  # calls that draw a procedural dataset in a notebook's code
    "critters": re.compile(r"\b(make_critters|critters_splits|CrittersStream|make_critter_scenes)\s*\("),
    "shapes": re.compile(r"\b(make_shapes|shapes_splits|ShapesStream|make_scenes|make_clip)\s*\("),
}
DATA_PAGES = {  # where a page names, per dataset, the chapters that use it
    "book/setup.md": r"\| Data \| (.*?) \|",
    "book/instructors.md": r"- it uses the built-in procedural datasets, (.*?);",
}


def _chapters_named(text: str) -> dict[int, set[str]]:
    """``"critters (Chapters 1–5 and 7), shapes (Chapter 6)"`` -> {1: {"critters"}, ...}."""
    named: dict[int, set[str]] = {}
    for dataset in LOADERS:
        for group in re.findall(rf"\*?{dataset}\*? \(([^)]*)\)", text):
            for a, b in re.findall(r"(\d+)(?:\s*[–-]\s*(\d+))?", group):
                for chapter in range(int(a), int(b or a) + 1):
                    named.setdefault(chapter, set()).add(dataset)
    return named


def _chapters_loaded() -> dict[int, set[str]]:
    loaded = {}
    for nb in NOTEBOOKS:
        code = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"]
                         if c["cell_type"] == "code")
        loaded[int(nb.name[:2])] = {d for d, pattern in LOADERS.items() if pattern.search(code)}
    return loaded


@pytest.mark.parametrize("page", DATA_PAGES)
def test_pages_name_the_data_each_chapter_loads(page):
    text = " ".join((ROOT / page).read_text().split())
    match = re.search(DATA_PAGES[page], text)
    assert match, f"{page}: no sentence naming the quick profile's data per chapter"
    named, loaded = _chapters_named(match.group(1)), _chapters_loaded()
    assert named == loaded, f"{page} names {named}; the notebooks load {loaded}"


def test_the_data_sentence_parser_reads_ranges_and_lists():
    assert _chapters_named("critters (Chapters 1–3 and 7), shapes (Chapter 6, and Chapter "
                           "2's live run)") == {1: {"critters"}, 2: {"critters", "shapes"},
                                                3: {"critters"}, 7: {"critters"}, 6: {"shapes"}}

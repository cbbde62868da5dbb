"""Notebook Markdown that reads well on Colab, where MyST syntax shows up raw (issue 14).

Colab renders Markdown cells as plain CommonMark, so the notebooks write:

* exercise solutions as ``<details>`` blocks (they collapse on Colab and in the book),
  with fenced code, and blank lines around the Markdown inside;
* a plain-text reference before every ``{cite}`` role, in the form the book's
  author-year style prints it ("(Caron et al., 2021) {cite}`caron2021dino`");
* figures as Markdown images with the raw GitHub URL of the repository and branch of
  ``_config.yml``, never MyST directives.

``_ext/colab_markdown.py`` adapts the last two for the book; its functions are tested
here on small doctrees.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from docutils import nodes
from sphinx import addnodes

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REPO = CONFIG["repository"]["url"].removeprefix("https://github.com/")
BRANCH = CONFIG["repository"]["branch"]
RAW = f"https://raw.githubusercontent.com/{REPO}/{BRANCH}/"

sys.path.insert(0, str(ROOT / "_ext"))
import colab_markdown  # noqa: E402


def markdown_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


def bib_companions() -> dict[str, str]:
    """key -> "Caron et al., 2021", as the author-year style cites an entry."""
    text = (ROOT / "references.bib").read_text()
    out = {}
    for entry in re.split(r"\n(?=@)", text):
        key = re.match(r"@\w+\{([^,]+),", entry.strip())
        author = re.search(r"\bauthor\s*=\s*\{(.*?)\},?\s*\n", entry)
        year = re.search(r"\byear\s*=\s*\{(\d{4})\}", entry)
        if not (key and author and year):
            continue
        surnames = [a.split(",")[0].strip() for a in author.group(1).split(" and ")]
        if len(surnames) == 1:
            who = surnames[0]
        elif len(surnames) == 2:
            who = f"{surnames[0]} and {surnames[1]}"
        else:
            who = f"{surnames[0]} et al."
        out[key.group(1)] = f"{who}, {year.group(1)}"
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_myst_directives_in_notebook_markdown(path):
    """Colab shows a directive as a code block: solutions, figures and notes must not use one."""
    for src in markdown_cells(path):
        assert "{admonition}" not in src and ":class: dropdown" not in src, src[:80]
        assert not re.search(r"^\s*(```|~~~|:::)\s*\{", src, re.M), src[:80]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solutions_are_details_blocks(path):
    solutions = 0
    for src in markdown_cells(path):
        assert src.count("<details>") == src.count("</details>"), src[:80]
        for block in re.findall(r"<details>(.*?)</details>", src, re.S):
            solutions += 1
            # The summary, then a blank line: the Markdown inside is parsed (math, code).
            assert block.startswith("\n<summary>Solution</summary>\n\n"), block[:60]
            assert block.endswith("\n\n"), "a blank line before </details>"
            # Code fenced: an indented block would not survive the HTML around it.
            assert not re.search(r"(^|\n\n)    \S", block), "indented code in a solution"
            assert block.count("```") % 2 == 0
    assert 2 <= solutions <= 6, f"{solutions} solutions"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_cite_has_a_plain_text_companion(path):
    companions = bib_companions()
    for src in markdown_cells(path):
        for m in re.finditer(r"\{cite(?::\w+)?\}`([^`]+)`", src):
            keys = [k.strip() for k in m.group(1).split(",")]
            assert all(k in companions for k in keys), f"unknown key in {m.group(0)}"
            expected = "(" + "; ".join(companions[k] for k in keys) + ")"
            before = src[: m.start()]
            assert re.search(re.escape(expected) + r"[ \n]$", before), (
                f"{m.group(0)} needs the plain-text {expected!r} right before it: {before[-60:]!r}"
            )
            # The book's transform recognises it too.
            assert all(colab_markdown.names_entry(expected, k) for k in keys)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_images_use_this_repositorys_raw_urls(path):
    """Relative paths do not resolve on Colab; raw URLs must match _config.yml and exist."""
    for src in markdown_cells(path):
        for url in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", src) + re.findall(
            r"<img[^>]*src=\"([^\"]+)", src
        ):
            assert url.startswith("https://"), f"{url}: a relative path does not resolve on Colab"
            if "raw.githubusercontent.com" in url:
                assert url.startswith(RAW), f"{url}: not {RAW}..."
                assert (ROOT / url[len(RAW) :]).is_file(), url


def test_chapter_3_shows_the_dino_diagram_on_colab():
    src = "\n".join(markdown_cells(ROOT / "notebooks" / "03_dino_step_by_step.ipynb"))
    assert f"]({RAW}book/figures/dino_diagram.svg)" in src


# The book's side: _ext/colab_markdown.py on small doctrees.


def _paragraph(*children: nodes.Node) -> nodes.paragraph:
    return nodes.paragraph("", "", *children)


def _cite(key: str) -> addnodes.pending_xref:
    return addnodes.pending_xref(
        "", nodes.inline("", key), refdomain="cite", reftype="p", reftarget=key
    )


def test_drop_companion_keeps_the_sentence_and_the_role():
    xref = _cite("caron2021dino")
    par = _paragraph(
        nodes.Text("DINO (Caron et al., 2021)"), nodes.Text("\n"), xref, nodes.Text(" trains")
    )
    assert colab_markdown.drop_companion(xref)
    assert par.astext() == "DINO caron2021dino trains"
    assert par[1] is xref


def test_drop_companion_after_inline_markup():
    xref = _cite("tancik2020fourier")
    par = _paragraph(
        nodes.strong("", "random Fourier features"), nodes.Text(" (Tancik et al., 2020) "), xref
    )
    assert colab_markdown.drop_companion(xref)
    assert par.astext() == "random Fourier features tancik2020fourier"


@pytest.mark.parametrize(
    "before", ["the model (ViT) ", "as shown (Smith et al., 2021) ", "in (Caron et al., 2020) ", ""]
)
def test_drop_companion_leaves_other_parentheses(before):
    xref = _cite("caron2021dino")
    par = _paragraph(nodes.Text(before), xref) if before else _paragraph(xref)
    assert not colab_markdown.drop_companion(xref)
    assert par.astext() == before + "caron2021dino"


def test_local_image_maps_only_this_repository_and_branch(tmp_path):
    (tmp_path / "book" / "figures").mkdir(parents=True)
    (tmp_path / "book" / "figures" / "d.svg").write_text("<svg/>")
    url = "https://github.com/owner/course"
    raw = "https://raw.githubusercontent.com/owner/course/main/"
    assert (
        colab_markdown.local_image(raw + "book/figures/d.svg", url, "main", tmp_path)
        == "/book/figures/d.svg"
    )
    assert (
        colab_markdown.local_image(raw + "book/figures/missing.svg", url, "main", tmp_path) is None
    )
    assert colab_markdown.local_image(raw + "book/figures/d.svg", url, "dev", tmp_path) is None
    assert colab_markdown.local_image("https://example.org/d.svg", url, "main", tmp_path) is None
    assert colab_markdown.local_image(raw + "book/figures/d.svg", "", "", tmp_path) is None


def test_the_book_loads_the_extension():
    assert CONFIG["sphinx"]["local_extensions"].get("colab_markdown") == "_ext"

"""A Sphinx extension of the book: notebook Markdown written for Colab reads well here too.

Colab renders a notebook's Markdown cells as plain CommonMark: MyST roles and directives
show up raw, and relative image paths do not resolve. So the notebooks write two things
in a form both readers understand, and this extension adapts them for the book:

* **References.** Each ``{cite}`key``` role follows its plain-text companion, e.g.
  ``DINO (Caron et al., 2021) {cite}`caron2021dino```: Colab shows the companion, the
  book shows the role (a link to the bibliography). :func:`drop_companion` removes the
  companion from the book's page so the reference reads once. It removes only a
  parenthesis that names the cited entry's first author and year, so a sentence is never
  cut by accident; ``tests/test_colab_notebooks.py`` checks that every role has one.
* **Images of this repository.** A notebook shows ``book/figures/...`` through its raw
  GitHub URL for the repository and branch of ``_config.yml``, which Colab can load.
  :func:`local_image` maps such a URL back to the file in the source tree, so the book
  copies the image of the commit it is built from and needs no network.

Exercise solutions need nothing here: ``<details>`` blocks are raw HTML that both
render, with the Markdown between the tags parsed as usual.

Registered in ``_config.yml`` under ``sphinx.local_extensions``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms import SphinxTransform

_COMPANION = re.compile(r"\(([^()]*)\)\s*$")
_KEY = re.compile(r"([a-z]+)(\d{4})")


def names_entry(text: str, key: str) -> bool:
    """Whether ``text`` (e.g. "Caron et al., 2021") names the entry ``key`` ("caron2021dino").

    The course's keys are ``<first author's surname><year><word>``.
    """
    m = _KEY.match(key.strip().lower())
    return bool(m) and m.group(1) in text.lower() and m.group(2) in text


def drop_companion(xref: nodes.Element) -> bool:
    """Remove the plain-text reference right before a cite role; True if one was removed.

    The text before the role may be split over several ``Text`` nodes (a line break in
    the source is one of its own); they are joined, and the part before the companion is
    kept as one node.
    """
    parent = xref.parent
    if parent is None:
        return False
    end = parent.index(xref)
    start = end
    while start > 0 and isinstance(parent[start - 1], nodes.Text):
        start -= 1
    before = "".join(str(t) for t in parent.children[start:end])
    m = _COMPANION.search(before)
    keys = [k for k in xref.get("reftarget", "").split(",") if k.strip()]
    if not m or not keys or not all(names_entry(m.group(1), k) for k in keys):
        return False
    for text in parent.children[start:end]:
        parent.remove(text)
    if before[: m.start()]:
        parent.insert(start, nodes.Text(before[: m.start()]))
    return True


def local_image(uri: str, repository_url: str, branch: str, srcdir: Path) -> str | None:
    """The source-tree path ("/book/figures/x.svg") of a raw GitHub URL of this repository.

    ``None`` when ``uri`` is not a raw URL of ``repository_url`` at ``branch``, or when
    the file is not in the source tree (the URL then stays as it is).
    """
    repo = repository_url.rstrip("/").removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{repo}/{branch}/"
    if not repo or not branch or not uri.startswith(prefix):
        return None
    path = uri[len(prefix) :]
    if not (srcdir / path).is_file():
        return None
    return "/" + path  # Sphinx reads a leading "/" as the source directory


class ColabMarkdown(SphinxTransform):
    """Drop the cite companions of notebook pages; serve this repository's images locally."""

    default_priority = 500

    def apply(self, **kwargs: Any) -> None:
        if Path(self.env.doc2path(self.env.docname)).suffix == ".ipynb":
            for xref in list(self.document.findall(addnodes.pending_xref)):
                if xref.get("refdomain") == "cite":
                    drop_companion(xref)
        options = self.config.html_theme_options or {}
        url, branch = options.get("repository_url", ""), options.get("repository_branch", "")
        for image in self.document.findall(nodes.image):
            path = local_image(image.get("uri", ""), url, branch, Path(self.env.srcdir))
            if path:
                image["uri"] = path


def setup(app: Any) -> dict[str, Any]:
    app.add_transform(ColabMarkdown)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

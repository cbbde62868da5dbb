"""A Sphinx extension of the book: write each inline ``<script>`` of a page once.

Sphinx 7.4 writes an inline script that an extension adds during the build
(``app.add_js_file(None, body=...)``) twice: once when it is added, and again when the
HTML builder re-reads its registry before writing pages (the first copy is registered
with the file name ``None``, the second with ``''``, so they do not compare equal).
sphinx-thebe, which Jupyter Book always loads, adds ``const THEBE_JS_URL = ...`` that
way, and the second copy throws "SyntaxError: Identifier 'THEBE_JS_URL' has already been
declared" in every reader's browser. ``tests/test_book_browser.py`` catches it.

Registered in ``_config.yml`` under ``sphinx.local_extensions``.
"""

from __future__ import annotations

from typing import Any


def drop_repeated_inline_scripts(
    app: Any, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    """Keep the first of identical inline scripts (same body and attributes) of a page."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    keep = []
    for js in scripts:
        if getattr(js, "filename", js):  # a script file: Sphinx already de-duplicates these
            keep.append(js)
            continue
        key = tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items()))
        if key not in seen:
            seen.add(key)
            keep.append(js)
    scripts[:] = keep  # in place: the builder restores its list after each page


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", drop_repeated_inline_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

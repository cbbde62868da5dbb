"""One home per name: a module's ``__all__`` lists only what the module defines.

Re-exporting is left to the package faces (``__init__.py``), so "where does X live?" has
one answer. The check reads every module of ``teachkit`` with :mod:`ast`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import teachkit

PACKAGE = Path(teachkit.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def _public_and_defined(path: Path) -> tuple[list[str], set[str]]:
    tree = ast.parse(path.read_text())
    public: list[str] = []
    defined: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    defined.add(target.id)
                    if target.id == "__all__":
                        public = [ast.literal_eval(e) for e in node.value.elts]
    return public, defined


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_offers_only_what_it_defines(path):
    public, defined = _public_and_defined(path)
    borrowed = [name for name in public if name not in defined]
    where = path.relative_to(PACKAGE)
    assert not borrowed, f"{where} re-exports {borrowed}: import them from their home"


def test_the_check_sees_a_re_export(tmp_path):
    """The check above can fail: a module that lists an imported name is caught."""
    module = tmp_path / "m.py"
    module.write_text('from os import sep\n\n__all__ = ["sep", "f"]\n\n\ndef f():\n    pass\n')
    public, defined = _public_and_defined(module)
    assert [n for n in public if n not in defined] == ["sep"]

"""The server's packages are layers: every import (module level or inside a function) goes down.

Read from the source with ``ast``, so a lazy import inside a function cannot slip past, and checked in a
fresh interpreter where the web stack and the database driver cannot be imported at all.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import banditflags_server

ROOT = Path(banditflags_server.__file__).parent

#: Top to bottom. A module may import its own component and anything in a lower row; components in one
#: row are peers and do not import each other (``bandit`` is the façade DESIGN.md §6 names for ``engine``).
LAYERS: list[tuple[str, ...]] = [
    ("__main__",),
    ("cli",),
    ("app",),
    ("console",),
    ("api",),
    ("service",),
    ("engine", "storage"),
    ("records", "errors", "settings"),
]
FACADES = {"bandit": "engine"}
#: Third-party packages a layer must not import (the web stack, the database, the HTTP client).
FORBIDDEN = {
    "engine": {"starlette", "uvicorn", "jinja2", "sqlalchemy", "psycopg", "httpx", "banditflags"},
    "storage": {"starlette", "uvicorn", "jinja2", "httpx", "banditflags"},
    "service": {"starlette", "uvicorn", "jinja2", "httpx", "banditflags"},
    "records": {"starlette", "sqlalchemy", "httpx"},
    "errors": {"starlette", "sqlalchemy", "httpx"},
    "settings": {"starlette", "sqlalchemy", "httpx"},
}


def _component(module: str) -> str:
    """``banditflags_server.api.flags`` -> ``api``; ``banditflags_server.records`` -> ``records``."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    return FACADES.get(name, name)


def _rank(component: str) -> int:
    for i, row in enumerate(LAYERS):
        if component in row:
            return i
    raise AssertionError(f"component {component!r} is in no layer: add it to LAYERS")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out.append((".".join(["banditflags_server", *parts]), path))
    return out


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """Every imported module name (absolute), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name == "banditflags_server":  # from banditflags_server import api -> the subpackage
                found.extend((node.lineno, f"{name}.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, name))
    return found


MODULES = _modules()


def test_every_component_has_a_layer_and_a_docstring() -> None:
    for module, path in MODULES:
        _rank(_component(module)) if module != "banditflags_server" else None
        if path.name == "__init__.py" and path.parent != ROOT:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
            assert doc and len(doc) > 80, f"{module}: say in a paragraph what the package is for"


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_imports_only_go_down(module: str, path: Path) -> None:
    if module == "banditflags_server":
        return
    mine = _component(module)
    problems = []
    for line, name in _imports(path, module):
        top = name.split(".")[0]
        if top == "banditflags_server":
            if name in ("banditflags_server", "banditflags_server.__version__"):
                continue  # the package's own __init__: only the version
            theirs = _component(name)
            if theirs == mine:
                continue
            if _rank(theirs) <= _rank(mine):
                problems.append(f"line {line}: {mine} must not import {name} ({theirs} is not below it)")
        elif top in FORBIDDEN.get(mine, set()):
            problems.append(f"line {line}: {mine} must not import {name}")
    assert not problems, f"{path.relative_to(ROOT.parent)}:\n" + "\n".join(problems)


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "planning.py"
    bad.write_text("def f():\n    from banditflags_server.api.flags import routes\n    return routes\n")
    names = _imports(bad, "banditflags_server.engine.planning")
    assert names == [(2, "banditflags_server.api.flags")]
    assert _rank(_component(names[0][1])) < _rank("engine")


def test_engine_imports_without_the_web_stack_or_a_database() -> None:
    code = (
        "import sys\n"
        "for m in ('starlette', 'uvicorn', 'jinja2', 'sqlalchemy', 'psycopg', 'httpx'):\n"
        "    sys.modules[m] = None\n"
        "import pkgutil, importlib, banditflags_server.engine as e\n"
        "for info in pkgutil.iter_modules(e.__path__):\n"
        "    importlib.import_module('banditflags_server.engine.' + info.name)\n"
        "import banditflags_server.bandit\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

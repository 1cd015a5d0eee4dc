"""The import layering of docs/architecture.md, checked from the code's own imports:
storage core <- catalog and auth <- replication <- HTTP API and server wiring <- cli."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "node": "kvstore.node",
    "replication": "kvstore.replication",
    "cli": "kvstore.cli",
    "chaos": "kvstore.chaos",
    "client": "kvstore.client",
}
STORAGE_CORE = (
    "kvstore.node.wal",
    "kvstore.node.store",
    "kvstore.node.engine",
    "kvstore.node.checkpoint",
    "kvstore.node.recovery",
    "kvstore.node.snapshot",
    "kvstore.node.control",
    "kvstore.node.records",
)
MODULE_LINES_MAX = 400  # a module longer than this does more than one job
SERVER_INTERNAL_IMPORTS_MAX = 12  # the lifecycle wires services; it does not build them
ABOVE_STORAGE = (
    "kvstore.node.catalog",
    "kvstore.node.auth",
    "kvstore.node.api",
    "kvstore.replication",
)


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, as absolute names (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from . import x`
    return found


def _modules(*folders: str) -> dict[str, set[str]]:
    return {_module_name(path): _imports(path) for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))}


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _breaches(importers: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {imported}"
        for module, imports in _modules("node", "replication").items()
        if _under(module, importers)
        for imported in imports
        if _under(imported, forbidden)
    )


def test_the_module_names_resolve_as_the_package_maps_them() -> None:
    modules = _modules("node", "replication")
    assert "kvstore.node.wal.reader" in modules
    assert "kvstore.node.wal.segments" in modules["kvstore.node.wal.reader"]  # `from .segments import`
    assert "kvstore.node.records" in modules["kvstore.node.recovery"]  # `from . import records`


def test_replication_imports_no_http_layer() -> None:
    assert _breaches(("kvstore.replication",), ("kvstore.node.api",)) == []


def test_the_storage_core_imports_nothing_above_it() -> None:
    assert _breaches(STORAGE_CORE, ABOVE_STORAGE) == []


def test_the_node_and_replication_import_no_tool() -> None:
    assert _breaches(("kvstore.node", "kvstore.replication"), ("kvstore.cli", "kvstore.chaos")) == []


def test_the_client_library_stands_alone() -> None:
    """An application installs the client to talk to a node, not the node itself."""
    breaches = sorted(
        f"{module} imports {imported}"
        for module, imports in _modules("client").items()
        for imported in imports
        if _under(imported, tuple(name for name in PACKAGES.values() if name != "kvstore.client"))
    )
    assert breaches == []


def test_no_module_of_the_node_replication_or_client_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for folder in ("node", "replication", "client")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (lines := len(path.read_text().splitlines())) > MODULE_LINES_MAX
    }
    assert long == {}


def test_the_lifecycle_module_imports_at_most_12_of_ours() -> None:
    server = ROOT / "node" / "server.py"
    modules: set[str] = set()
    for node in ast.walk(ast.parse(server.read_text(), str(server))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = ".".join(["kvstore.node", *node.module.split(".")] if node.module else ["kvstore.node"])
            # `from . import x` names modules; `from .x import A` takes names from module x.
            if node.module:
                modules.add(base)
            else:
                modules.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and _under(node.module or "", tuple(PACKAGES.values())):
            modules.add(node.module or "")
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names if _under(alias.name, tuple(PACKAGES.values())))
    assert 0 < len(modules) <= SERVER_INTERNAL_IMPORTS_MAX, sorted(modules)

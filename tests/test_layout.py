"""The package's shape: no import cycles, layers import downward only, no module over 400 lines, every package
says what it owns. Read from the source with `ast`, so a function-local import counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "loralab"

# Lowest first; a module may import its own layer and those below it. Within a layer, the cycle test decides.
LAYERS = [
    # lora/config.py is plain data (LoRAConfig, imports only errors) that RunConfig.lora_config() builds.
    (
        "loralab.errors",
        "loralab.files",
        "loralab.hub",
        "loralab.naming",
        "loralab.lora.config",
        "loralab.config",
    ),
    ("loralab.lora",),
    ("loralab.precision",),
    ("loralab.models",),
    ("loralab.data",),
    ("loralab.evaluation",),
    ("loralab.tasks", "loralab.methods"),
    ("loralab.training",),
    ("loralab.reporting",),
    ("loralab.cli", "loralab.__main__", "loralab"),
]
MAX_LINES = 400


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package by its __init__.py)."""
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under `if TYPE_CHECKING:` (never run)."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if _type_checking_block(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports: `from a.b import c` counts as a.b.c when that is a module,
    else as a.b."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            package = name.split(".") if is_package else name.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([node.module] if node.module else []))
        for alias in node.names:
            full = f"{base}.{alias.name}"
            targets.add(full if full in modules else base)
    return {target for target in targets if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def layer_of(name: str) -> int:
    best, level = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), index
    assert level is not None, f"{name} belongs to no layer: add it to LAYERS in {__file__}"
    return level


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_import_downward_only():
    upward = [
        f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
        for name, targets in import_graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert upward == []


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_function_local_and_relative_imports_are_seen(tmp_path, monkeypatch):
    package = tmp_path / "loralab"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "one.py").write_text("def f():\n    from loralab.sub import two\n")
    (package / "sub" / "two.py").write_text(
        "from . import one\nif TYPE_CHECKING:\n    from loralab import cli\n"
    )
    (package / "cli.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "SRC", package)
    graph = import_graph()
    assert graph["loralab.sub.one"] == {"loralab.sub.two"}
    assert graph["loralab.sub.two"] == {"loralab.sub.one"}
    assert find_cycle(graph) == ["loralab.sub.one", "loralab.sub.two", "loralab.sub.one"]


@pytest.mark.parametrize("name", sorted(module_files()))
def test_module_is_short(name):
    lines = len(module_files()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it (at most {MAX_LINES})"


def test_every_package_says_what_it_owns_and_may_import():
    for name, path in module_files().items():
        if path.name != "__init__.py" or name == "loralab":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        assert len(doc) > 80 and "import" in doc, f"{path}: say what the package owns and what it may import"

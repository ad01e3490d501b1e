"""What the higher layers declare that a config must know: the names in their registries and each task's
defaults, read from their source files with `ast`, without importing them.

config is the lowest layer: loralab.methods, loralab.tasks, loralab.training and loralab.evaluation import it
(and torch), so it may import none of them, yet a config is checked against their registries when it loads.
Each declaration read here is a literal at the top level of its module, as the comment beside it says: a
tuple, a dict of literals, the string keys of a registry dict, or `Literal[...]`. Each task's module is named
after the task. tests/test_config.py checks that what is read here equals what importing those modules gives.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # src/loralab


@functools.cache
def _top_level(module: str) -> dict[str, ast.expr]:
    """The values assigned to plain names at the top level of `module` (a dotted loralab module name)."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    values = {}
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            values[target.id] = value
    return values


def _declaration(module: str, name: str) -> ast.expr:
    try:
        return _top_level(module)[name]
    except KeyError:
        raise RuntimeError(
            f"{module} assigns no {name} at its top level, which loralab.config reads"
        ) from None


def literal(module: str, name: str) -> object:
    """The value of `name = <literal>` in `module`; for `name = Literal[...]` the tuple of its arguments."""
    node = _declaration(module, name)
    if (
        isinstance(node, ast.Subscript)
        and getattr(node.value, "id", getattr(node.value, "attr", "")) == "Literal"
    ):
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        return tuple(ast.literal_eval(arg) for arg in args)
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise RuntimeError(f"{module}.{name} must be a literal for loralab.config to read it") from None


def keys(module: str, name: str) -> tuple[str, ...]:
    """The keys of the registry `name = {"key": ..., ...}` in `module`, in order."""
    node = _declaration(module, name)
    if not isinstance(node, ast.Dict) or not all(
        isinstance(key, ast.Constant) and isinstance(key.value, str) for key in node.keys
    ):
        raise RuntimeError(f"{module}.{name} must be a dict with string keys for loralab.config to read it")
    return tuple(key.value for key in node.keys)


METHODS = keys("loralab.methods", "METHODS")
FAMILIES = keys("loralab.tasks", "FAMILIES")
PRESETS: dict[str, dict[str, object]] = literal("loralab.tasks.presets", "PRESETS")
TASKS = FAMILIES + tuple(PRESETS)
BUILTIN_DATASETS = keys("loralab.data.builtin", "BUILTIN")
FORMATS = literal("loralab.data.formats", "FORMATS")
METRIC_NAMES = literal("loralab.evaluation.metrics", "METRIC_NAMES")
MODEL_KINDS = keys("loralab.training.kinds", "KINDS")
ISOLATION_LEVELS = literal("loralab.evaluation.sandbox.supervisor", "Level")
BIAS_MODES = literal("loralab.lora.config", "BIAS_MODES")
INIT_MODES = literal("loralab.lora.config", "INIT_MODES")

# The family of each task (a family is its own), the fields its `columns` may map, and what each key left
# empty means for it: the family's DEFAULTS, with a preset's values over them.
FAMILY_OF: dict[str, str] = {family: family for family in FAMILIES} | {
    name: str(preset["family"]) for name, preset in PRESETS.items()
}
ROLES: dict[str, tuple[str, ...]] = {
    family: literal(f"loralab.tasks.{family}", "ROLES") for family in FAMILIES
}
TASK_DEFAULTS: dict[str, dict[str, object]] = {
    task: literal(f"loralab.tasks.{FAMILY_OF[task]}", "DEFAULTS")
    | {key: value for key, value in PRESETS.get(task, {}).items() if key != "family"}
    for task in TASKS
}

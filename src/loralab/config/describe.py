"""The keys of a RunConfig as `loralab train --help` lists them: by section, each with its default (as TOML
writes it) and its help, to which the key's choices and the tasks' defaults are added from the registries."""

from __future__ import annotations

import dataclasses
import json
import shutil
import textwrap

from loralab.config.fields import RunConfig
from loralab.config.registries import TASK_DEFAULTS
from loralab.config.validation import CHOICES

HELP_COLUMN = 34  # where the help starts, after "  key = default"
NO_BREAK = "\u00a0"  # wrapping never breaks a line here; printed as a space


def default_of(item: dataclasses.Field) -> object:
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return item.default


def toml_value(value: object) -> str:
    """The value as a TOML file writes it (strings quoted and escaped, true / false, lists in brackets)."""
    return json.dumps(value, ensure_ascii=False)


def field_help(item: dataclasses.Field) -> str:
    """A key's help: the field's own text, then its choices and what each task puts in its place when empty."""
    return _help(item, " ")


def _help(item: dataclasses.Field, space: str) -> str:
    """field_help, with `space` for the spaces inside a task's default value (NO_BREAK keeps one on one line)."""
    parts = [item.metadata["help"]]
    if item.name in CHOICES:
        parts.append("one of: " + ", ".join(choice or '""' for choice in CHOICES[item.name]))
    if any(item.name in defaults for defaults in TASK_DEFAULTS.values()):
        values = {
            task: toml_value(defaults[item.name])
            for task, defaults in TASK_DEFAULTS.items()
            if defaults.get(item.name)
        }
        per_task = (f"{task}: {value.replace(' ', space)}" for task, value in values.items())
        parts.append("task defaults: " + "; ".join(per_task))
    return "; ".join(parts)


def describe_options(width: int | None = None) -> str:
    """Every key by section: `key = default` and its help, wrapped to `width` (default: the terminal's)."""
    if width is None:
        width = min(max(shutil.get_terminal_size().columns - 2, 70), 110)
    lines: list[str] = []
    for item in dataclasses.fields(RunConfig):
        if "section" in item.metadata:
            lines += ["", f"{item.metadata['section']}:"]
        head = f"  {item.name} = {toml_value(default_of(item))}"
        text = textwrap.wrap(
            _help(item, NO_BREAK), width - HELP_COLUMN, break_long_words=False, break_on_hyphens=False
        )
        text = [line.replace(NO_BREAK, " ") for line in text]
        if len(head) + 2 <= HELP_COLUMN:
            lines.append(head.ljust(HELP_COLUMN) + text[0])
            text = text[1:]
        else:
            lines.append(head)
        lines += [" " * HELP_COLUMN + line for line in text]
    return "\n".join(lines[1:])  # no blank line before the first section

"""Reading a task's rows from any dataset: a built-in one by name (data.builtin) or a hub id, file or folder
(data.datasets), with the config's `columns` naming which of the data's columns fills each task field.

The families call load_tables() for the splits they need and turn each Table's rows into their own fields.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from loralab.config import RunConfig
from loralab.data.builtin import COLUMNS, is_builtin, load_builtin
from loralab.data.datasets import DataSpec, Table, load_table
from loralab.errors import UserError

GroupKey = Callable[[dict], Sequence[str]]


def column_map(config: RunConfig) -> dict[str, str]:
    """Task field -> the data's column: the config's `columns` over a built-in dataset's own names."""
    return COLUMNS.get(config.dataset, {}) | dict(config.columns)


def column(config: RunConfig, field: str) -> str:
    return column_map(config).get(field, field)


def dataset_label(config: RunConfig) -> str:
    return config.dataset or config.data_path


def data_spec(config: RunConfig) -> DataSpec:
    return DataSpec(
        dataset=config.dataset or config.data_path,
        dataset_config=config.dataset_config,
        revision=config.revision,
        splits=tuple(sorted(config.splits.items())),
        data_path=config.data_path if config.dataset else "",
        seed=config.subset_seed,
    )


def value_key(name: str) -> GroupKey:
    """Rows with the same value in column `name` (the same whole row, when it has no such column) stay in one
    split when a split is cut from train."""
    return lambda row: [str(row.get(name, json.dumps(row, sort_keys=True, default=str)))]


def split_key(config: RunConfig, default: GroupKey) -> GroupKey:
    """What keeps rows together when a split is cut from train: the `split_by` column, else `default`."""
    if not config.split_by:
        return default
    name = config.split_by

    def key(row: dict) -> Sequence[str]:
        if name not in row:
            raise UserError(
                f"split_by: the data has no column {name!r}; columns present: {', '.join(map(repr, row))}"
            )
        return [json.dumps(row[name], sort_keys=True, default=str)]

    return key


def load_tables(config: RunConfig, splits: Sequence[str], group_key: GroupKey) -> dict[str, Table]:
    """The named splits of config.dataset as Tables (rows with the data's own columns)."""
    tables, key = {}, split_key(config, group_key)  # one key object: the cut from train is made once
    for split in splits:
        if is_builtin(config.dataset):
            rows, source = load_builtin(config.dataset, split, config.data_path or None)
            columns = tuple(dict.fromkeys(key for row in rows for key in row))
            tables[split] = Table(rows, source, columns, {})
        else:
            tables[split] = load_table(data_spec(config), split, key)
    return tables


def require_columns(config: RunConfig, table: Table, fields: Sequence[str], split: str) -> None:
    """A one-line error when the data lacks the column of one of `fields`, saying which key to set."""
    mapping = column_map(config)
    for name in fields:
        wanted = mapping.get(name, name)
        if wanted not in table.columns:
            present = ", ".join(repr(c) for c in table.columns) or "none"
            where = "" if wanted == name else f" (columns.{name} = {wanted!r})"
            raise UserError(
                f"{dataset_label(config)}/{split} has no column {wanted!r}{where} for the task's {name}; "
                f'columns present: {present}; set columns = {{{name} = "<one of them>"}}'
            )


def text_value(value: object, where: str, field: str) -> str:
    """A non-empty string field of a row, or a one-line error naming the row."""
    if not isinstance(value, str):
        raise UserError(
            f"{where}: {field} must be text, got {type(value).__name__} {value!r:.60}; fix the data"
        )
    if not value.strip():
        raise UserError(f"{where}: {field} is empty; fill it in or remove that row")
    return value

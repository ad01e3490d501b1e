"""Reading a RunConfig: a TOML file, then `--key=value` overrides (or a run folder's config.json), each value
type-checked against its field, then validated and completed with the task's defaults."""

from __future__ import annotations

import difflib
import json
import sys
import types
import typing
from pathlib import Path

from loralab.config.fields import RunConfig, field_types
from loralab.config.validation import validate, with_task_defaults
from loralab.errors import UserError
from loralab.files import read_json_object

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _type_name(kind: object) -> str:
    if kind is float:
        return "a number"
    if kind is int:
        return "an integer"
    if kind is bool:
        return "true or false"
    if kind is str:
        return "a string"
    if typing.get_origin(kind) is list:
        return "a list of strings"
    if typing.get_origin(kind) is dict:
        return 'a table of strings, e.g. {text = "sentence"}'
    return "a string or a list of strings"


def _check_value(key: str, value: object, kind: object) -> object:
    """Return value converted to `kind` (int→float allowed) or raise UserError."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise UserError(
                f"config key {key!r} must be a finite number, got a {value.bit_length()}-bit integer"
            ) from None
    if kind in (int, float, str, bool) and type(value) is kind:
        return value
    is_table = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if typing.get_origin(kind) is dict and is_table:
        return dict(value)
    is_list = isinstance(value, list) and all(isinstance(v, str) for v in value)
    if typing.get_origin(kind) is list and is_list:
        return list(value)
    if isinstance(kind, types.UnionType) and (is_list or isinstance(value, str)):
        return list(value) if is_list else value
    try:
        shown = repr(value)
    except (ValueError, RecursionError):  # no repr: an integer of over 4300 digits, too deep a list
        shown = f"a {type(value).__name__} too large to show"
    raise UserError(f"config key {key!r} must be {_type_name(kind)}, got {shown}")


def _parse_override(key: str, text: str, kind: object) -> object:
    """Turn the text of --key=value into the field's type."""
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise UserError(f"--{key} must be {_type_name(kind)}, got {text!r}") from None
    if kind is str:
        return text
    if typing.get_origin(kind) is dict:
        return _parse_table(key, text, kind)
    if text.startswith("["):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # JSONDecodeError; an integer over 4300 digits; deep nesting
            raise UserError(f"--{key} looks like a JSON list but does not parse: {text!r}") from None
        return _check_value(key, value, kind)
    if typing.get_origin(kind) is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    # str | list[str]: a comma means a list of names; otherwise a single string (e.g. a regex or all-linear)
    return [part.strip() for part in text.split(",") if part.strip()] if "," in text else text


def _parse_table(key: str, text: str, kind: object) -> dict[str, str]:
    """--columns=text=sentence,label=coarse_label or --columns='{"text": "sentence"}'."""
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            raise UserError(f"--{key} looks like a JSON object but does not parse: {text!r}") from None
        return _check_value(key, value, kind)
    table = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise UserError(f"--{key} must look like --{key}=name=value,name=value, got {text!r}")
        table[name.strip()] = value.strip()
    return table


def _unknown_key(key: str) -> UserError:

    close = difflib.get_close_matches(key, field_types(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; see `loralab train --help` for the keys"
    return UserError(f"unknown config key {key!r}{hint}")


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: RunConfig | None = None
) -> RunConfig:
    """Start from `base` (or the defaults), read a TOML config (optional), apply `--key=value` overrides,
    validate, and return a RunConfig."""
    kinds = field_types()
    values: dict[str, object] = base.to_dict() if base is not None else {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file {path} not found; pass an existing .toml file (see configs/)")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"config file {path} is not valid TOML ({exc}); fix the syntax") from None
        except UnicodeDecodeError as exc:
            raise UserError(
                f"config file {path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8"
            ) from None
        except OSError as exc:
            raise UserError(
                f"cannot read config file {path} ({exc.strerror}); check its permissions"
            ) from None
        except (ValueError, RecursionError) as exc:  # tomllib: an integer over 4300 digits, or deep nesting
            deep = isinstance(exc, RecursionError)
            problem = "nests arrays or tables too deeply" if deep else "has a number too long"
            raise UserError(f"config file {path} {problem} to read; shorten it") from None
        for key, value in raw.items():
            if key not in kinds:
                raise _unknown_key(key)
            values[key] = _check_value(key, value, kinds[key])
    for item in overrides or []:
        if not item.startswith("--") or "=" not in item:
            raise UserError(f"override {item!r} must look like --key=value")
        key, text = item[2:].split("=", 1)
        key = key.replace("-", "_")
        if key not in kinds:
            raise _unknown_key(key)
        values[key] = _parse_override(key, text, kinds[key])
    config = RunConfig(**values)
    validate(config)
    return with_task_defaults(config)


def config_from_dict(values: dict) -> RunConfig:
    """Rebuild a RunConfig saved as JSON in a run folder."""
    kinds = field_types()
    unknown = [key for key in values if key not in kinds]
    if unknown:
        raise _unknown_key(unknown[0])
    config = RunConfig(**{key: _check_value(key, value, kinds[key]) for key, value in values.items()})
    validate(config)
    return with_task_defaults(config)


def read_run_config(path: Path) -> RunConfig:
    """The config.json a run folder holds; UserError if it is unreadable, not JSON or not a loralab config."""
    fix = "restore it, or train the run again into a new out_dir"
    return config_from_dict(read_json_object(path, "a readable run config", fix))

"""Rows to training examples: a task's rows, through its conversation (or input text and target), in the run's
prompt format, encoded as the model kind takes them. The training loop and `loralab data preview` share it,
so that the preview shows exactly what trains."""

from __future__ import annotations

from collections.abc import Callable

from tqdm.auto import tqdm

from loralab.config import RunConfig
from loralab.data.chat import PromptFormat
from loralab.tasks.base import Task
from loralab.training.kinds import Example, Kind


def encode_rows(
    task: Task,
    kind: Kind,
    tokenizer,
    fmt: PromptFormat,
    config: RunConfig,
    rows: list[dict],
    split: str,
    code: Callable[[str], str] | None = None,
    quiet: bool = False,
) -> list:
    """The examples of one split; `code` rewrites texts into the code vocabulary (config.code_vocab)."""
    whole = task.examples(config, tokenizer, rows)  # task text: the split packed into rows
    if whole is not None:
        return whole
    target = task.answer if kind.generative else task.label
    code = code or (lambda text: text)

    def example(row: dict) -> Example:
        turns = [turn | {"content": code(turn["content"])} for turn in task.messages(config, row)]
        answer = target(config, row)
        return Example(turns, code(task.input_text(config, row)), code(answer) if kind.generative else answer)

    bar = tqdm(rows, desc=f"tokenizing {split}", unit="ex", leave=False, disable=len(rows) < 2000 or quiet)
    return [kind.encode(tokenizer, fmt, example(r), config.max_length) for r in bar]

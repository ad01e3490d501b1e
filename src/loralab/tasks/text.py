"""Raw text: causal language modelling on a `text` column or a .txt file, packed into rows of max_length.

Each split's texts are tokenized, joined with EOS between them and cut into rows of max_length tokens, every
token a target (the first of a row has no context and is not). Metrics: the mean loss per token and its
perplexity exp(loss) on the test split; validation loss as for every task.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from loralab.config import RunConfig
from loralab.data.encoding import Encoded, collate, end_token_id
from loralab.errors import UserError
from loralab.evaluation.loss import answer_loss_sum
from loralab.evaluation.predict import generate
from loralab.evaluation.scores import examples_digest, perplexity_statistics
from loralab.evaluation.validate import validation_loss
from loralab.models.detect import model_kind
from loralab.tasks.base import Data, Statistics, Task
from loralab.tasks.rows import column, dataset_label, load_tables, require_columns, text_value, value_key

# Literals: loralab.config reads them from this file without importing it. ROLES: the fields `columns` may
# map; DEFAULTS: what an empty key means for this family.
ROLES = ("text",)
DEFAULTS = {"template": "{text}", "chat_template": "none", "max_new_tokens": 64}

# test metrics for comparison reports (dotted: nested), the first is the main one
REPORT_METRICS = ("perplexity", "loss")


def load_data(config: RunConfig, splits: tuple[str, ...]) -> Data:
    name = column(config, "text")
    tables = load_tables(config, splits, value_key(name))
    rows = {}
    for split, table in tables.items():
        require_columns(config, table, ROLES, split)
        where = f"{dataset_label(config)}/{split} row"
        rows[split] = [
            {"text": text_value(row[name], f"{where} {i}", "text")} for i, row in enumerate(table.rows, 1)
        ]
    return Data(config, rows, {split: t.provenance for split, t in tables.items()})


def examples(config: RunConfig, tokenizer, rows: list[dict]) -> list[Encoded]:
    """The split's texts as one token stream (EOS between texts) cut into rows of max_length."""
    stream: list[int] = []
    end = end_token_id(tokenizer)
    for row in rows:
        stream += tokenizer(row["text"], add_special_tokens=False).input_ids + [end]
    size = config.max_length
    # n_prompt = 1: the first token of a row has no context, so it is read but not predicted
    return [
        Encoded(stream[i : i + size], 1) for i in range(0, len(stream), size) if len(stream[i : i + size]) > 1
    ]


def input_text(config: RunConfig, row: dict) -> str:
    return ""


def answer(config: RunConfig, row: dict) -> str:
    return row["text"]


def messages(config: RunConfig, row: dict) -> list[dict]:
    return [{"role": "user", "content": ""}, {"role": "assistant", "content": row["text"]}]


def score(config: RunConfig, rows: list[dict], generations: list[str]) -> tuple[dict, Statistics]:
    raise UserError("task text is scored by perplexity, not by generated texts")


def evaluate(
    task: Task,
    model: torch.nn.Module,
    tokenizer,
    config: RunConfig,
    rows: list[dict],
    device: torch.device,
    predict: Callable = generate,
    desc: str = "test",
) -> tuple[dict, list[str], Statistics]:
    """The mean loss per token of the test texts and its perplexity, with the packed rows' summed losses and
    token counts as their statistics (the bootstrap resamples rows); no predictions."""
    if model_kind(model) != "causal":
        raise UserError(f"task text trains a causal language model, not a {model_kind(model)} model")
    chunks = examples(config, tokenizer, rows)
    row_losses: list[tuple[float, int]] = []

    def each_row(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        sums = [
            answer_loss_sum(model, {k: v[i : i + 1] for k, v in batch.items()})
            for i in range(len(batch["labels"]))
        ]
        row_losses.extend((float(loss), n) for loss, n in sums)
        return sum(loss for loss, _ in sums), sum(n for _, n in sums)

    loss = validation_loss(
        model, chunks, config.eval_batch_size, tokenizer.pad_token_id, device, collate, each_row
    )
    tokens = sum(len(c) - 1 for c in chunks)
    losses, counts = zip(*row_losses, strict=True) if row_losses else ((), ())
    statistics = perplexity_statistics(list(losses), list(counts), examples_digest(rows))
    metrics = {"n": len(rows), "rows": len(chunks), "tokens": tokens, "loss": loss}
    return metrics | {"perplexity": math.exp(min(loss, 700))}, [], statistics


def headline(metrics: dict) -> str:
    return (
        f"perplexity {metrics['perplexity']:.2f} (loss {metrics['loss']:.4f}) on {metrics['tokens']:,} tokens "
        f"of {metrics['n']:,} texts"
    )


TASK = Task(
    "text",
    load_data,
    messages,
    input_text,
    answer,
    score,
    headline,
    REPORT_METRICS,
    evaluate_hook=evaluate,
    examples=examples,
)

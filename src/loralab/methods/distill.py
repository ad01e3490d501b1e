"""Knowledge distillation (Hinton et al. 2015): a small student learns from a teacher's class probabilities.

    loss = a · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 − a) · cross-entropy(student, label)

The teacher is a finished loralab run (e.g. the LoRA sentiment run: its class logits are the LM's logits of
the label words' first tokens after the prompt, or a classifier run's head) or any model name. Its logits on
the training examples are computed once and cached in the run folder (teacher_logits.safetensors), where the
other runs of a compare / sweep (sibling folders) find them. The student is a GRU or LSTM classifier
(embedding → RNN → linear on the last hidden state, the reference setup that distilled GPT-2 into an RNN) over
the tokenizer of `model`, or a smaller transformer named by `student`.
With `distill_alpha = 0` the same student trains on the labels alone: the baseline distillation must beat.
Validation loss is the plain cross-entropy in both cases, so the two are comparable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm
from transformers.modeling_outputs import SequenceClassifierOutput

from loralab.config import RunConfig, load_config, read_run_config
from loralab.data.chat import answer_ids
from loralab.data.encoding import collate_inputs, collate_prompts, to_device
from loralab.errors import UserError
from loralab.evaluation.loss import accepts
from loralab.evaluation.predict import prompt_ids, run_format
from loralab.files import read_tensors, write_atomically
from loralab.methods.base import Method
from loralab.methods.partial import load_trained, save_trained, unfreeze
from loralab.models.detect import model_kind
from loralab.models.loading import load_model_and_tokenizer, load_tokenizer
from loralab.tasks import get_task

RNN_STUDENTS = ("gru", "lstm")
CACHE_FILE = "teacher_logits.safetensors"


class RNNForSequenceClassification(nn.Module):
    """Token embedding → one-layer GRU/LSTM → linear layer on the hidden state after the last real token."""

    def __init__(
        self,
        vocab_size: int,
        num_labels: int,
        cell: str = "gru",
        embedding_dim: int = 128,
        hidden_size: int = 256,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.config = SimpleNamespace(
            model_type=f"rnn-{cell}", is_encoder_decoder=False, num_labels=num_labels
        )
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.rnn = (nn.GRU if cell == "gru" else nn.LSTM)(embedding_dim, hidden_size, batch_first=True)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_
    ) -> SequenceClassifierOutput:
        lengths = (
            attention_mask.sum(1)
            if attention_mask is not None
            else torch.full_like(input_ids[:, 0], input_ids.shape[1])
        )
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embedding(input_ids), lengths.cpu().clamp_min(1), batch_first=True, enforce_sorted=False
        )
        _, hidden = self.rnn(packed)
        last = (hidden[0] if isinstance(hidden, tuple) else hidden)[-1]  # LSTM returns (h, c)
        return SequenceClassifierOutput(logits=self.classifier(last))


def build_model(config: RunConfig, device: torch.device) -> tuple[nn.Module, object]:
    """The untrained student and its tokenizer."""
    if config.student not in RNN_STUDENTS:
        return load_model_and_tokenizer(
            config.student,
            device,
            kind="classifier",
            num_labels=len(config.label_words),
            trust_remote_code=config.trust_remote_code,
        )
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    torch.manual_seed(config.seed)
    student = RNNForSequenceClassification(
        len(tokenizer),
        len(config.label_words),
        config.student,
        config.student_embedding_dim,
        config.student_hidden_size,
        tokenizer.pad_token_id or 0,
    )
    return student.to(device), tokenizer


def distillation_loss_sum(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """Summed over the batch: a·T²·KL(teacher_T ‖ student_T) + (1 − a)·CE (Hinton et al. 2015, eq. 2 and after)."""
    ce = F.cross_entropy(student_logits.float(), labels, reduction="sum")
    if alpha == 0 or teacher_logits is None:
        return ce
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student_logits.float() / t, -1),
        F.log_softmax(teacher_logits.float() / t, -1),
        log_target=True,
        reduction="sum",
    )
    return alpha * t * t * kl + (1 - alpha) * ce


def training_loss(config: RunConfig, kind) -> Callable:
    def loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = distillation_loss_sum(
            logits,
            batch.get("teacher_logits"),
            batch["labels"],
            config.distill_alpha,
            config.distill_temperature,
        )
        return loss, int(batch["labels"].numel())

    return loss_sum


def _teacher_config(config: RunConfig) -> tuple[RunConfig, Path | None]:
    folder = Path(config.teacher)
    # a loralab run folder; a transformers model folder also has a config.json, beside its weights
    weights = any(folder.glob("model*.safetensors")) or (folder / "pytorch_model.bin").is_file()
    if (folder / "config.json").is_file() and not weights:
        if not (folder / "adapter").is_dir():
            raise UserError(f"teacher run {folder} has no adapter/ yet; finish training it first")
        teacher = read_run_config(folder / "config.json")
        return load_config(None, ["--device=" + config.device], base=teacher), folder
    # a model by name, zero-shot: the student's task, data and label words, the task's own prompt
    overrides = [f"--model={config.teacher}", "--method=lora", "--template=", "--chat_template="]
    return load_config(None, overrides, base=config), None


@torch.no_grad()
def compute_teacher_logits(config: RunConfig, rows: list[dict], load_run: Callable) -> torch.Tensor:
    """The teacher's class logits (N × classes) for `rows`, with the teacher's own prompt and tokenizer.

    `load_run(config, run_dir)` loads the teacher: a finished run's result on its base model, or with
    run_dir None a model by name (the training layer passes loralab.training.run_model.load_for_inference).
    """
    teacher_config, run = _teacher_config(config)
    if teacher_config.task != config.task:
        raise UserError(f"the teacher was trained on {teacher_config.task}, the student on {config.task}")
    task = get_task(config.task)
    model, tokenizer, device, _ = load_run(teacher_config, run)
    kind = model_kind(model.model if hasattr(model, "prompt") else model)
    fmt = run_format(tokenizer, teacher_config, causal=kind == "causal")[0]
    if kind == "causal":  # the first token of each label word's answer, read after the prompt
        before = [{"role": "user", "content": "x"}]
        ids = [answer_ids(tokenizer, fmt, before, word)[0] for word in teacher_config.label_words]
        if len(set(ids)) != len(ids):
            raise UserError(
                "the teacher's label words start with the same token; it cannot give class logits"
            )
    elif kind != "classifier":
        raise UserError(f"a {kind} teacher gives no class logits; use a causal LM or classifier run")
    prompts = [
        prompt_ids(
            tokenizer, fmt, task.input_text(teacher_config, r), teacher_config.max_length, kind == "causal"
        )
        for r in rows
    ]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = torch.empty(len(prompts), len(teacher_config.label_words))
    size = teacher_config.eval_batch_size
    for start in tqdm(range(0, len(order), size), desc="teacher", unit="batch"):
        rows_ = order[start : start + size]
        if kind == "causal":
            batch = collate_prompts([prompts[i] for i in rows_], tokenizer.pad_token_id)
            keep = (
                {"logits_to_keep": 1} if accepts(type(model), "logits_to_keep") else {}
            )  # the LM head on one position
            logits = model(**to_device(batch, device), **keep).logits[:, -1, ids]
        else:
            batch = collate_inputs([prompts[i] for i in rows_], tokenizer.pad_token_id)
            logits = model(**to_device(batch, device)).logits
        out[rows_] = logits.float().cpu()
    return out


_FIX = "delete it, and loralab computes the teacher's logits again"


def cached_teacher_logits(out: Path, key: str) -> tuple[torch.Tensor, Path] | None:
    """The teacher's logits saved under `key` and their file: in this run's folder, else in a sibling run's
    (another seed or setting of the same compare / sweep, with the same teacher and training examples)."""
    own = out / CACHE_FILE
    if own.is_file() and (found := read_tensors(own, _FIX).get(key)) is not None:
        return found, own
    for sibling in sorted(out.parent.glob(f"*/{CACHE_FILE}")):
        if sibling == own:
            continue
        try:
            found = read_tensors(sibling, _FIX).get(key)
        except UserError:  # another run's broken cache is that run's business
            continue
        if found is not None:
            return found, sibling
    return None


def attach_teacher(
    config: RunConfig, rows: list[dict], examples: list, out: Path, load_run: Callable
) -> list:
    """The training examples with the teacher's logits (cached in out/teacher_logits.safetensors)."""
    if config.distill_alpha == 0:
        return examples
    # the key changes with the examples and with the teacher's saved weights (a retrained teacher is new)
    adapter = Path(config.teacher) / "adapter"
    stamps = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in adapter.glob("*") if p.is_file()
    )
    key = hashlib.sha256(json.dumps([config.teacher, stamps, rows], sort_keys=True).encode()).hexdigest()
    cache = out / CACHE_FILE
    found = cached_teacher_logits(out, key[:32])
    logits = compute_teacher_logits(config, rows, load_run) if found is None else found[0]
    if found is None or found[1] != cache:  # kept in this run's folder too, so that the run stands alone
        out.mkdir(parents=True, exist_ok=True)
        write_atomically(cache, lambda p: save_file({key[:32]: logits.contiguous()}, p))
    return [
        dataclasses.replace(e, teacher_logits=tuple(row.tolist()))
        for e, row in zip(examples, logits, strict=True)
    ]


def prepare(
    model: nn.Module, config: RunConfig, extra_modules: tuple[str, ...] = (), tokenizer=None
) -> nn.Module:
    unfreeze(model, [""])  # the student trains from scratch (or in full)
    return model


def save(model: nn.Module, directory: Path, config: RunConfig) -> None:
    save_trained(model, directory, "distill", config.student)


# a fresh base model and one this method prepared take the saved parameters the same way
load = restore = load_trained

METHOD = Method(
    "distill",
    prepare,
    save,
    load,
    restore,
    build_model=build_model,
    attach_teacher=attach_teacher,
    training_loss=training_loss,
    torchrun=False,
)

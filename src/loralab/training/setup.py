"""Setting up a training run: everything before its first step, in the order that fails fastest.

`setup` runs these steps in turn, each filling in its part of a `Run`:

    _setup_run        the checks that need no model, torchrun, the run folder (checked, not yet changed)
    _setup_data       the three splits (a missing file fails in a second, not after the model has loaded)
    _setup_model      the base model, the code vocabulary, the method's trainable parameters, speed options;
                      then --overwrite may clear the run folder
    _setup_examples   tokenized examples; a teacher's logits (distill); packing; the training loss
    _setup_optimizer  the step schedule and AdamW over the trainable parameters
    _setup_state      the checkpoint to resume from, config.json and the run log
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from loralab.config import RunConfig, read_run_config
from loralab.data.chat import PromptFormat, prompt_format
from loralab.data.code_vocab.embeddings import add_code_vocabulary
from loralab.data.code_vocab.text import CodeVocab, predicting_with, rewrite_template
from loralab.data.encoding import collate_packed, pack_examples, random_subset
from loralab.data.sources import Provenance
from loralab.data.splits import SPLITS
from loralab.errors import UserError
from loralab.evaluation.code_eval import check_code_eval
from loralab.evaluation.loss import packing_problem
from loralab.evaluation.predict import run_format
from loralab.files import write_json_atomically, write_lines_atomically
from loralab.lora import count_parameters
from loralab.methods import get_method
from loralab.methods.base import Method
from loralab.models.detect import model_kind
from loralab.models.loading import load_tokenizer, resolve_device
from loralab.precision import PRECISIONS, apply_base_precision, choose_precision
from loralab.tasks import get_task
from loralab.tasks.base import Task
from loralab.training import distributed
from loralab.training.checkpoint import load_checkpoint, usable_checkpoint
from loralab.training.distributed import shared_value
from loralab.training.examples import encode_rows
from loralab.training.kinds import Kind, get_kind
from loralab.training.run_dir import check_out_dir, prepare_out_dir
from loralab.training.run_files import read_metrics
from loralab.training.run_log import RunLog, check_reporters
from loralab.training.run_model import load_base, load_for_inference
from loralab.training.schedule import Schedule
from loralab.training.speed import apply_speed_options, compiled_loss
from loralab.training.swiglu import use_lean_swiglu


def _log(message: str) -> None:
    print(f"loralab: {message}", file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    pass


@dataclass
class TrainState:
    """Where training stands: what a checkpoint saves besides the weights and the optimizer."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # optimizer steps already taken in the current epoch
    best_val_loss: float = math.inf
    best_step: int = 0
    evals_without_improvement: int = 0
    train_time_s: float = 0.0
    stopped_early: bool = False
    skipped_steps: int = 0  # steps whose loss or gradients were not finite (on_nonfinite = "skip")


@dataclass(eq=False, repr=False)
class Run:
    """Everything one training run holds; `setup` fills it in, the loop's steps read it and advance `state`."""

    config: RunConfig
    task: Task
    method: Method
    # _setup_run
    world: distributed.World = field(init=False)
    device: torch.device = field(init=False)
    out: Path = field(init=False)
    log: Callable[[str], None] = field(init=False)  # one voice: rank 0 speaks and writes, the others compute
    # _setup_data
    rows: dict[str, list[dict]] = field(init=False)  # train, validation, test
    sources: dict[str, Provenance] = field(init=False)  # where each split's rows came from
    # _setup_model
    model: torch.nn.Module = field(init=False)
    tokenizer: object = field(init=False)
    kind: Kind = field(init=False)
    vocab: CodeVocab | None = field(init=False)  # the code vocabulary (config.code_vocab)
    predict: Callable = field(init=False)  # the kind's predict, reading the code vocabulary's tokens back
    fmt: PromptFormat = field(init=False)  # the plain template or the chat template the examples are in
    trainable: int = field(init=False)
    total: int = field(init=False)
    # _setup_examples
    train_set: list = field(init=False)  # packed rows with config.packing
    val_set: list = field(init=False)
    collate_train: Callable = field(init=False)
    loss_sum: Callable = field(init=False)  # (model, batch) -> (summed training loss, targets)
    # _setup_optimizer
    schedule: Schedule = field(init=False)
    params: list[torch.nn.Parameter] = field(init=False)
    optimizer: torch.optim.Optimizer = field(init=False)
    # _setup_state
    state: TrainState = field(init=False)
    resumed: bool = field(init=False)  # False: a new run, or a resumed one that had no checkpoint yet
    run_log: RunLog = field(init=False)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id


def setup(config: RunConfig, resume: bool, overwrite: bool) -> Run:
    """A run ready for its first (or, resumed, its next) optimizer step."""
    run = Run(config, get_task(config.task), get_method(config.method))
    _setup_run(run, resume, overwrite)
    _setup_data(run)
    _setup_model(run)
    if run.world.main:  # only now, when the run can start, may --overwrite remove an earlier one
        prepare_out_dir(run.config, resume, overwrite)
    _setup_examples(run)
    _setup_optimizer(run)
    _setup_state(run, resume)
    return run


def _setup_run(run: Run, resume: bool, overwrite: bool) -> None:
    config = run.config
    check_reporters(config.report_to)
    check_code_eval(config)  # sandbox and problems: refuse now rather than after training
    run.world, run.device = distributed.init(resolve_device(config.device))
    if run.world.size > 1 and not run.method.torchrun:
        raise UserError(f"method {config.method} does not run under torchrun; train it in one process")
    run.log = _log if run.world.main else _quiet
    run.out = check_out_dir(config, resume, overwrite) if run.world.main else Path(config.out_dir)
    _resolve_base_precision(run, resume)


def _resolve_base_precision(run: Run, resume: bool) -> None:
    """Put the base precision this run computes in into run.config (so config.json records it): "auto" is
    decided here (a resumed run keeps what it chose at its start), the same on every torchrun rank."""
    config = run.config
    saved = run.out / "config.json"
    if config.base_precision == "auto" and config.autocast != "none":
        chosen, note = "fp32", "base_precision auto: fp32 (autocast is on)"
    elif config.base_precision == "auto" and resume and saved.is_file():
        chosen = read_run_config(saved).base_precision
        note = f"base_precision auto: {chosen}, as the run being resumed chose"
    else:
        chosen, note = choose_precision(config.base_precision, run.device)
    index = shared_value(PRECISIONS.index(chosen), run.world, run.device)  # rank 0's choice everywhere
    chosen = PRECISIONS[int(index)]
    if config.base_precision == "auto" or chosen != "fp32":
        run.log(note)
    run.config = dataclasses.replace(config, base_precision=chosen)


def _setup_data(run: Run) -> None:
    data = run.task.load_data(run.config, SPLITS)
    run.config = config = data.config  # with what the data decides (classification: the label words)
    run.rows, run.sources = {}, {}
    for split, limit, offset in (
        ("train", config.max_train_samples, 0),
        ("validation", config.max_eval_samples, 1),
        ("test", config.max_test_samples, 2),
    ):
        run.rows[split] = random_subset(data.rows[split], limit, config.subset_seed + offset)
        run.sources[split] = source = data.sources[split]
        run.log(f"{split}: {len(run.rows[split]):,} examples from {source}")
    for note in data.notes:
        run.log(note)
    if (
        len({source.origin for source in run.sources.values()}) > 1
    ):  # e.g. train from a file, test from another split of the same texts: leakage
        raise UserError(
            "the train, validation and test splits came from different sources; put all three "
            "files in the same folder (LORALAB_DATA_DIR or data_path)"
        )
    _check_chat_template(config)


def _check_chat_template(config: RunConfig) -> None:
    """A chat template that is required (chat_template = "tokenizer") or read from a file must be there
    before the model loads: the tokenizer alone answers that."""
    if config.chat_template in ("auto", "none", "chatml", "gemma", ""):
        return
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    prompt_format(tokenizer, config.chat_template, config.template, config.system_prompt)


def _setup_model(run: Run) -> None:
    config = run.config
    model, run.tokenizer = load_base(config, run.device)  # seeded with config.seed first
    run.kind = kind = get_kind(model_kind(model))
    if not kind.generative and run.task.label is None:
        raise UserError(
            f"task {config.task} produces text; it needs a language model, not model_kind classifier"
        )
    if kind.name != "causal" and (config.score_by == "likelihood" or run.task.name == "text"):
        what = "task text" if run.task.name == "text" else "score_by = likelihood"
        raise UserError(f"{what} needs a causal language model; {config.model} is a {kind.name} model")
    run.fmt, note = run_format(run.tokenizer, config, causal=kind.name == "causal")
    run.log(note)
    run.vocab, run.predict = None, kind.predict
    if config.code_vocab:  # one token per Python keyword / builtin; embeddings (and an untied head) train
        run.vocab = vocab = add_code_vocabulary(model, run.tokenizer)
        run.predict = predicting_with(kind.predict, vocab)
        run.fmt = dataclasses.replace(run.fmt, template=rewrite_template(run.fmt.template, vocab))
        run.log(
            f"code vocabulary: {len(vocab.tokens)} tokens added; {', '.join(vocab.modules_to_save)} train in full"
        )
    extra_modules = run.vocab.modules_to_save if run.vocab else ()
    run.model = model = run.method.prepare(model, config, extra_modules, run.tokenizer)
    precision_note = apply_base_precision(model, config.base_precision, run.device)
    if precision_note:
        run.log(precision_note)
    for note in apply_speed_options(model, config):
        run.log(note)
    use_lean_swiglu(model)  # exact; a third less MLP activation memory in training
    run.trainable, run.total = count_parameters(model)
    run.log(
        f"{config.method} on a {kind.name} model: {run.trainable:,} trainable of {run.total:,} parameters "
        f"({100 * run.trainable / run.total:.3f}%)"
    )


def _encode(run: Run, rows: list[dict], split: str) -> list:
    """The examples of one split, as the model kind takes them."""
    code = run.vocab.rewrite if run.vocab else None
    quiet = not run.world.main
    return encode_rows(run.task, run.kind, run.tokenizer, run.fmt, run.config, rows, split, code, quiet)


def _setup_examples(run: Run) -> None:
    config = run.config
    run.train_set = _encode(run, run.rows["train"], "train")
    run.val_set = _encode(run, run.rows["validation"], "validation")
    for split, encoded in (("train", run.train_set), ("validation", run.val_set)):
        long = sum(len(e) >= config.max_length for e in encoded)
        if long:
            run.log(
                f"{split}: {long:,} of {len(encoded):,} examples reach max_length = {config.max_length} "
                "tokens; longer ones were cut (the end of the text first)"
            )
    # distillation: the teacher's logits for every training example (the teacher loads as `loralab eval` does)
    rows = run.rows["train"]
    run.train_set = run.method.attach_teacher(config, rows, run.train_set, run.out, load_for_inference)
    run.loss_sum = compiled_loss(run.method.training_loss(config, run.kind), config)
    run.collate_train = run.kind.collate
    if config.packing:  # several examples per row, each attending only to itself
        problem = packing_problem(run.model, config.max_length, run.kind.name)
        if problem:
            raise UserError(problem)
        n_examples, dtype = len(run.train_set), next(run.model.parameters()).dtype
        run.train_set = pack_examples(run.train_set, config.max_length, config.seed)
        run.collate_train = functools.partial(collate_packed, dtype=dtype)
        run.log(
            f"packing: {n_examples:,} training examples in {len(run.train_set):,} rows of up to "
            f"{config.max_length} tokens"
        )


def _setup_optimizer(run: Run) -> None:
    config = run.config
    run.schedule = Schedule.of(len(run.train_set), config, run.world.size)
    run.params = [p for p in run.model.parameters() if p.requires_grad]
    distributed.broadcast_from_main(run.params, run.world)
    groups = param_groups(run.model, config.loraplus_lr_ratio)
    if config.loraplus_lr_ratio != 1:
        run.log(
            f"LoRA+: the B matrices learn at lr × {config.loraplus_lr_ratio:g}"
            if len(groups) > 1
            else f"loraplus_lr_ratio ignored: method {config.method} trains no LoRA B matrices"
        )
    run.optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def param_groups(model: torch.nn.Module, loraplus_lr_ratio: float = 1.0) -> list[dict]:
    """AdamW's parameter groups of the trainable parameters, each with its `lr_ratio` (the loop sets a group's
    lr to the schedule's × that ratio).

    One group, unless LoRA+ (Hayou et al. 2024, "LoRA+: Efficient Low Rank Adaptation of Large Models") is on:
    then every lora_B learns at lr × loraplus_lr_ratio and the rest (A, DoRA's magnitudes, biases, modules
    trained in full) at lr. peft's create_loraplus_optimizer also gives every 1-D parameter (biases, norms,
    magnitudes) the B rate; here only the B matrices, as the paper defines LoRA+."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    b_matrices = [p for name, p in named if name.endswith("lora_B")]
    if loraplus_lr_ratio == 1 or not b_matrices:
        return [{"params": [p for _, p in named], "lr_ratio": 1.0}]
    rest = [p for name, p in named if not name.endswith("lora_B")]
    return [{"params": rest, "lr_ratio": 1.0}, {"params": b_matrices, "lr_ratio": float(loraplus_lr_ratio)}]


def _setup_state(run: Run, resume: bool) -> None:
    """Where training starts: step 0, or the last usable checkpoint of a resumed run (and the metrics it
    logged up to there). A new run writes config.json."""
    out, log, restarted = run.out, run.log, False
    run.state = TrainState()
    if resume:
        found = usable_checkpoint(out / "checkpoint", log)
        if found is None:  # stopped before its first checkpoint: nothing was trained yet
            restarted, resume = True, False
            log(f"no checkpoint in {out} yet: starting from step 0")
        else:
            run.state = TrainState(**load_checkpoint(found, run.model, run.optimizer))
            state, total = run.state, run.schedule.total_steps
            log(f"resuming at step {state.step} of {total} (epoch {state.epoch + 1})")
    run.resumed = resume
    first_new_step = run.state.step + 1 if resume else 0 if restarted else None  # None: a new run
    if run.world.main:
        out.mkdir(parents=True, exist_ok=True)
        if first_new_step is None:
            write_json_atomically(out / "config.json", run.config.to_dict())
        else:  # the lines logged from first_new_step on belong to steps that are about to be redone
            kept = [r for r in read_metrics(out / "metrics.jsonl") if r["step"] < first_new_step]
            write_lines_atomically(out / "metrics.jsonl", kept)
    run.run_log = RunLog(
        out, run.config.report_to, run.config.to_dict(), resume_step=first_new_step, enabled=run.world.main
    )

"""The training loop: one plain loop for every method, readable top to bottom.

data → model → method.prepare → AdamW with warmup + cosine/linear decay → steps with gradient
accumulation (loss normalised by target tokens) → validation loss every `eval_every` steps →
checkpoint + best adapter → early stopping → test metrics by generation → summary.json, loss_curve.png
"""

from __future__ import annotations

import functools
import math
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from loralab.config import RunConfig, read_run_config
from loralab.data.code_vocab import add_code_vocabulary, predicting_with, rewrite_template, save_code_vocab
from loralab.data.encoding import IGNORE, batch_order, collate_packed, pack_examples, random_subset
from loralab.errors import Interrupted, UserError
from loralab.evaluation.code_eval import check_code_eval
from loralab.evaluation.loss import packing_problem
from loralab.evaluation.predict import evaluate_task, validation_loss, validation_loss_and_accuracy
from loralab.files import check_writable
from loralab.lora import count_parameters
from loralab.lora.inject import updates_kept_separate
from loralab.methods import get_method
from loralab.models.loading import model_kind, resolve_device
from loralab.tasks import get_task
from loralab.training import distributed
from loralab.training.checkpoint import load_checkpoint, save_checkpoint, usable_checkpoint
from loralab.training.kinds import get_kind
from loralab.training.run_files import (
    current_memory_mb,
    peak_memory_mb,
    plot_losses,
    process_peak_memory_mb,
    read_metrics,
    reset_peak_memory,
    write_json_atomically,
    write_lines_atomically,
)
from loralab.training.run_log import RunLog, check_reporters
from loralab.training.run_model import load_base
from loralab.training.speed import apply_speed_options, autocast_context, compiled_loss
from loralab.training.stopping import stop_on_signals
from loralab.training.swiglu import use_lean_swiglu

RUN_FILES = ("config.json", "summary.json", "metrics.jsonl", "predictions.jsonl", "code_eval_samples.jsonl",
             "loss_curve.png", "adapter", "checkpoint", "checkpoint.previous", "teacher_logits.safetensors",
             "tensorboard", "wandb", "wandb_run_id")  # fmt: skip
# Keys that may change when a run is resumed (to train longer or evaluate differently; out_dir: a moved run).
RESUMABLE_CHANGES = {"epochs", "max_steps", "patience", "eval_every", "device", "eval_batch_size",
                     "gradient_checkpointing", "compile", "report_to", "on_nonfinite", "out_dir",
                     "code_eval_isolation"}  # fmt: skip


def _log(message: str) -> None:
    print(f"loralab: {message}", file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    pass


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warmup to 1 over `warmup` steps, then constant, linear or cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def prepare_out_dir(config: RunConfig, resume: bool, overwrite: bool) -> Path:
    """Refuse to clobber an earlier run unless asked; check a resumed run's config still fits."""
    out = Path(config.out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"out_dir {out} is a file; choose a folder")
    check_writable(out)  # a read-only, full or forbidden out_dir fails now, not after the model has loaded
    saved = out / "config.json"
    if resume:
        if not saved.is_file():
            raise UserError(f"nothing to resume in {out} (no config.json); drop --resume to start a new run")
        old = read_run_config(saved).to_dict()
        changed = sorted(k for k, v in config.to_dict().items() if old[k] != v and k not in RESUMABLE_CHANGES)
        if changed:
            raise UserError(
                f"--resume with a different {', '.join(changed)} than the run in {out}; use a new out_dir"
            )
        return out
    if saved.is_file() or (out / "summary.json").is_file() or (out / "checkpoint").exists():
        if not overwrite:
            raise UserError(f"{out} already holds a run; pass --overwrite to replace it, --resume to continue it, "
                            "or choose another out_dir")  # fmt: skip
        for name in RUN_FILES:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    return out


def nonfinite_problem(step: int, loss: float, config: RunConfig, out: Path) -> str:
    """What to tell the user when step `step` produced a NaN or Inf loss or gradient."""
    what = f"the loss is {loss}" if not math.isfinite(loss) else "the gradients hold NaN or Inf"
    cause = f"lr {config.lr:g} may be too high"
    if config.autocast != "none":
        cause += f", or {config.autocast} autocast overflows (try autocast = none)"
    return (f"step {step}: {what}; {cause}. The last good checkpoint is in {out / 'checkpoint'}: rerun with "
            "--resume --on_nonfinite=skip to step past it, or lower lr and start again with --overwrite")  # fmt: skip


def _origin(source: str) -> str:
    """Which kind of source a data description names (all splits of a run must share one)."""
    if "vaderSentiment" in source:
        return "vader"
    return "hub" if "Hugging Face hub" in source else "files"


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # optimizer steps already taken in the current epoch
    best_val_loss: float = math.inf
    best_step: int = 0
    evals_without_improvement: int = 0
    train_time_s: float = 0.0
    stopped_early: bool = False
    skipped_steps: int = 0  # steps whose loss or gradients were not finite (on_nonfinite = "skip")


def train(config: RunConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Run one training job as `config` describes and return its summary (also written to summary.json)."""
    task, method = get_task(config.task), get_method(config.method)
    check_reporters(config.report_to)
    check_code_eval(config)  # sandbox and problems: refuse now rather than after training
    world, device = distributed.init(resolve_device(config.device))
    if world.size > 1 and hasattr(method, "attach_teacher"):
        raise UserError(f"method {config.method} does not run under torchrun; train it in one process")
    log = _log if world.main else _quiet  # one voice: rank 0 speaks and writes, the other ranks compute
    out = prepare_out_dir(config, resume, overwrite) if world.main else Path(config.out_dir)

    # Data first: a missing file should fail in a second, not after the model has loaded.
    rows, origins = {}, set()
    for split, limit, offset in (("train", config.max_train_samples, 0), ("validation", config.max_eval_samples, 1),
                                 ("test", config.max_test_samples, 2)):  # fmt: skip
        loaded, source = task.load_split(config, split)
        rows[split] = random_subset(loaded, limit, config.seed + offset)
        log(f"{split}: {len(rows[split]):,} examples from {source}")
        origins.add(_origin(source))
    if len(origins) > 1:  # e.g. train from a file, test from another split of the same texts: leakage
        raise UserError("the train, validation and test splits came from different sources; put all three "
                        "files in the same folder (LORALAB_DATA_DIR or data_path)")  # fmt: skip
    torch.manual_seed(config.seed)
    model, tokenizer = load_base(config, device)
    kind = get_kind(model_kind(model))
    if not kind.generative and not hasattr(task, "label"):
        raise UserError(
            f"task {config.task} produces text; it needs a language model, not model_kind classifier"
        )
    vocab, predict, template = None, kind.predict, config.template
    if config.code_vocab:  # one token per Python keyword / builtin; embeddings (and an untied head) train
        vocab = add_code_vocabulary(model, tokenizer)
        predict, template = predicting_with(kind.predict, vocab), rewrite_template(config.template, vocab)
        log(
            f"code vocabulary: {len(vocab.tokens)} tokens added; {', '.join(vocab.modules_to_save)} train in full"
        )
    model = method.prepare(model, config, vocab.modules_to_save if vocab else (), tokenizer)
    for note in apply_speed_options(model, config):
        log(note)
    use_lean_swiglu(model)  # exact; a third less MLP activation memory in training
    trainable, total = count_parameters(model)
    log(f"{config.method} on a {kind.name} model: {trainable:,} trainable of {total:,} parameters "
        f"({100 * trainable / total:.3f}%)")  # fmt: skip

    def encode(split_rows: list[dict], split: str) -> list:
        target = task.answer if kind.generative else task.label
        code = vocab.rewrite if vocab else (lambda text: text)
        bar = tqdm(split_rows, desc=f"tokenizing {split}", unit="ex", leave=False,
                   disable=len(split_rows) < 2000 or not world.main)  # fmt: skip
        return [kind.encode(tokenizer, template, code(task.input_text(config, r)), code(target(config, r)),
                            config.max_length) for r in bar]  # fmt: skip

    train_set, val_set = encode(rows["train"], "train"), encode(rows["validation"], "validation")
    for split, encoded in (("train", train_set), ("validation", val_set)):
        long = sum(len(e) >= config.max_length for e in encoded)
        if long:
            log(f"{split}: {long:,} of {len(encoded):,} examples reach max_length = {config.max_length} tokens; "
                "longer ones were cut (the end of the text first)")  # fmt: skip
    if hasattr(method, "attach_teacher"):  # distillation: the teacher's logits for every training example
        train_set = method.attach_teacher(config, rows["train"], train_set, out)
    train_loss_sum = method.training_loss(config, kind) if hasattr(method, "training_loss") else kind.loss_sum
    train_loss_sum = compiled_loss(train_loss_sum, config)
    collate_train = kind.collate
    if config.packing:  # several examples per row, each attending only to itself
        problem = packing_problem(model, config.max_length, kind.name)
        if problem:
            raise UserError(problem)
        n_examples, dtype = len(train_set), next(model.parameters()).dtype
        train_set = pack_examples(train_set, config.max_length, config.seed)
        collate_train = functools.partial(collate_packed, dtype=dtype)
        log(
            f"packing: {n_examples:,} training examples in {len(train_set):,} rows of up to {config.max_length} tokens"
        )
    lengths = [len(e) for e in train_set]
    micro_batches = math.ceil(len(train_set) / config.batch_size)
    per_step = config.grad_accum * world.size  # micro-batches per optimizer step, over all ranks
    steps_per_epoch = math.ceil(micro_batches / per_step)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    warmup = int(config.warmup_ratio * total_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    distributed.broadcast_from_main(params, world)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    metrics_path = out / "metrics.jsonl"
    state, restarted = TrainState(), False
    if resume:
        found = usable_checkpoint(out / "checkpoint", log)
        if found is None:  # stopped before its first checkpoint: nothing was trained yet
            restarted, resume = True, False
            log(f"no checkpoint in {out} yet: starting from step 0")
        else:
            state = TrainState(**load_checkpoint(found, model, optimizer))
            log(f"resuming at step {state.step} of {total_steps} (epoch {state.epoch + 1})")
    first_new_step = state.step + 1 if resume else 0 if restarted else None  # None: a new run
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        if first_new_step is None:
            write_json_atomically(out / "config.json", config.to_dict())
        else:  # the lines logged from first_new_step on belong to steps that are about to be redone
            kept = [r for r in read_metrics(metrics_path) if r["step"] < first_new_step]
            write_lines_atomically(metrics_path, kept)
    run_log = RunLog(out, config.report_to, config.to_dict(), resume_step=first_new_step, enabled=world.main)
    pad_id = tokenizer.pad_token_id

    def validate() -> dict:
        """The validation loss (and a classification head's accuracy) of the model as it is now."""
        if kind.generative:
            val_loss = validation_loss(model, val_set, config.eval_batch_size, pad_id, device, kind.collate,
                                       kind.loss_sum)  # fmt: skip
            return {"step": state.step, "epoch": state.epoch, "val_loss": val_loss}
        val_loss, accuracy = validation_loss_and_accuracy(model, val_set, config.eval_batch_size, pad_id, device,
                                                          kind.collate)  # fmt: skip
        return {"step": state.step, "epoch": state.epoch, "val_loss": val_loss, "val_accuracy": accuracy}

    def evaluate_and_checkpoint() -> None:
        t0 = time.time()
        with updates_kept_separate(model):  # bit-exact frozen weights, so that a resumed run equals this one
            record = validate()
        # under torchrun every rank takes rank 0's figure, so that all decide alike (best, early stop)
        val_loss = record["val_loss"] = distributed.shared_value(record["val_loss"], world, device)
        improved = val_loss < state.best_val_loss
        if improved:
            state.best_val_loss, state.best_step, state.evals_without_improvement = val_loss, state.step, 0
            if world.main:
                method.save(model, out / "adapter", config)
                if vocab is not None:
                    save_code_vocab(out / "adapter", vocab)
        else:
            state.evals_without_improvement += 1
        run_log.log(record | {"best_val_loss": state.best_val_loss, "eval_time_s": time.time() - t0})
        if world.main:
            save_checkpoint(out / "checkpoint", model, optimizer, vars(state))
        note = " (base model)" if state.step == 0 else " (best)" if improved else ""
        accuracy = f", accuracy {record['val_accuracy']:.4f}" if "val_accuracy" in record else ""
        log(f"step {state.step}: validation loss {val_loss:.4f}{accuracy}{note}")

    reset_peak_memory(device)  # the peak of training (with its validations), not of loading the model
    if not resume:
        evaluate_and_checkpoint()  # step 0: the base model's validation loss, the start of the curve
    model.train()
    with stop_on_signals() as stop:  # a signal ends the run between steps, with a checkpoint
        bar = tqdm(total=total_steps, initial=state.step, desc="training", unit="step", dynamic_ncols=True,
                   disable=not world.main)  # fmt: skip
        while state.step < total_steps and not state.stopped_early:
            batches = batch_order(
                lengths, config.batch_size, config.seed + state.epoch, config.group_by_length
            )
            groups = [batches[i : i + per_step] for i in range(0, len(batches), per_step)]
            for group in groups[state.batch_in_epoch :]:
                t0 = time.time()
                for g in optimizer.param_groups:
                    g["lr"] = config.lr * lr_factor(state.step, total_steps, warmup, config.lr_schedule)
                micro = [collate_train([train_set[i] for i in batch], pad_id) for batch in group]
                n_targets = sum(
                    int((m["labels"] != IGNORE).sum()) for m in micro
                )  # of the whole step, all ranks
                loss_total = torch.zeros((), dtype=torch.float64)
                for batch in distributed.my_share(micro, world):
                    with autocast_context(config, device):
                        loss_sum, _ = train_loss_sum(model, {k: v.to(device) for k, v in batch.items()})
                    (
                        loss_sum / n_targets
                    ).backward()  # normalise by target tokens of the whole accumulated step
                    loss_total += loss_sum.item()
                loss_total = distributed.sum_gradients(params, loss_total.to(device), world).item()
                grads = [p.grad for p in params if p.grad is not None]
                grad_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
                if not (math.isfinite(loss_total) and torch.isfinite(grad_norm)):
                    optimizer.zero_grad(set_to_none=True)
                    problem = nonfinite_problem(state.step + 1, loss_total / n_targets, config, out)
                    if config.on_nonfinite == "stop":
                        raise UserError(problem)
                    state.skipped_steps += 1
                    log(f"{problem.split(';')[0]}: skipped, no update ({state.skipped_steps} so far)")
                else:
                    if config.max_grad_norm > 0:
                        torch.nn.utils.clip_grads_with_norm_(params, config.max_grad_norm, grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.batch_in_epoch += 1
                state.train_time_s += time.time() - t0
                train_loss = loss_total / n_targets
                run_log.log({"step": state.step, "epoch": state.epoch, "train_loss": train_loss,
                             "lr": optimizer.param_groups[0]["lr"], "target_tokens": n_targets,
                             "memory_mb": current_memory_mb(device)})  # fmt: skip
                bar.update(1)
                bar.set_postfix(loss=f"{train_loss:.4f}", epoch=state.epoch + 1)
                end_of_epoch = state.batch_in_epoch == len(groups)
                due = state.step % config.eval_every == 0 if config.eval_every else end_of_epoch
                if due or state.step == total_steps:
                    evaluate_and_checkpoint()
                    model.train()
                    if config.patience and state.evals_without_improvement >= config.patience:
                        state.stopped_early = True
                        log(f"early stop: no improvement in {config.patience} evaluations")
                signum = stop.pending(world, device)
                if signum:  # SIGINT / SIGTERM: this step is done; keep it and leave
                    if world.main:
                        save_checkpoint(out / "checkpoint", model, optimizer, vars(state))
                    bar.close()
                    raise Interrupted(f"stopped by {signal.Signals(signum).name} after step {state.step}; checkpoint saved "
                                      f"in {out / 'checkpoint'}: run the same command with --resume to continue",
                                      128 + signum)  # fmt: skip
                if state.stopped_early or state.step >= total_steps:
                    break
            if state.batch_in_epoch == len(groups):
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        bar.close()
    train_peak_mb = peak_memory_mb(device)
    if not world.main:  # rank 0 alone evaluates on the test split and writes the summary
        distributed.finish(world)
        return {}

    method.restore(model, out / "adapter")  # the best validation loss, not merely the last step
    t0 = time.time()
    metrics, generations = evaluate_task(model, tokenizer, task, config, rows["test"], device, predict)
    samples: list[dict] = []
    if hasattr(task, "extra_evaluation"):  # e.g. code_qa: pass@k on HumanEval by running the generated code
        extra, samples = task.extra_evaluation(model, tokenizer, config, device, predict)
        metrics |= extra
    eval_time = time.time() - t0
    predictions = [{**row, "generated": text} for row, text in zip(rows["test"], generations, strict=True)]
    write_lines_atomically(out / "predictions.jsonl", predictions)
    if samples:
        write_lines_atomically(out / "code_eval_samples.jsonl", samples)
    epochs_done = state.step / steps_per_epoch
    summary = {
        "method": config.method,
        "model": config.model,
        "task": config.task,
        "dataset": config.dataset,
        "model_kind": kind.name,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": 100 * trainable / total,
        "peak_memory_mb": train_peak_mb,
        "process_peak_memory_mb": process_peak_memory_mb(device),
        "device": str(device),
        "train_time_s": state.train_time_s,
        "time_per_epoch_s": state.train_time_s / epochs_done if epochs_done else None,
        "epochs_completed": epochs_done,
        "steps": state.step,
        "train_examples": len(rows["train"]),
        "best_val_loss": state.best_val_loss,
        "best_step": state.best_step,
        "stopped_early": state.stopped_early,
        "skipped_steps": state.skipped_steps,
        "test_eval_time_s": eval_time,
        "metrics": metrics,
    }
    if hasattr(method, "summary"):
        summary |= method.summary(model)
    run_log.log_test(metrics, state.step)
    run_log.close()
    write_json_atomically(out / "summary.json", summary)
    plot_losses(read_metrics(metrics_path), out / "loss_curve.png", f"{config.method} on {config.task}")
    distributed.finish(world)
    return summary

"""The training loop: one plain loop for every method, readable top to bottom.

The steps, in the order they run:

    train     setup (training/setup.py: data → model → method.prepare → examples → AdamW), then
    fit       optimizer steps (train_step: gradient accumulation, the loss normalised by target tokens, warmup
              then cosine/linear decay) → validation loss every `eval_every` steps → checkpoint + best
              adapter → early stopping; SIGINT/SIGTERM ends the run between steps, with a checkpoint
    finish    the best adapter back → test metrics by generation → summary.json, loss_curve.png
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from loralab.config import RunConfig
from loralab.data.code_vocab.text import save_code_vocab
from loralab.data.encoding import IGNORE
from loralab.errors import Interrupted, UserError
from loralab.evaluation.plots import plot_confusion
from loralab.evaluation.uncertainty import save_statistics, with_intervals
from loralab.evaluation.validate import validation_loss, validation_loss_and_accuracy
from loralab.files import write_json_atomically, write_lines_atomically
from loralab.lora.inject import updates_kept_separate
from loralab.training import distributed
from loralab.training.checkpoint import save_checkpoint
from loralab.training.run_files import (
    current_memory_mb,
    peak_memory_mb,
    plot_losses,
    process_peak_memory_mb,
    read_metrics,
    reset_peak_memory,
)
from loralab.training.setup import Run, setup
from loralab.training.speed import autocast_context
from loralab.training.stopping import stop_on_signals


def train(config: RunConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Run one training job as `config` describes and return its summary (also written to summary.json)."""
    run = setup(config, resume, overwrite)
    reset_peak_memory(run.device)  # the peak of training (with its validations), not of loading the model
    if not run.resumed:
        evaluate_and_checkpoint(run)  # step 0: the base model's validation loss, the start of the curve
    fit(run)
    train_peak_mb = peak_memory_mb(run.device)
    if not run.world.main:  # rank 0 alone evaluates on the test split and writes the summary
        distributed.finish(run.world)
        return {}
    summary = finish(run, train_peak_mb)
    distributed.finish(run.world)
    return summary


def fit(run: Run) -> None:
    """Optimizer steps until the schedule's last (or an early stop), validating and checkpointing when due."""
    config, state, total_steps = run.config, run.state, run.schedule.total_steps
    lengths = [len(e) for e in run.train_set]
    run.model.train()
    with stop_on_signals() as stop:  # a signal ends the run between steps, with a checkpoint
        bar = tqdm(
            total=total_steps,
            initial=state.step,
            desc="training",
            unit="step",
            dynamic_ncols=True,
            disable=not run.world.main,
        )
        while state.step < total_steps and not state.stopped_early:
            steps = run.schedule.epoch(lengths, config, state.epoch)
            for micro_batches in steps[state.batch_in_epoch :]:
                t0 = time.time()
                train_loss, n_targets = train_step(run, micro_batches)
                state.step += 1
                state.batch_in_epoch += 1
                state.train_time_s += time.time() - t0
                run.run_log.log(
                    {
                        "step": state.step,
                        "epoch": state.epoch,
                        "train_loss": train_loss,
                        "lr": run.optimizer.param_groups[0]["lr"],
                        "target_tokens": n_targets,
                        "memory_mb": current_memory_mb(run.device),
                    }
                )
                bar.update(1)
                bar.set_postfix(loss=f"{train_loss:.4f}", epoch=state.epoch + 1)
                end_of_epoch = state.batch_in_epoch == len(steps)
                due = state.step % config.eval_every == 0 if config.eval_every else end_of_epoch
                if due or state.step == total_steps:
                    evaluate_and_checkpoint(run)
                    run.model.train()
                    if config.patience and state.evals_without_improvement >= config.patience:
                        state.stopped_early = True
                        run.log(f"early stop: no improvement in {config.patience} evaluations")
                signum = stop.pending(run.world, run.device)
                if signum:  # SIGINT / SIGTERM: this step is done; keep it and leave
                    bar.close()
                    stop_with_checkpoint(run, signum)
                if state.stopped_early or state.step >= total_steps:
                    break
            if state.batch_in_epoch == len(steps):
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        bar.close()


def train_step(run: Run, micro_batches: list[list[int]]) -> tuple[float, int]:
    """One optimizer step over `micro_batches` (lists of training-row indices; this rank runs its share).

    Returns the step's training loss per target token and its number of target tokens. A step whose loss or
    gradients are not finite stops the run (on_nonfinite = "stop") or makes no update ("skip").
    """
    config, state, params, optimizer = run.config, run.state, run.params, run.optimizer
    for group in optimizer.param_groups:  # each group keeps its ratio (LoRA+: B at lr × loraplus_lr_ratio)
        group["lr"] = run.schedule.lr(state.step, config) * group.get("lr_ratio", 1.0)
    micro = [run.collate_train([run.train_set[i] for i in batch], run.pad_id) for batch in micro_batches]
    n_targets = sum(int((m["labels"] != IGNORE).sum()) for m in micro)  # of the whole step, all ranks
    loss_total = torch.zeros((), dtype=torch.float64)
    for batch in distributed.my_share(micro, run.world):
        with autocast_context(config, run.device):
            loss_sum, _ = run.loss_sum(run.model, {k: v.to(run.device) for k, v in batch.items()})
        (loss_sum / n_targets).backward()  # normalise by target tokens of the whole accumulated step
        loss_total += loss_sum.item()
    loss_total = distributed.sum_gradients(params, loss_total.to(run.device), run.world).item()
    grads = [p.grad for p in params if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    finite = math.isfinite(loss_total) and bool(torch.isfinite(grad_norm))
    if finite:
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(params, config.max_grad_norm, grad_norm)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if not finite:
        problem = nonfinite_problem(state.step + 1, loss_total / n_targets, config, run.out)
        if config.on_nonfinite == "stop":
            raise UserError(problem)
        state.skipped_steps += 1
        run.log(f"{problem.split(';')[0]}: skipped, no update ({state.skipped_steps} so far)")
    return loss_total / n_targets, n_targets


def nonfinite_problem(step: int, loss: float, config: RunConfig, out: Path) -> str:
    """What to tell the user when step `step` produced a NaN or Inf loss or gradient."""
    what = f"the loss is {loss}" if not math.isfinite(loss) else "the gradients hold NaN or Inf"
    cause = f"lr {config.lr:g} may be too high"
    if config.autocast != "none":
        cause += f", or {config.autocast} autocast overflows (try autocast = none)"
    return (
        f"step {step}: {what}; {cause}. The last good checkpoint is in {out / 'checkpoint'}: rerun with "
        "--resume --on_nonfinite=skip to step past it, or lower lr and start again with --overwrite"
    )


def validate(run: Run) -> dict:
    """The validation loss (and a classification head's accuracy) of the model as it is now."""
    state, kind = run.state, run.kind
    args = (run.model, run.val_set, run.config.eval_batch_size, run.pad_id, run.device, kind.collate)
    if kind.generative:
        return {"step": state.step, "epoch": state.epoch, "val_loss": validation_loss(*args, kind.loss_sum)}
    val_loss, accuracy = validation_loss_and_accuracy(*args)
    return {"step": state.step, "epoch": state.epoch, "val_loss": val_loss, "val_accuracy": accuracy}


def evaluate_and_checkpoint(run: Run) -> None:
    """Validate; keep the adapter when the validation loss is the best so far; save a checkpoint."""
    state, out = run.state, run.out
    t0 = time.time()
    with updates_kept_separate(run.model):  # bit-exact frozen weights, so that a resumed run equals this one
        record = validate(run)
    # under torchrun every rank takes rank 0's figure, so that all decide alike (best, early stop)
    val_loss = record["val_loss"] = distributed.shared_value(record["val_loss"], run.world, run.device)
    improved = val_loss < state.best_val_loss
    if improved:
        state.best_val_loss, state.best_step, state.evals_without_improvement = val_loss, state.step, 0
        if run.world.main:
            run.method.save(run.model, out / "adapter", run.config)
            if run.vocab is not None:
                save_code_vocab(out / "adapter", run.vocab)
    else:
        state.evals_without_improvement += 1
    run.run_log.log(record | {"best_val_loss": state.best_val_loss, "eval_time_s": time.time() - t0})
    if run.world.main:
        save_checkpoint(out / "checkpoint", run.model, run.optimizer, vars(state))
    note = " (base model)" if state.step == 0 else " (best)" if improved else ""
    accuracy = f", accuracy {record['val_accuracy']:.4f}" if "val_accuracy" in record else ""
    run.log(f"step {state.step}: validation loss {val_loss:.4f}{accuracy}{note}")


def stop_with_checkpoint(run: Run, signum: int) -> None:
    """Save the step just finished and leave (raises Interrupted, exit code 128 + signal)."""
    if run.world.main:
        save_checkpoint(run.out / "checkpoint", run.model, run.optimizer, vars(run.state))
    raise Interrupted(
        f"stopped by {signal.Signals(signum).name} after step {run.state.step}; checkpoint saved "
        f"in {run.out / 'checkpoint'}: run the same command with --resume to continue",
        128 + signum,
    )


def finish(run: Run, train_peak_mb: float) -> dict:
    """The best weights back, test metrics (and the task's extra evaluation), the run's files; the summary."""
    config, out, model = run.config, run.out, run.model
    run.method.restore(model, out / "adapter")  # the best validation loss, not merely the last step
    t0 = time.time()
    metrics, generations, statistics = run.task.evaluate(
        model, run.tokenizer, config, run.rows["test"], run.device, run.predict
    )
    # e.g. code_qa: pass@k on HumanEval by running the generated code
    extra, samples, extra_statistics = run.task.extra_evaluation(
        model, run.tokenizer, config, run.device, run.predict
    )
    statistics |= extra_statistics
    metrics = with_intervals(metrics | extra, statistics, config.bootstrap_resamples, config.seed)
    eval_time = time.time() - t0
    if statistics:  # per-example figures behind each metric: intervals and paired tests between runs
        save_statistics(out / "test_statistics.safetensors", statistics)
    if generations:  # task text is scored by perplexity and generates nothing
        rows = run.rows["test"]
        predictions = [{**row, "generated": text} for row, text in zip(rows, generations, strict=True)]
        write_lines_atomically(out / "predictions.jsonl", predictions)
    if samples:
        write_lines_atomically(out / "code_eval_samples.jsonl", samples)
    summary = run_summary(run, metrics, train_peak_mb, eval_time)
    run.run_log.log_test(metrics, run.state.step)
    run.run_log.close()
    write_json_atomically(out / "summary.json", summary)
    title = f"{config.method} on {config.task}"
    plot_losses(read_metrics(out / "metrics.jsonl"), out / "loss_curve.png", title)
    if "confusion" in metrics:  # classification: expected (rows) against predicted (columns)
        plot_confusion(metrics["confusion"], out / "confusion.png", f"{title}: test confusion matrix")
    return summary


def run_summary(run: Run, metrics: dict, train_peak_mb: float, eval_time: float) -> dict:
    """The contents of summary.json."""
    config, state = run.config, run.state
    epochs_done = state.step / run.schedule.steps_per_epoch
    summary = {
        "method": config.method,
        "model": config.model,
        "task": config.task,
        "dataset": config.dataset,
        "model_kind": run.kind.name,
        "trainable_params": run.trainable,
        "total_params": run.total,
        "trainable_percent": 100 * run.trainable / run.total,
        "peak_memory_mb": train_peak_mb,
        "process_peak_memory_mb": process_peak_memory_mb(run.device),
        "device": str(run.device),
        "train_time_s": state.train_time_s,
        "time_per_epoch_s": state.train_time_s / epochs_done if epochs_done else None,
        "epochs_completed": epochs_done,
        "steps": state.step,
        "train_examples": len(run.rows["train"]),
        # where each split came from, and how many of its rows the run used (max_*_samples)
        "data_sources": {
            split: source.as_dict() | {"used": len(run.rows[split])} for split, source in run.sources.items()
        },
        "best_val_loss": state.best_val_loss,
        "best_step": state.best_step,
        "stopped_early": state.stopped_early,
        "skipped_steps": state.skipped_steps,
        "test_eval_time_s": eval_time,
        "metrics": metrics,
    }
    return summary | run.method.summary(run.model)

"""Python code question answering: an instruction (or a docstring and a signature) in, Python code out.

Scored by text overlap with the reference (corpus BLEU, Papineni et al. 2002; the batch-averaged BLEU of a
reference experiment; token precision/recall/F1) and, with `code_eval`, by running generated code against the
tests of HumanEval (Chen et al. 2021) or MBPP (Austin et al. 2021) in loralab.evaluation.sandbox.supervisor: pass@k.

HumanEval prompts are put in the training format of stdlib_docstrings (docstring, blank line, def line) and
the model writes the whole function; the program is the problem's prompt (imports, helpers, the stub), the
generated function (which replaces the stub), the tests and check(entry_point).
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Callable

import torch

from loralab.config import RunConfig
from loralab.data.code_sources import load_python_codes_25k, load_stdlib_docstrings
from loralab.data.encoding import random_subset
from loralab.data.sources import Loaded
from loralab.evaluation import code_eval
from loralab.evaluation.metrics import batched_bleu, corpus_bleu, token_prf
from loralab.tasks.base import Task

# Literals: loralab.config reads them from this file without importing it. DEFAULTS: what an empty dataset,
# template or max_new_tokens means; DATASETS: the datasets this task reads.
DEFAULTS = {
    "dataset": "stdlib_docstrings",
    "template": "### Instruction:\n{text}\n### Python code:\n",
    "max_new_tokens": 256,
}
DATASETS = ("stdlib_docstrings", "python_codes_25k")
LOADERS = {"python_codes_25k": load_python_codes_25k, "stdlib_docstrings": load_stdlib_docstrings}
PASS_KS = (1, 10, 100)


# test metrics for comparison reports (dotted: nested), the first is the main one
REPORT_METRICS = ("bleu", "token_f1", "humaneval.pass@1", "mbpp.pass@1")


def load_split(config: RunConfig, split: str) -> Loaded:
    """Rows {"question", "answer"} of one split and where they came from."""
    return LOADERS[config.dataset](split, config.data_path or None)


def input_text(config: RunConfig, row: dict) -> str:
    return row["question"]


def answer(config: RunConfig, row: dict) -> str:
    return row["answer"] if config.template[-1:].isspace() else " " + row["answer"]


def score(config: RunConfig, rows: list[dict], generations: list[str]) -> dict:
    references = [r["answer"] for r in rows]
    hypotheses = [g.strip("\n") for g in generations]
    prf = token_prf(hypotheses, references)
    return {
        "n": len(rows),
        "bleu": corpus_bleu(hypotheses, references),
        "bleu_batched16": batched_bleu(hypotheses, references, 16),
        "token_precision": prf["precision"],
        "token_recall": prf["recall"],
        "token_f1": prf["f1"],
        "empty_rate": sum(not h.strip() for h in hypotheses) / len(hypotheses),
    }


def humaneval_question(problem: dict) -> str:
    """The docstring of the problem's entry point, a blank line, then its def line (stdlib_docstrings format)."""
    tree = ast.parse(problem["prompt"])
    function = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == problem["entry_point"]
    )
    lines = problem["prompt"].splitlines()
    header = "\n".join(lines[function.lineno - 1 : function.body[0].lineno - 1]).rstrip()
    doc = ast.get_docstring(function) or ""
    return f"{doc}\n\n{textwrap.dedent(header)}"


def extra_evaluation(
    model: torch.nn.Module, tokenizer, config: RunConfig, device: torch.device, predict: Callable
) -> tuple[dict, list[dict]]:
    """pass@k of generated code on HumanEval or MBPP (config.code_eval), run in the sandbox.

    Returns the metrics and one record per problem (task id, question, the generations, passed count, statuses,
    first failure) for the run folder, so a reader can see what the model wrote and why it failed.
    """
    if not config.code_eval:
        return {}, []
    if config.code_eval == "humaneval":
        problems, source = code_eval.load_humaneval()
        questions = [humaneval_question(p) for p in problems]
    else:
        problems, source = code_eval.load_mbpp(split="test")
        questions = [code_eval.mbpp_prompt(p) for p in problems]
    picked = random_subset(list(range(len(problems))), config.max_code_eval_problems, config.seed + 3)
    problems, questions = [problems[i] for i in picked], [questions[i] for i in picked]
    n = config.code_eval_samples
    generations = predict(
        model, tokenizer, [q for q in questions for _ in range(n)], config, device, config.code_eval
    )
    build = code_eval.humaneval_program if config.code_eval == "humaneval" else code_eval.mbpp_program
    programs = [
        [
            build(p, "\n" + code_eval.truncate_completion(g, whole_function=True))
            for g in generations[i * n : (i + 1) * n]
        ]
        for i, p in enumerate(problems)
    ]
    result = code_eval.execute(
        programs,
        ks=[k for k in PASS_KS if k <= n],
        timeout_s=config.code_eval_timeout_s,
        workers=4,
        isolation=config.code_eval_isolation,
    )
    statuses: dict[str, int] = {}
    for problem in result["problems"]:
        for status, count in problem["status"].items():
            statuses[status] = statuses.get(status, 0) + count
    summary = {key: value for key, value in result.items() if key != "problems"}
    samples = [
        {"task_id": problem["task_id"], "question": question, "generations": generations[i * n : (i + 1) * n]}
        | {key: outcome[key] for key in ("passed", "status", "first_failure")}
        for i, (problem, question, outcome) in enumerate(
            zip(problems, questions, result["problems"], strict=True)
        )
    ]
    return {config.code_eval: summary | {"status": statuses, "source": source}}, samples


def headline(metrics: dict) -> str:
    text = (
        f"BLEU {metrics['bleu']:.2f} (batch-averaged {metrics['bleu_batched16']:.2f}), token F1 "
        f"{metrics['token_f1']:.3f} on {metrics['n']} examples"
    )
    for name in ("humaneval", "mbpp"):
        if name in metrics:
            scores = ", ".join(f"{k} {v:.3f}" for k, v in metrics[name].items() if k.startswith("pass@"))
            text += f"; {name} {scores} on {metrics[name]['n_problems']} problems"
    return text


TASK = Task(
    "code_qa",
    load_split,
    input_text,
    answer,
    score,
    headline,
    REPORT_METRICS,
    extra_evaluation=extra_evaluation,
)

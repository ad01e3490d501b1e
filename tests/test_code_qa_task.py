"""The code_qa task's HumanEval evaluation: question format, program assembly and sandboxed scoring."""

import pytest

from loralab.config import load_config
from loralab.evaluation import code_eval
from loralab.tasks import code_checks as code_qa


@pytest.fixture(autouse=True)
def offline_shared_data(monkeypatch, shared_data):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))


def answer_key():
    """question -> the canonical solution written as a whole function, as a trained model should answer."""
    problems, _ = code_eval.load_humaneval()
    key = {}
    for p in problems:
        question = code_qa.humaneval_question(p)
        key[question] = question.split("\n\n")[-1] + "\n" + p["canonical_solution"]
    return key


def test_humaneval_question_is_docstring_then_def_line():
    problems, _ = code_eval.load_humaneval()
    question = code_qa.humaneval_question(problems[0])
    doc, header = question.rsplit("\n\n", 1)
    assert header.startswith("def has_close_elements(") and header.endswith(":")
    assert doc.startswith("Check if in given list of numbers") and '"""' not in question


@pytest.mark.parametrize("right", [True, False])
def test_extra_evaluation_scores_what_the_model_writes(right):
    config = load_config(None, ["--task=code_qa", "--code_eval=humaneval", "--max_code_eval_problems=12"])
    key = answer_key()

    def predict(model, tokenizer, texts, config, device, desc="", template=None):
        # a model that answers every question right (the canonical function) or writes a stub
        return [key[t] + "\n\nprint(1)" if right else "def f():\n    pass" for t in texts]

    metrics, samples, statistics = code_qa.extra_evaluation(None, None, config, "cpu", predict)
    result = metrics["humaneval"]
    assert result["n_problems"] == 12 and result["n_samples"] == 12
    assert result["pass@1"] == (1.0 if right else 0.0)
    # pass@1's statistic: one 0/1 per problem, whose mean is the figure
    assert statistics["humaneval.pass@1"].n == 12
    assert statistics["humaneval.pass@1"].value() == result["pass@1"]
    assert sum(result["status"].values()) == 12
    # the run folder gets what the model wrote for each problem and how it fared
    assert len(samples) == 12 and len({s["task_id"] for s in samples}) == 12
    for sample in samples:
        assert sample["generations"] == [predict(None, None, [sample["question"]], config, "cpu")[0]]
        assert sample["passed"] == (1 if right else 0)
        assert (sample["first_failure"] is None) == right

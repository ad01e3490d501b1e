"""Instruction rows to conversations (data.formats) on real rows of each shape, format detection, and every
error a bad row gets."""

import json
import os
from pathlib import Path

import pytest

from loralab.data.formats import FORMATS, detect_format, to_messages
from loralab.errors import UserError


def shared(*parts: str) -> list[dict]:
    if not os.environ.get("LORALAB_DATA_DIR"):
        pytest.skip("LORALAB_DATA_DIR is unset: the real rows are read from shared/data")
    path = Path(os.environ["LORALAB_DATA_DIR"]).joinpath(*parts)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def columns_of(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def test_gpteacher_rows_are_alpaca_with_response():
    rows = shared("gpteacher_codegen_instruct", "codegen-instruct.jsonl")
    assert detect_format(columns_of(rows)) == "alpaca"
    with_input = without = 0
    for i, row in enumerate(rows):
        messages = to_messages(row, "alpaca", {}, f"train row {i}")
        if row["input"]:
            with_input += 1
            assert messages == [user(row["instruction"] + "\n\n" + row["input"]), assistant(row["response"])]
        else:
            without += 1
            assert messages == [user(row["instruction"]), assistant(row["response"])]
    assert with_input > 0 and without > 0


def test_ropes_rows_are_prompt_completion():
    rows = shared("ropes_t0_prompt_completion", "ropes_prompt_completion.jsonl")
    assert detect_format(columns_of(rows)) == "prompt_completion"
    for i, row in enumerate(rows[:300]):
        assert to_messages(row, "prompt_completion", {}, f"row {i}") == [
            user(row["prompt"]),
            assistant(row["completion"]),
        ]


def test_oasst_messages_and_sharegpt_files_give_the_same_conversations():
    messages = shared("oasst_en_100", "messages.jsonl")
    sharegpt = shared("oasst_en_100", "sharegpt.jsonl")
    assert detect_format(columns_of(messages)) == "messages"
    assert detect_format(columns_of(sharegpt)) == "sharegpt"
    assert len(messages) == len(sharegpt) == 400
    for i, (a, b) in enumerate(zip(messages, sharegpt, strict=True)):
        got = to_messages(a, "messages", {}, f"row {i}")
        assert got == to_messages(b, "sharegpt", {}, f"row {i}") == a["messages"]
    assert max(len(row["messages"]) for row in messages) == 6


def test_columns_name_the_datas_own_columns():
    row = {"question": "2 + 2?", "answer": "4", "response": "no"}
    mapping = {"prompt": "question", "completion": "answer"}
    assert to_messages(row, "prompt_completion", mapping, "row 1") == [user("2 + 2?"), assistant("4")]
    both = {"instruction": "Add.", "input": None, "output": "yes", "response": "no"}
    assert to_messages(both, "alpaca", {}, "row 1") == [user("Add."), assistant("yes")]  # output first
    chat = {"dialog": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert to_messages(chat, "messages", {"messages": "dialog"}, "row 1") == [user("hi"), assistant("hello")]
    # a conversations column of role/content turns (a common variant) reads as well
    variant = {"conversations": chat["dialog"]}
    assert to_messages(variant, "sharegpt", {}, "row 1") == [user("hi"), assistant("hello")]


def test_detection():
    assert detect_format(["messages", "id"]) == "messages"
    assert detect_format(["conversations"]) == "sharegpt"
    assert detect_format(["instruction", "input", "output"]) == "alpaca"
    assert detect_format(["prompt", "response"]) == "prompt_completion"
    with pytest.raises(
        UserError, match=r"columns 'text', 'label'.*set format \(one of .*sharegpt\).*columns"
    ):
        detect_format(["text", "label"])
    with pytest.raises(UserError, match="columns none"):
        detect_format([])


def test_system_turns_and_unanswered_user_turns():
    row = {"conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "hi"},
                             {"from": "gpt", "value": "hello"}, {"from": "human", "value": "and?"}]}  # fmt: skip
    assert to_messages(row, "sharegpt", {}, "row 1") == [
        {"role": "system", "content": "Be kind."},
        user("hi"),
        assistant("hello"),
    ]  # the last user turn has no answer to learn


@pytest.mark.parametrize(
    ("row", "fmt", "columns", "message"),
    [
        ({"prompt": "a"}, "prompt_completion", {},
         r"train row 12: no column 'completion' or 'response'.*the row has 'prompt'.*columns = \{completion"),
        ({"question": "a", "completion": "b"}, "prompt_completion", {"prompt": "q"},
         r"no column q .*the row has 'question', 'completion'.*columns = \{prompt"),
        ({"instruction": "a", "output": "b"}, "alpaca", {"input": "context"}, "no column context"),
        ({"instruction": "a", "output": ""}, "alpaca", {}, "output is empty"),
        ({"instruction": ["a"], "output": "b"}, "alpaca", {}, "instruction must be a string, not list"),
        ({"instruction": "a", "input": 3, "output": "b"}, "alpaca", {}, "input must be a string, not int"),
        ({"prompt": " \n", "completion": "b"}, "prompt_completion", {}, "prompt is empty"),
        ({"messages": [{"role": "user", "content": "a"}]}, "messages", {}, "no assistant turn"),
        ({"messages": []}, "messages", {}, "non-empty list of turns"),
        ({"messages": "a"}, "messages", {}, "non-empty list of turns"),
        ({"messages": ["a"]}, "messages", {}, "turn 1 must be an object, not str"),
        ({"messages": [{"text": "a"}]}, "messages", {}, "turn 1 has keys 'text'; a messages turn needs 'role'"),
        ({"messages": [{"role": "tool", "content": "a"}]}, "messages", {},
         "role 'tool'; the messages roles are system, user, assistant; drop such turns"),
        ({"messages": [{"role": "human", "content": "a"}]}, "messages", {}, "set format = sharegpt"),
        ({"conversations": [{"from": "bot", "value": "a"}]}, "sharegpt", {},
         "the sharegpt roles are system, human, user, gpt, assistant"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}, "messages", {},
         r"turn 2 \(assistant\) is empty"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages", {},
         r"turn 1 \(user\) content must be a string, not list"),
        ({"conversations": [{"from": "human", "value": None}]}, "sharegpt", {}, "content must be a string, not NoneType"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}, "messages", {},
         "system turn may only open"),
        ({"prompt": "a", "completion": "b"}, "jsonl", {}, f"unknown format 'jsonl'; choose one of {', '.join(FORMATS)}"),
    ],
)  # fmt: skip
def test_errors_name_the_row_and_the_fix(row, fmt, columns, message):
    with pytest.raises(UserError, match=message) as caught:
        to_messages(row, fmt, columns, "train row 12")
    assert str(caught.value).startswith("train row 12: ")
    assert "\n" not in str(caught.value)

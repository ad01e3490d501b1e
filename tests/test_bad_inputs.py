"""Bad input of every kind, one table: each case builds its input in tmp_path and runs the CLI, which must answer
with exit code 2 and one line "loralab: error: ..." on stderr naming the problem and the fix (log lines and
progress bars may come before it for late errors, a traceback never), and leave every file as it was.

Most cases call loralab.cli.main in-process; those marked "process" run `python -m loralab` to prove that no
traceback reaches the real stderr; "unprivileged" ones run it without the capabilities that let root read
and write any file, and "tmpfs" cases inside a private mount namespace with a tiny tmpfs that is full or read-only.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from loralab.cli import main

DEMO = "configs/rotten_tomatoes_lora.toml"
SMALL = ["--max_train_samples=16", "--max_eval_samples=8", "--max_test_samples=4", "--max_steps=1",
         "--batch_size=8", "--eval_batch_size=8", "--max_length=32", "--report_to="]  # fmt: skip
GOOD_ROW = {"text": "a fine, warm film", "label": 1}


@dataclass
class Env:
    """What a case builds on: its own tmp folder, the tiny model, a finished run (copy it before damaging it)."""

    tmp: Path
    model: Path
    run: Path
    other_model: Path
    gpt2_adapter: Path
    monkeypatch: pytest.MonkeyPatch

    def train(self, *extra: str, out: str = "out") -> list[str]:
        return ["train", DEMO, *SMALL, f"--model={self.model}", f"--out_dir={self.tmp / out}", *extra]

    def copy_run(self) -> Path:
        return Path(shutil.copytree(self.run, self.tmp / "run"))

    def copy_model(self) -> Path:
        return Path(shutil.copytree(self.model, self.tmp / "model"))


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Env], list[str]]  # writes the bad input under env.tmp, returns the CLI arguments
    needles: tuple[str, ...]  # the problem and the fix, as the error line must say them
    runner: str = "inprocess"  # inprocess | process | unprivileged | tmpfs-full | tmpfs-ro
    # True: it fails mid-run, so new complete files may stay (config.json), never half-written ones
    starts_run: bool = False


# ------------------------------------------------------------------------------------------- builders


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def toml(env: Env, text: str) -> list[str]:
    return ["train", str(write(env.tmp / "bad.toml", text)), f"--out_dir={env.tmp / 'out'}"]


def data(env: Env, train: str | bytes, name: str = "train.jsonl") -> list[str]:
    """A data folder whose validation and test files are fine and whose train file is `train`."""
    folder = env.tmp / "data"
    for split in ("validation", "test"):
        write(folder / f"{split}.jsonl", json.dumps(GOOD_ROW) + "\n")
    write(folder / name, train)
    return env.train(f"--data_path={folder}")


def lines(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def model_folder(env: Env, damage: Callable[[Path], None]) -> list[str]:
    folder = env.copy_model()
    damage(folder)
    return env.train(f"--model={folder}")


def truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def run_with(env: Env, damage: Callable[[Path], None], command: str = "eval") -> list[str]:
    run = env.copy_run()
    damage(run)
    return (
        [command, str(run), "--max_test_samples=4"]
        if command == "eval"
        else [command, str(run), "--prompt=hi"]
    )


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


def rank_disagrees(run: Path) -> None:
    """The config says rank 4, the weights are rank 8."""
    edit_json(run / "adapter" / "loralab.json", lambda v: v["lora_config"].update(r=4))
    edit_json(run / "adapter" / "adapter_config.json", lambda v: v.update(r=4))


def other_base(env: Env) -> Callable[[Path], None]:
    """The run's config names another base model (hidden size 32, not 16) than its adapter was trained on."""
    return lambda run: edit_json(run / "config.json", lambda v: v.update(model=str(env.other_model)))


def gpt2_adapter(env: Env) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        shutil.rmtree(run / "adapter")
        shutil.copytree(env.gpt2_adapter, run / "adapter")

    return damage


def prompt_tuning_run(run: Path) -> None:
    """A prompt-tuning run whose soft prompt file is corrupt."""
    edit_json(run / "config.json", lambda v: v.update(method="prompt_tuning"))
    shutil.rmtree(run / "adapter")
    write(run / "adapter" / "adapter_config.json", json.dumps({"peft_type": "PROMPT_TUNING"}))
    write(run / "adapter" / "adapter_model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{corrupt")


def full_run(run: Path) -> None:
    """A full fine-tuning run whose trained weights are corrupt."""
    edit_json(run / "config.json", lambda v: v.update(method="full"))
    shutil.rmtree(run / "adapter")
    write(run / "adapter" / "trained.safetensors", b"not a safetensors file at all")
    write(run / "adapter" / "method.json", json.dumps({"method": "full", "parameters": []}))


def distill_cache(env: Env) -> list[str]:
    """A distillation run into a folder holding a corrupt teacher-logits cache."""
    teacher = env.copy_run()
    write(env.tmp / "out" / "teacher_logits.safetensors", b"\xff" * 64)
    return env.train("--method=distill", f"--teacher={teacher}", "--student_hidden_size=8",
                     "--student_embedding_dim=8")  # fmt: skip


def remote_code_folder(env: Env) -> list[str]:
    folder = env.copy_model()
    marker = env.tmp / "remote_code_ran"
    write(folder / "custom_llama.py", f"open({str(marker)!r}, 'w').write('imported')\n" + CUSTOM_CODE)
    edit_json(folder / "config.json", lambda v: v.update(auto_map=AUTO_MAP))
    return ["generate", f"--model={folder}", "--prompt=hi", "--max_new_tokens=2"]


CUSTOM_CODE = """
from transformers import LlamaConfig, LlamaForCausalLM


class TinyConfig(LlamaConfig):
    pass


class TinyForCausalLM(LlamaForCausalLM):
    config_class = TinyConfig
"""
AUTO_MAP = {"AutoConfig": "custom_llama.TinyConfig", "AutoModelForCausalLM": "custom_llama.TinyForCausalLM"}


def existing_run(env: Env) -> list[str]:
    env.copy_run()
    return env.train(out="run")


def disk_full_on_adapter(env: Env) -> list[str]:
    """The disk fills up while the adapter is saved: safetensors has written part of the file, then fails."""
    from safetensors import SafetensorError

    import loralab.lora.io as lora_io

    def save_file(tensors, path, metadata=None):
        Path(path).write_bytes(b"\x00" * 10)  # the part that fitted
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    env.monkeypatch.setattr(lora_io, "save_file", save_file)
    write(env.tmp / "out" / "notes.txt", "mine")  # a file of the user's in out_dir stays as it is
    return env.train()


def disk_full_on_text(env: Env) -> list[str]:
    """The disk fills up while config.json is written (the first file of a run)."""
    real = Path.write_text

    def write_text(self, text, *args, **kwargs):
        if env.tmp in self.parents:
            real(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, text, *args, **kwargs)

    env.monkeypatch.setattr(Path, "write_text", write_text)
    return env.train()


def locked_folder(env: Env) -> list[str]:
    locked = env.tmp / "locked"
    locked.mkdir()
    write(locked / "keep.txt", "mine")
    locked.chmod(0o555)
    return env.train(f"--out_dir={locked / 'run'}")


def unreadable_data(env: Env) -> list[str]:
    argv = data(env, lines(GOOD_ROW))
    (env.tmp / "data" / "train.jsonl").chmod(0o000)
    return argv


def on_tmpfs(env: Env) -> list[str]:
    """out_dir inside the tmpfs that the tmpfs runners mount at env.tmp / "disk"."""
    return env.train(f"--out_dir={env.tmp / 'disk' / 'run'}")


# ------------------------------------------------------------------------------------------- the table


CASES = [
    # config files
    Case("config-missing", lambda e: ["train", str(e.tmp / "nope.toml")], ("nope.toml not found", "pass an existing .toml")),
    Case("config-syntax-error", lambda e: toml(e, "rank = = 4\n"), ("is not valid TOML", "fix the syntax"), "process"),
    Case("config-unknown-key", lambda e: toml(e, "rnak = 4\n"), ("unknown config key 'rnak'", "did you mean 'rank'")),
    Case("config-wrong-type", lambda e: toml(e, 'rank = "eight"\n'), ("'rank' must be an integer", "'eight'")),
    Case("config-list-wrong-type", lambda e: toml(e, "label_words = 3\n"), ("'label_words' must be a list of strings", "got 3")),
    Case("config-out-of-range-lr", lambda e: toml(e, "lr = -0.1\n"), ("lr must be > 0", "-0.1")),
    Case("config-out-of-range-dropout", lambda e: toml(e, "dropout = 1.5\n"), ("dropout must be in [0, 1)", "1.5")),
    Case("config-bad-choice", lambda e: toml(e, 'method = "prefix"\n'), ("method must be one of", "prefix")),
    Case("config-template-without-text", lambda e: toml(e, 'template = "Review:"\n'), ("template must contain {text}", "input text goes")),
    Case("config-not-utf8", lambda e: toml(e, "rank = 4 # caf\xe9\n".encode("latin-1")), ("is not UTF-8", "re-save it as UTF-8")),
    # command-line flags
    Case("flag-unknown-key", lambda e: e.train("--lerning_rate=1e-3"), ("unknown config key 'lerning_rate'", "--help")),
    Case("flag-not-an-int", lambda e: e.train("--rank=four"), ("--rank must be an integer", "'four'")),
    Case("flag-not-a-bool", lambda e: e.train("--trust_remote_code=maybe"), ("--trust_remote_code must be true or false", "'maybe'")),
    Case("flag-bad-json-list", lambda e: e.train("--target_modules=[q_proj"), ("--target_modules looks like a JSON list", "does not parse")),
    Case("flag-without-value", lambda e: [*e.train(), "--fast"], ("unrecognized arguments: --fast", "--key=value")),
    Case("flag-no-command", lambda e: [], ("the following arguments are required: COMMAND", "loralab --help")),
    Case("flag-generate-without-prompt", lambda e: ["generate", "--model=smollm2-135m"], ("--prompt", "loralab generate --help")),
    Case("flag-resume-and-overwrite", lambda e: e.train("--resume", "--overwrite"), ("--resume and --overwrite contradict", "pick one")),
    Case("flag-unknown-device", lambda e: e.train("--device=tpu"), ("unknown device 'tpu'", "use auto, cpu, cuda")),
    Case("flag-unknown-reporter", lambda e: e.train("--report_to=mlflow"), ("unknown reporter 'mlflow'", "choose from tensorboard")),
    Case("flag-eval-run-and-model", lambda e: ["eval", str(e.tmp), "--model=x"], ("either RUN_DIR or --model", "not both")),
    # data files
    Case("data-path-missing", lambda e: e.train(f"--data_path={e.tmp / 'nowhere'}"), ("nowhere not found", "check the path")),
    Case("data-split-file-missing", lambda e: data(e, lines(GOOD_ROW), name="training.jsonl"), ("has no train.jsonl", "add one or pass a file path")),
    Case("data-unreadable", unreadable_data, ("cannot read", "train.jsonl", "check its permissions"), "unprivileged"),
    Case("data-not-utf8", lambda e: data(e, b'{"text": "caf\xe9", "label": 1}\n'), ("train.jsonl is not UTF-8", "re-save it as UTF-8")),
    Case("data-empty-file", lambda e: data(e, ""), ("train.jsonl is empty", "at least one row")),
    Case("data-only-blank-lines", lambda e: data(e, "\n\n\n"), ("train.jsonl is empty", "no data rows")),
    Case("data-bad-json-line", lambda e: data(e, lines(GOOD_ROW) + "{oops\n"), ("train.jsonl, line 2: not valid JSON", "fix or remove that line")),
    Case("data-missing-columns", lambda e: data(e, lines({"review": "fine", "stars": 4})), ("missing column(s) 'text', 'label'", "rename or add them")),
    Case("data-label-outside-set", lambda e: data(e, lines(GOOD_ROW, GOOD_ROW, {"text": "meh", "label": 2})), ("train.jsonl, line 3: label 2 is not 0 (negative) or 1 (positive)", "fix the labels")),
    Case("data-label-word", lambda e: data(e, lines({"text": "meh", "label": "positive"})), ("line 1: label 'positive' is not 0", "fix the labels")),
    Case("data-empty-text", lambda e: data(e, lines(GOOD_ROW, {"text": "  ", "label": 0})), ("train.jsonl, line 2: the text is empty", "remove that row")),
    Case("data-text-not-a-string", lambda e: data(e, lines({"text": 42, "label": 0})), ("line 1: text must be a string", "fix that row")),
    Case("data-csv-short-line", lambda e: data(e, "text,label\ngood,1\nbad\n", name="train.csv"), ("train.csv, line 3: no value for label", "fix that line")),
    # model names and folders
    Case("model-unknown-name", lambda e: e.train("--model=no-such-model-xyz"), ("unknown model 'no-such-model-xyz'", "smollm2-135m")),
    Case("model-empty-folder", lambda e: e.train(f"--model={(e.tmp / 'empty').mkdir() or e.tmp / 'empty'}"), ("cannot load the model folder", "config.json, weights and tokenizer")),
    Case("model-config-not-json", lambda e: model_folder(e, lambda f: write(f / "config.json", "{not json")), ("cannot load the model folder", "config.json, weights and tokenizer")),
    Case("model-weights-missing", lambda e: model_folder(e, lambda f: (f / "model.safetensors").unlink()), ("cannot load the model folder", "config.json, weights and tokenizer")),
    Case("model-weights-truncated", lambda e: model_folder(e, lambda f: truncate(f / "model.safetensors")), ("cannot load the model folder", "config.json, weights and tokenizer")),
    Case("model-file-not-gguf", lambda e: e.train(f"--model={write(e.tmp / 'model.bin', b'x')}"), ("is not a .gguf file", "pass a .gguf file, a model folder")),
    Case("model-needs-remote-code", remote_code_folder, ("needs remote code", "--trust_remote_code=true only if you trust")),
    Case("model-kind-mismatch", lambda e: e.train("--model_kind=seq2seq"), ("model_kind seq2seq needs an encoder-decoder", "T5, BART")),
    # adapter folders and other saved tensors
    Case("adapter-weights-missing", lambda e: run_with(e, lambda r: (r / "adapter/adapter_model.safetensors").unlink()), ("has no adapter_model.safetensors", "pass the folder save_adapter wrote")),
    Case("adapter-config-missing", lambda e: run_with(e, lambda r: [(r / "adapter" / n).unlink() for n in ("loralab.json", "adapter_config.json")]), ("not an adapter folder (no adapter_config.json)", "pass the folder save_adapter wrote")),
    Case("adapter-config-not-json", lambda e: run_with(e, lambda r: write(r / "adapter/loralab.json", "{")), ("loralab.json is not valid JSON", "save the adapter again")),
    Case("adapter-weights-corrupt", lambda e: run_with(e, lambda r: truncate(r / "adapter/adapter_model.safetensors")), ("is not a valid safetensors file", "save the adapter again"), "process"),
    Case("adapter-config-disagrees-with-weights", lambda e: run_with(e, rank_disagrees), ("has shape (8, 16) but the model needs (4, 16): its config and weights disagree", "save the adapter again")),
    Case("adapter-for-another-base", lambda e: run_with(e, other_base(e)), ("has shape (8, 16) but the model needs (8, 32)", "load it onto that model")),
    Case("adapter-for-another-architecture", lambda e: run_with(e, gpt2_adapter(e)), ("was made for another model", "target module 'c_attn' matches no module", "load it onto the base model it was trained on")),
    Case("adapter-not-lora", lambda e: run_with(e, lambda r: (r / "adapter/loralab.json").unlink() or edit_json(r / "adapter/adapter_config.json", lambda v: v.update(peft_type="IA3"))), ("holds a IA3 adapter", "loralab loads LoRA adapters only")),
    Case("adapter-generate-weights-corrupt", lambda e: run_with(e, lambda r: truncate(r / "adapter/adapter_model.safetensors"), "generate"), ("is not a valid safetensors file", "save the adapter again")),
    Case("prompt-tuning-weights-corrupt", lambda e: run_with(e, prompt_tuning_run), ("adapter_model.safetensors is not a valid safetensors file", "train the run again")),
    Case("full-weights-corrupt", lambda e: run_with(e, full_run), ("trained.safetensors is not a valid safetensors file", "train the run again")),
    Case("distill-teacher-cache-corrupt", distill_cache, ("teacher_logits.safetensors is not a valid safetensors file", "delete it")),
    # run folders
    Case("run-config-not-json", lambda e: run_with(e, lambda r: write(r / "config.json", "{oops")), ("config.json is not a readable run config", "train the run again")),
    Case("run-without-adapter", lambda e: run_with(e, lambda r: shutil.rmtree(r / "adapter")), ("has no adapter/ folder yet", "train it first")),
    Case("run-not-a-run-folder", lambda e: ["eval", str(e.tmp)], ("not a loralab run folder", "pass the out_dir of a training run")),
    Case("run-exists", existing_run, ("already holds a run", "--overwrite to replace it, --resume to continue it")),
    Case("run-resume-other-settings", lambda e: [*existing_run(e), "--resume", "--rank=4"], ("--resume with a different", "rank than the run in", "use a new out_dir")),
    Case("run-resume-nothing", lambda e: e.train("--resume"), ("nothing to resume", "drop --resume")),
    Case("run-out-dir-is-a-file", lambda e: e.train(f"--out_dir={write(e.tmp / 'file', 'x')}"), ("is a file", "choose a folder")),
    Case("run-out-dir-not-writable", locked_folder, ("cannot write to", "locked/run (permission denied in", "choose another out_dir"), "unprivileged"),
    Case("run-out-dir-read-only-disk", on_tmpfs, ("disk/run is on a read-only file system", "choose another out_dir on a writable disk"), "tmpfs-ro"),
    Case("run-disk-full-at-start", on_tmpfs, ("no space left on the disk holding", "disk/run", "free some space"), "tmpfs-full"),
    Case("run-disk-full-saving-adapter", disk_full_on_adapter, ("no space left on the disk holding", "out/adapter", "another out_dir"), starts_run=True),
    Case("run-disk-full-writing-config", disk_full_on_text, ("no space left on the disk holding", "out", "free some space"), starts_run=True),
    Case("export-to-existing-folder", lambda e: ["export", str(e.copy_run()), f"--to={(e.tmp / 'dest').mkdir() or e.tmp / 'dest'}"], ("dest exists", "pass --overwrite")),
]  # fmt: skip


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_llama_folder) -> Path:
    """A real two-step LoRA run of the tiny Llama (cases copy it, then damage the copy)."""
    data_dir = os.environ.get("LORALAB_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "rotten_tomatoes").is_dir():
        pytest.fail("LORALAB_DATA_DIR must name ../shared/data (run through scripts/test.sh)")
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", DEMO, *SMALL, f"--model={tiny_llama_folder}", f"--out_dir={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def other_model(tmp_path_factory, tiny_llama_folder) -> Path:
    """Another tiny Llama (hidden size 32) with the same tokenizer: an adapter of the first does not fit it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("other_llama")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2_adapter_folder(tmp_path_factory) -> Path:
    """A LoRA adapter of a tiny GPT-2 (other module names and layout than Llama)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from loralab.lora import LoRAConfig, apply_lora
    from loralab.lora.io import save_adapter

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2))
    apply_lora(model, LoRAConfig(r=8, target_modules=("c_attn",)))
    return save_adapter(model, tmp_path_factory.mktemp("gpt2") / "adapter")


@pytest.fixture
def env(tmp_path, tiny_llama_folder, finished_run, other_model, gpt2_adapter_folder, monkeypatch) -> Env:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return Env(tmp_path, tiny_llama_folder, finished_run, other_model, gpt2_adapter_folder, monkeypatch)


# ------------------------------------------------------------------------------------------- checks


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder under `folder`: contents and modification time (folders: their entries)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        stat = path.lstat()
        if path.is_dir():
            found[str(path.relative_to(folder))] = ("dir", stat.st_mtime_ns, stat.st_mode)
        else:
            found[str(path.relative_to(folder))] = (_bytes(path), stat.st_mtime_ns, stat.st_mode)
    return found


def _bytes(path: Path) -> bytes:
    mode = path.stat().st_mode
    path.chmod(mode | 0o400)  # root reads anyway; a non-root run needs the bit for the unreadable case
    try:
        return path.read_bytes()
    finally:
        path.chmod(mode)


def assert_one_line_error(code: int, err: str, needles: tuple[str, ...]) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    rows = [row for row in err.replace("\r", "\n").splitlines() if row.strip()]
    assert rows and rows[-1].startswith("loralab: error: "), err
    for row in rows[:-1]:  # what may come before a late error: log lines and progress bars
        assert (row.startswith("loralab: ") and not row.startswith("loralab: error")) or "|" in row, err
    for needle in needles:
        assert needle in rows[-1], rows[-1]


def call_main(argv: list[str]) -> int:
    """loralab.cli.main's exit code; argparse's own errors leave by SystemExit, as in a real process."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def run_process(argv: list[str], unprivileged: bool = False, timeout: int = 180) -> tuple[int, str]:
    """`python -m loralab argv`: its exit code and stderr. `unprivileged`: as root, without the capabilities
    that let root read and write files whatever their permissions say (so that chmod means what it says)."""
    command = [sys.executable, "-m", "loralab", *argv]
    if unprivileged and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip(
                "running as root without setpriv: cannot make a file unreadable or unwritable for root"
            )
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *command]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    return done.returncode, done.stderr


TMPFS_HELPER = r"""
import json, os, subprocess, sys
from pathlib import Path

disk, mode, argv = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
(disk / "keep.txt").write_text("mine")
if mode == "full":
    handle = open(disk / "ballast", "wb", buffering=0)
    try:
        while True:
            handle.write(b"\0" * 4096)
    except OSError:
        handle.close()
else:
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
def state():
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()[:16].hex()) for p in disk.iterdir()}
before = state()
done = subprocess.run([sys.executable, "-m", "loralab", *argv], capture_output=True, text=True)
print(json.dumps({"code": done.returncode, "err": done.stderr, "same": state() == before}))
"""


def run_in_tmpfs(tmp: Path, mode: str, argv: list[str]) -> tuple[int, str]:
    """argv in a private mount namespace where tmp / "disk" is a 256 KiB tmpfs, filled up or made read-only."""
    disk = tmp / "disk"
    script = 'mount -t tmpfs -o size=256k loralab-test "$1" && shift && exec "$@"'
    command = ["unshare", "-m", "sh", "-c", script, "sh", str(disk), sys.executable, "-c", TMPFS_HELPER,
               str(disk), mode, *argv]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    if done.returncode != 0 and not done.stdout.strip():
        assert "Traceback" not in done.stderr, done.stderr  # the helper itself failed
        pytest.skip(f"cannot mount a private tmpfs here ({done.stderr.strip()[-200:]})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["same"], "files on the full / read-only disk changed"
    return result["code"], result["err"]


# ------------------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_bad_input(case: Case, env: Env, capsys) -> None:
    if case.runner.startswith("tmpfs"):
        (env.tmp / "disk").mkdir()
    argv = case.build(env)
    before = snapshot(env.tmp)
    if case.runner == "inprocess":
        code = call_main(argv)
        err = capsys.readouterr().err
    elif case.runner == "process":
        code, err = run_process(argv)
    elif case.runner == "unprivileged":
        code, err = run_process(argv, unprivileged=True)
    else:
        code, err = run_in_tmpfs(env.tmp, case.runner.removeprefix("tmpfs-"), argv)
        before = {k: v for k, v in before.items() if not k.startswith("disk")}
    assert_one_line_error(code, err, case.needles)
    after = snapshot(env.tmp)
    if case.runner.startswith("tmpfs"):
        after = {k: v for k, v in after.items() if not k.startswith("disk")}
    if case.starts_run:  # what the run wrote before the disk filled up is complete; temp files are gone
        new = sorted(set(after) - set(before))
        assert not [name for name in new if name.endswith(".tmp") or "write-test" in name], new
        assert "out/adapter/adapter_model.safetensors" not in new
        before = {name: value for name, value in before.items() if value[0] != "dir"}  # folders gained files
        after = {name: value for name, value in after.items() if name in before}
    assert after == before, sorted(set(after.items()) ^ set(before.items()))


def test_the_table_covers_every_kind_of_input() -> None:
    kinds = {case.id.split("-")[0] for case in CASES}
    assert {"config", "flag", "data", "model", "adapter", "run"} <= kinds
    assert len(CASES) >= 30 and len({case.id for case in CASES}) == len(CASES)


# ------------------------------------------------------------------------------------------- handled inputs


def test_texts_far_longer_than_max_length_are_cut_and_the_run_works(env: Env, capsys) -> None:
    """Not an error: a review of 20,000 words is cut at its end to max_length (the label is never cut)."""
    huge = {"text": "a long and winding review of a film " * 3000, "label": 0}
    argv = data(env, lines(GOOD_ROW, huge, {"text": "dull", "label": 0}, huge))
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "train: 2 of 4 examples reach max_length = 32 tokens; longer ones were cut" in err
    summary = json.loads((env.tmp / "out" / "summary.json").read_text())
    assert summary["train_examples"] == 4 and summary["steps"] == 1


# ------------------------------------------------------------------------------------------- trust_remote_code


def test_remote_code_never_runs_without_the_flag(env: Env, capsys) -> None:
    argv = remote_code_folder(env)
    assert main(argv) == 2
    assert "--trust_remote_code=true" in capsys.readouterr().err
    assert not (env.tmp / "remote_code_ran").exists()


def test_remote_code_runs_with_the_flag(env: Env) -> None:
    """The opt-in reaches transformers: the folder's code is imported (and the model it defines works)."""
    argv = remote_code_folder(env)
    env.monkeypatch.setenv("HF_MODULES_CACHE", str(env.tmp / "hf_modules"))  # not the user's cache
    code, err = run_process([*argv, "--trust_remote_code=true"])
    assert (env.tmp / "remote_code_ran").read_text() == "imported"
    assert code == 0, err


def test_trust_remote_code_is_off_by_default() -> None:
    from loralab.config import RunConfig, load_config

    assert RunConfig().trust_remote_code is False
    assert load_config(None, ["--trust_remote_code=true"]).trust_remote_code is True

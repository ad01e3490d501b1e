"""Summarization data: cnn_dailymail (article -> highlights) and xsum (document -> one sentence), as rows
{"document", "summary", "id"}.

Sources (data.sources' chain), in order: an explicit path; $LORALAB_DATA_DIR/<name>/{split}.jsonl (a full copy, already split);
$LORALAB_DATA_DIR/summarization_frank_cnndm_xsum/<name>_test_sample.jsonl (the FRANK sample); the Hugging Face
hub (cnn_dailymail config 3.0.0, EdinburghNLP/xsum), which has real train/validation/test splits.

The FRANK sample is tiny (250 CNN/DM and 251 XSum articles) and every row comes from the upstream *test* split,
so offline there is no real training data. Its splits are derived: rows FRANK uses for validation form the
validation split; the other rows (FRANK test, and 2 XSum rows without a FRANK split) are divided 60/40 into train
and test by a hash of the document. Scores on it are smoke tests, not comparable with published numbers.
Text is kept as the source has it (PTB-tokenized CNN/DM highlights joined by spaces; lowercased XSum summaries
with ``...'' quote tokens), except for one escaping artifact: a backslash before an apostrophe in XSum
summaries becomes a plain apostrophe. clean_text() gives the normalised form for comparing such texts.
"""

from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from loralab.data.sources import Files, Loaded, Read, Sources, files_location, load_rows
from loralab.data.splits import explicit_files, hash_split
from loralab.data.tables import read_table
from loralab.errors import UserError

FRANK_FOLDER = "summarization_frank_cnndm_xsum"
FRANK_REST_FRACTIONS = (0.6, 0.0, 0.4)  # FRANK test + unassigned rows -> train / (none) / test
GENERIC_COLUMNS = ("document", "summary")
FRANK_NOTE = (
    "the FRANK sample: a tiny smoke-test sample, all from the upstream test split, no real training "
    "data; FRANK validation -> validation, rest 60/40 -> train/test"
)


@dataclass(frozen=True)
class Corpus:
    name: str
    columns: tuple[str, str]  # (document, summary) column names in its files and on the hub
    sample: str  # file name in FRANK_FOLDER
    hub: tuple[str, str | None]  # (dataset id, config)


CORPORA = {
    "cnn_dailymail": Corpus(
        "cnn_dailymail",
        ("article", "highlights"),
        "cnn_dailymail_test_sample.jsonl",
        ("cnn_dailymail", "3.0.0"),
    ),
    "xsum": Corpus("xsum", ("document", "summary"), "xsum_test_sample.jsonl", ("EdinburghNLP/xsum", None)),
}


def clean_text(text: str) -> str:
    """Lowercase, every punctuation character replaced by a space, whitespace collapsed (for comparing texts).

    "Locke 's `gold digger'" and "locke's gold digger" both become "locke s gold digger".
    """
    chars = [
        " " if ch in string.punctuation or unicodedata.category(ch).startswith("P") else ch
        for ch in text.lower()
    ]
    return " ".join("".join(chars).split())


def load_cnn_dailymail(split: str, path: str | Path | None = None) -> Loaded:
    """`split` of CNN/DailyMail as rows {"document": article, "summary": highlights, "id"}, and where from."""
    return load_summarization("cnn_dailymail", split, path)


def load_xsum(split: str, path: str | Path | None = None) -> Loaded:
    """`split` of XSum as rows {"document", "summary", "id"}, and where they came from."""
    return load_summarization("xsum", split, path)


def load_summarization(name: str, split: str, path: str | Path | None = None) -> Loaded:
    """`split` of corpus `name` (cnn_dailymail or xsum) as rows {"document", "summary", "id"}, and where from."""
    if name not in CORPORA:
        raise UserError(f"unknown summarization dataset {name!r}; use one of {', '.join(CORPORA)}")
    corpus = CORPORA[name]
    sources = Sources(
        name,
        files_at=partial(_files_at, corpus),
        files_in=partial(_files_in_data_dir, corpus),
        read=partial(_read, corpus),
        wanted=f"{FRANK_FOLDER}/{corpus.sample}",
        hub=partial(_hub_rows, corpus),
        hub_id=corpus.hub[0],
        hub_config=corpus.hub[1],
    )
    return load_rows(sources, split, path)


def _files_at(corpus: Corpus, path: str | Path, split: str) -> Files:
    folder = Path(path).expanduser()
    if folder.is_dir() and (folder / corpus.sample).is_file():  # the FRANK folder itself
        return [folder / corpus.sample], False
    return explicit_files(path, split)


def _files_in_data_dir(corpus: Corpus, root: Path, split: str) -> Files | str:
    full = root / corpus.name / f"{split}.jsonl"
    sample = root / FRANK_FOLDER / corpus.sample
    if full.is_file():
        return [full], True
    if sample.is_file():
        return [sample], False
    return f"neither {full} nor {sample} found"


def _read(corpus: Corpus, files: list[Path], split: str, presplit: bool) -> Read:
    rows: list[dict] = []
    for file in files:
        rows.extend(_summary_rows(corpus, file, read_table(file, [])))
    if presplit:
        return [_without_frank(row) for row in rows], None, ""
    if all("frank_split" in row for row in rows):
        chosen, note = frank_splits(rows)[split], FRANK_NOTE
    else:
        chosen = hash_split(rows, lambda row: [row["document"]], corpus.name)[split]
        note = "own 80/10/10 hash split"
    if not chosen:
        raise UserError(
            f"{corpus.name}/{split} from {files_location(files)} is empty ({len(rows)} rows in all); "
            "use a larger data file"
        )
    return [_without_frank(row) for row in chosen], len(rows), note


def _without_frank(row: dict) -> dict:
    return {key: value for key, value in row.items() if key != "frank_split"}


def _summary_rows(corpus: Corpus, path: Path, records: list[dict]) -> list[dict]:
    """Rows {"document", "summary", "id"} (+ "frank_split" when the file has it) from the corpus' own column
    names or from document/summary."""
    if not records:
        raise UserError(f"{path} is empty; it has no data rows")
    present = set(records[0])
    columns = next((pair for pair in (corpus.columns, GENERIC_COLUMNS) if set(pair) <= present), None)
    if columns is None:
        wanted = " and ".join(repr(c) for c in corpus.columns)
        raise UserError(
            f"{path}: {corpus.name} needs columns {wanted} (or 'document' and 'summary'); "
            f"columns present: {', '.join(repr(str(c)) for c in sorted(present, key=str)) or 'none'}; rename them"
        )
    rows = []
    for number, record in enumerate(records, 1):
        document, summary = record.get(columns[0]), record.get(columns[1])
        if not (
            isinstance(document, str) and isinstance(summary, str) and document.strip() and summary.strip()
        ):
            raise UserError(
                f"{path}, row {number}: {columns[0]} and {columns[1]} must be non-empty text; fix that row"
            )
        if corpus.name == "xsum":
            summary = summary.replace("\\'", "'")
        row = {"document": document, "summary": summary, "id": str(record.get("id", number))}
        if "frank_split" in record:
            row["frank_split"] = record["frank_split"]
        rows.append(row)
    return rows


def frank_splits(rows: list[dict]) -> dict[str, list[dict]]:
    """FRANK "validation" rows -> validation; all other rows 60/40 -> train/test by a hash of the document."""
    validation = [row for row in rows if row.get("frank_split") == "validation"]
    rest = [row for row in rows if row.get("frank_split") != "validation"]
    parts = hash_split(rest, lambda row: [row["document"]], "frank", FRANK_REST_FRACTIONS)
    return {"train": parts["train"], "validation": validation, "test": parts["test"]}


def _hub_rows(corpus: Corpus, split: str) -> Read:
    # imported here: datasets takes seconds to import and only the hub step needs it (`loralab --help`
    # and runs on local data stay fast)
    import datasets

    hub_id, config = corpus.hub
    dataset = datasets.load_dataset(hub_id, config, split=split)
    document, summary = corpus.columns
    rows = [
        {"document": record[document], "summary": record[summary], "id": str(record.get("id", i))}
        for i, record in enumerate(dataset, 1)
    ]
    return rows, None, ""

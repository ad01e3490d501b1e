"""Tokenization, loss masks, batching, the answer-only loss, and the accuracy function."""

import pytest
import torch

import tiny_models
from loralab.data.encoding import IGNORE, Encoded, batch_order, collate, encode_example, random_subset
from loralab.evaluation.loss import answer_loss_sum
from loralab.evaluation.metrics import classification_metrics, match_label


class CharTokenizer:
    """A tiny stand-in with the two calls data.py makes: one id per character, BOS first."""

    eos_token_id = 1
    bos = 2

    def __call__(self, text, add_special_tokens=True, verbose=True):
        ids = [3 + (ord(c) % 90) for c in text]
        return type("Out", (), {"input_ids": ([self.bos] if add_special_tokens else []) + ids})()


def test_loss_mask_covers_only_the_answer():
    tok = CharTokenizer()
    example = encode_example(tok, "Review: {text}\nSentiment:", "good", " positive", max_length=64)
    assert example.n_prompt == 1 + len("Review: good\nSentiment:")
    assert example.input_ids[-1] == tok.eos_token_id
    batch = collate([example, encode_example(tok, "R: {text}\nS:", "x", " negative", 64)], pad_id=0)
    labels, ids = batch["labels"], batch["input_ids"]
    for row, ex in enumerate([example, encode_example(tok, "R: {text}\nS:", "x", " negative", 64)]):
        targets = labels[row][labels[row] != IGNORE].tolist()
        assert targets == ex.input_ids[ex.n_prompt :]  # answer + EOS, nothing of the prompt
        assert len(targets) == len(" positive") + 1 if row == 0 else len(" negative") + 1
    # left padding: sequences end in the last column; position ids start at 0 on the first real token
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][:, -1].all()
    first_real = int((batch["attention_mask"][1] == 0).sum())
    assert batch["position_ids"][1, first_real] == 0
    assert ids[1, :first_real].eq(0).all()


def test_truncation_keeps_the_answer():
    tok = CharTokenizer()
    example = encode_example(tok, "{text}\nSentiment:", "x" * 100, " negative", max_length=30)
    assert len(example.input_ids) == 30
    assert example.input_ids[example.n_prompt :] == tok(" negative", add_special_tokens=False).input_ids + [1]
    assert example.input_ids[: example.n_prompt][-len("Sentiment:") :] == tok("Sentiment:", False).input_ids


def test_random_subset_is_seeded_and_not_the_first_n():
    rows = list(range(1000))
    a, b = random_subset(rows, 100, seed=3), random_subset(rows, 100, seed=3)
    assert a == b and len(set(a)) == 100
    assert a != rows[:100] and max(a) > 500
    assert random_subset(rows, 0, seed=1) == rows


def test_batch_order_covers_everything_once_and_groups_lengths():
    lengths = [((i * 37) % 50) + 1 for i in range(400)]
    batches = batch_order(lengths, 16, seed=0, group_by_length=True)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(400))
    assert batch_order(lengths, 16, seed=0, group_by_length=True) == batches
    assert batch_order(lengths, 16, seed=1, group_by_length=True) != batches
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    plain = batch_order(lengths, 16, seed=0, group_by_length=False)
    assert padded < sum(len(b) * max(lengths[i] for i in b) for b in plain)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_answer_loss_equals_full_logits_loss(arch):
    model = tiny_models.make(arch)
    examples = [Encoded([5, 6, 7, 8, 9, 10, 1], 5), Encoded([11, 12, 13, 14, 1], 3), Encoded([20, 21, 1], 2)]
    batch = collate(examples, pad_id=0)
    loss_sum, n = answer_loss_sum(model, batch)
    assert n == 2 + 2 + 1
    # reference: each example alone, unpadded, full logits
    expected = 0.0
    for ex in examples:
        ids = torch.tensor([ex.input_ids])
        logits = model(input_ids=ids).logits[0, :-1]
        targets = torch.tensor(ex.input_ids[1:])
        mask = torch.arange(1, len(ex.input_ids)) >= ex.n_prompt
        expected += torch.nn.functional.cross_entropy(logits[mask], targets[mask], reduction="sum").item()
    assert loss_sum.item() == pytest.approx(expected, rel=1e-4)


def test_match_label_prefix_rules():
    words = ["negative", "positive"]
    assert match_label(" Positive.", words) == 1
    assert match_label("\n negative", words) == 0
    assert match_label("neutral", words) is None
    assert match_label("The review is positive", words) is None  # must START with the label
    assert match_label("", words) is None


def test_classification_metrics_counts_garbage_as_wrong():
    words = ["negative", "positive"]
    expected = [1, 1, 0, 0, 1]
    predicted = [1, None, 0, 1, 1]
    m = classification_metrics(expected, predicted, words)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["invalid_rate"] == pytest.approx(1 / 5)
    pos = m["per_class"]["positive"]
    assert pos["precision"] == pytest.approx(2 / 3) and pos["recall"] == pytest.approx(2 / 3)
    neg = m["per_class"]["negative"]
    assert neg["precision"] == pytest.approx(1.0) and neg["recall"] == pytest.approx(1 / 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)

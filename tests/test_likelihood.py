import random

import pytest
import torch

import tiny_models
from loralab.errors import UserError
from loralab.evaluation.likelihood import pick_choices, score_choices

PAD = {"llama": 1, "gpt2": 0}


def brute_force(model, prompts, choices) -> torch.Tensor:
    """Each prompt + choice alone (no padding, default positions), its full-sequence log-softmax summed over the
    choice's tokens."""
    scores = torch.empty(len(prompts), len(choices))
    with torch.no_grad():
        for p, prompt in enumerate(prompts):
            for c, choice in enumerate(choices):
                ids = torch.tensor([prompt + choice])
                log_probs = model(input_ids=ids).logits[0].float().log_softmax(dim=-1)
                scores[p, c] = sum(log_probs[len(prompt) + j - 1, token] for j, token in enumerate(choice))
    return scores


def random_prompts(seed: int, lengths: list[int]) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(2, tiny_models.VOCAB) for _ in range(n)] for n in lengths]


PROMPTS = random_prompts(0, [5, 1, 9, 3, 12, 7, 2])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize(
    "choices",
    [[[5], [17], [40]], [[5], [17, 3], [40, 41, 42, 9]], [[60, 61], [62, 63]]],
    ids=["one-token", "mixed-lengths", "two-tokens"],
)
def test_scores_equal_one_prompt_at_a_time_without_padding(arch, choices):
    model = tiny_models.make(arch)
    expected = brute_force(model, PROMPTS, choices)
    for batch_size in (3, 64):  # batches of different lengths, left-padded; and all in one batch
        scores = score_choices(model, PROMPTS, choices, PAD[arch], "cpu", batch_size)
        assert scores.shape == (len(PROMPTS), len(choices)) and scores.dtype == torch.float32
        torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)
    picked = pick_choices(model, PROMPTS, choices, PAD[arch], "cpu", 3)
    assert picked == expected.argmax(dim=1).tolist()


def test_forward_passes_one_per_batch_of_prompts_or_two_per_prompt_and_batch_of_choices():
    model = tiny_models.make("llama")
    calls = []
    handle = model.register_forward_hook(
        lambda module, args, kwargs, out: calls.append(kwargs), with_kwargs=True
    )
    try:
        score_choices(model, PROMPTS, [[5], [17], [40], [41]], 1, "cpu", 3)
        assert len(calls) == 3  # 7 prompts in batches of 3, whatever the number of choices
        calls.clear()
        score_choices(model, PROMPTS, [[5], [17, 3]], 1, "cpu", 4)
        assert (
            len(calls) == 14
        )  # each prompt once (its keys and values cached), then its two choices together
        after = [kwargs for kwargs in calls if "cache" in kwargs or "past_key_values" in kwargs]
        assert len(after) == 7 and all("position_ids" in k and "attention_mask" in k for k in after)
        calls.clear()
        score_choices(model, PROMPTS, [[5], [17, 3], [8, 9]], 1, "cpu", 2)
        assert len(calls) == 28  # two batches of choices per prompt, each after a pass over the prompt
    finally:
        handle.remove()


def test_the_model_is_scored_in_eval_mode_and_left_in_its_mode():
    model = tiny_models.make("gpt2")
    model.train()
    first = score_choices(model, PROMPTS, [[5], [6]], 0, "cpu", 4)
    assert model.training  # put back
    torch.testing.assert_close(score_choices(model, PROMPTS, [[5], [6]], 0, "cpu", 4), first, atol=0, rtol=0)


def test_bad_inputs():
    model = tiny_models.make("llama")
    with pytest.raises(ValueError, match="every choice"):
        score_choices(model, PROMPTS, [[5], []], 1, "cpu", 4)
    with pytest.raises(ValueError, match="every prompt"):
        score_choices(model, [[3], []], [[5]], 1, "cpu", 4)
    with pytest.raises(ValueError, match="batch_size"):
        score_choices(model, PROMPTS, [[5]], 1, "cpu", 0)
    with pytest.raises(UserError, match="causal language models only"):
        score_choices(tiny_models.make("t5"), PROMPTS, [[5]], 0, "cpu", 4)


def test_smollm2_prefers_the_right_sentiment_word():
    from loralab.models.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("smollm2-135m")
    prompts = [
        tokenizer("Review: a wonderful, moving film\nSentiment:").input_ids,
        tokenizer("Review: a dull, tedious and boring mess\nSentiment:").input_ids,
    ]
    words = [tokenizer(w, add_special_tokens=False).input_ids for w in (" positive", " negative")]
    scores = score_choices(model, prompts, words, tokenizer.pad_token_id, "cpu", 8)
    assert scores[0, 0] > scores[0, 1]
    assert pick_choices(model, prompts, words, tokenizer.pad_token_id, "cpu", 8) == [0, 1]
    # the same words as two-token choices after a shared token (the sequence path) keep the same order
    longer = [tokenizer(w, add_special_tokens=False).input_ids for w in (" positive.", " negative.")]
    assert all(len(ids) == 2 for ids in longer)
    assert pick_choices(model, prompts, longer, tokenizer.pad_token_id, "cpu", 8) == [0, 1]

"""Batched pseudo-perplexity equals its one-mask-per-forward definition, and scores every token once."""

from __future__ import annotations

import pytest
import torch
from conftest import english_lines, target_docs


@pytest.mark.parametrize("within_word", [False, True])
def test_batched_pseudo_likelihood_equals_the_reference(tiny_encoder, within_word):
    from langadapt.models.loading import load_model, load_tokenizer
    from langadapt.scoring.pppl import pseudo_bits_per_byte, pseudo_log_likelihood_reference

    model, tok = load_model(str(tiny_encoder)), load_tokenizer(str(tiny_encoder))
    texts = [target_docs(seed=2)[0]["text"], english_lines(1, seed=4)[0], "the man"]
    # windows of 24 tokens with 8 scored each: long texts need several windows
    batched = pseudo_bits_per_byte(model, tok, texts, 24, 8, within_word=within_word, copies_per_batch=16)
    reference = pseudo_log_likelihood_reference(model, tok, texts, 24, 8, within_word=within_word)
    assert (
        batched["tokens"]
        == reference["tokens"]
        == len([i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"]])
    )  # every content token once, no special token
    assert batched["metric"] == "pseudo_bits_per_byte"
    assert abs(batched["bits_per_byte"] - reference["bits_per_byte"]) <= 1e-4 * reference["bits_per_byte"]


def test_windows_score_each_token_once_with_context_on_both_sides():
    from langadapt.scoring.pppl import windows

    content = list(range(100, 150))
    starts = [i % 3 == 0 for i in range(50)]
    ws = windows(content, starts, [0], [2], size=20, stride=6, within_word=True)
    scored = [w.ids[p] for w in ws for p in w.scored]
    assert scored == content
    assert all(len(w.ids) <= 20 and w.ids[0] == 0 and w.ids[-1] == 2 for w in ws)
    middle = ws[len(ws) // 2]
    assert middle.scored.start > 1 and middle.scored.stop < len(middle.ids) - 1  # context left and right
    # within-word: scoring the first piece of a 3-piece word hides the two later pieces as well
    first = ws[0]
    assert first.masks[0] == [1, 2, 3] and first.masks[1] == [2, 3] and first.masks[2] == [3]


def test_within_word_correction_raises_the_score_of_split_words(tiny_encoder):
    from langadapt.models.loading import load_model, load_tokenizer
    from langadapt.scoring.pppl import pseudo_bits_per_byte

    model, tok = load_model(str(tiny_encoder)), load_tokenizer(str(tiny_encoder))
    # at its initial scale (std 0.02) the tiny model barely reads its context, so hiding more of
    # it moved the score by about 1e-7, at float32's resolution: sometimes not at all. Larger
    # weights make the prediction at a mask depend on what is hidden around it.
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, 0.3)
    texts = [target_docs(seed=2)[1]["text"]]
    plain = pseudo_bits_per_byte(model, tok, texts, 64, 32, within_word=False)
    corrected = pseudo_bits_per_byte(model, tok, texts, 64, 32, within_word=True)
    assert corrected["bits_per_byte"] != plain["bits_per_byte"]

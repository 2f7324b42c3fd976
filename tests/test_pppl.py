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


class _Reached(Exception):
    pass


@pytest.mark.parametrize("path", ["batched", "reference"])
def test_encoder_scoring_moves_its_tensors_to_the_models_device(tiny_encoder, path, monkeypatch):
    """On an accelerator the model sits on the device: everything it is given must be there too.

    The model here reports the 'meta' device; whatever reaches it (or the batched head helper)
    is recorded and the scoring stops there."""
    import langadapt.scoring.pppl as pppl
    from langadapt.models.loading import load_model, load_tokenizer

    model, tok = load_model(str(tiny_encoder)), load_tokenizer(str(tiny_encoder))
    model.__class__ = type("OnMeta", (type(model),), {"device": property(lambda self: torch.device("meta"))})
    seen: list[str] = []

    def record(tensors) -> None:  # type: ignore[no-untyped-def]
        seen.extend(t.device.type for t in tensors if isinstance(t, torch.Tensor))
        raise _Reached

    def spy_logits_at(model, input_ids, attention_mask, select, position_ids=None):  # type: ignore[no-untyped-def]
        record([input_ids, attention_mask, select, position_ids])

    monkeypatch.setattr(pppl, "mlm_logits_at", spy_logits_at)
    model.register_forward_pre_hook(lambda m, args, kwargs: record([*args, *kwargs.values()]), with_kwargs=True)
    # texts of different lengths share a batch: the padding mask is passed as well
    texts = [target_docs(seed=2)[0]["text"], "the man"]
    score = pppl.pseudo_bits_per_byte if path == "batched" else pppl.pseudo_log_likelihood_reference
    with pytest.raises(_Reached):
        score(model, tok, texts, 24, 8)
    assert len(seen) >= (3 if path == "batched" else 1) and set(seen) == {"meta"}, seen

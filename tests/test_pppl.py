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


def test_the_head_runs_on_the_scored_position_of_each_copy_only(tiny_encoder):
    """The largest output of the masked-LM head is one row per masked copy of a batch, never one per position."""
    from langadapt.models.encoder import _head_entry
    from langadapt.models.loading import load_model, load_tokenizer
    from langadapt.scoring.pppl import pseudo_bits_per_byte

    model, tok = load_model(str(tiny_encoder)), load_tokenizer(str(tiny_encoder))
    shapes = []
    _head_entry(model).register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape)))
    pseudo_bits_per_byte(model, tok, [target_docs(seed=2)[0]["text"]], 24, 8, copies_per_batch=16)
    vocab = model.config.vocab_size
    assert shapes and all(len(s) == 2 and s[0] <= 16 and s[1] == vocab for s in shapes), shapes


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


def _next_token_reader(tok, texts):  # type: ignore[no-untyped-def]
    """A masked LM that predicts a masked token from the token to its right alone (bigram counts of
    `texts`), and from unigram counts when that token is hidden too: within a word split into
    pieces, the later pieces give the earlier ones away, as they do for a trained model."""
    from types import SimpleNamespace

    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    v = len(tok)
    counts = torch.full((v + 1, v), 0.1)  # row: the token to the right (v: none visible); column: the token
    for row in ids:
        for cur, nxt in zip(row, row[1:] + [v]):
            counts[nxt, cur] += 1
            counts[v, cur] += 1
    table = (counts / counts.sum(dim=1, keepdim=True)).log()

    class NextTokenReader(torch.nn.Module):
        base_model_prefix = "body"
        config = SimpleNamespace(model_type="bert", max_position_embeddings=512)

        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Identity()
            self.head = torch.nn.Linear(v + 1, v, bias=False)
            self.head.weight.data = table.T.contiguous()

        @property
        def device(self) -> torch.device:
            return torch.device("cpu")

        def forward(self, input_ids, attention_mask=None):  # type: ignore[no-untyped-def]
            right = torch.full_like(input_ids, v)
            right[:, :-1] = input_ids[:, 1:]
            right[(right == tok.mask_token_id) | torch.isin(right, torch.tensor(tok.all_special_ids))] = v
            hidden = self.body(torch.nn.functional.one_hot(right, v + 1).float())
            return SimpleNamespace(logits=self.head(hidden))

    return NextTokenReader()


def test_within_word_correction_raises_the_score_of_split_words(tiny_encoder):
    """Hiding the later pieces of a word when scoring a piece removes what gave it away: pseudo bits
    per byte go up, by the split words alone (a text of one-piece words scores the same)."""
    from langadapt.models.loading import load_tokenizer
    from langadapt.scoring.pppl import pseudo_bits_per_byte, pseudo_log_likelihood_reference

    tok = load_tokenizer(str(tiny_encoder))
    split = [target_docs(seed=2)[1]["text"]]
    pieces = tok(split[0], add_special_tokens=False)["input_ids"]
    words = split[0].split()
    assert len(pieces) > 1.5 * len(words)  # most words here are split into pieces
    whole = [w for w in {w.strip(".").lower() for w in english_lines(40, seed=3)[0].split()} if len(w) > 1]
    whole = [" ".join(w for w in whole if len(tok(w, add_special_tokens=False)["input_ids"]) == 1)]
    assert len(whole[0].split()) >= 3  # words the tokenizer keeps whole
    model = _next_token_reader(tok, split + whole)
    for score in (pseudo_bits_per_byte, pseudo_log_likelihood_reference):
        plain = score(model, tok, split, 64, 32, within_word=False)["bits_per_byte"]
        corrected = score(model, tok, split, 64, 32, within_word=True)["bits_per_byte"]
        assert corrected > plain + 0.05, (plain, corrected)
        same_plain = score(model, tok, whole, 64, 32, within_word=False)["bits_per_byte"]
        same_corrected = score(model, tok, whole, 64, 32, within_word=True)["bits_per_byte"]
        assert same_corrected == pytest.approx(same_plain, rel=1e-6)


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

"""Words as the tokenizer itself splits them, for whole-word masking and within-word pseudo-likelihood.

Both read words through one helper (`models.encoder.WordBoundaries`), from ids alone (training
sees packed rows of ids); each family's tokenizer is built here, and its own `word_ids()`
(the pre-tokenizer's split of the text) is the reference.
"""

from __future__ import annotations

import pytest
from conftest import _encoder_tokenizer, english_lines, target_docs

# punctuation, digits, a contraction, double spaces, and letters the tiny vocabularies lack ('ɓ', 'ƙ')
CRAFTED = [
    "Mwana, wanga (2024) ali ndi 3.5kg; it's ɓaƙa mwana-wanga!",
    "Hello, world123 it's 4.5 ɓaƙb mwana",
    'He said: "Ndi 12,000 mwana."  Two  spaces, and xƙƙy.',
]
# the tokenizers built here also learn the punctuation and digits above
PUNCTUATION = ['Mwana, wanga (2024) ali ndi 3.5kg; it\'s 12,000 - "ndi" ! : . 0123456789'] * 5


def _sentencepiece_bpe(digits: bool = False):  # type: ignore[no-untyped-def]
    """A SentencePiece-style BPE (Metaspace '▁'); with `digits`, a pre-tokenizer that also splits each digit off."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    metaspace = pre_tokenizers.Metaspace()
    tk.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), metaspace]) if digits else metaspace
    )
    tk.decoder = decoders.Metaspace()
    tk.train_from_iterator(_texts(), trainers.BpeTrainer(vocab_size=300, special_tokens=specials))
    return _fast(PreTrainedTokenizerFast, tk)


def _end_of_word_bpe():  # type: ignore[no-untyped-def]
    """BPE whose word-final pieces end with '</w>', words split by the Whitespace pre-tokenizer.

    It learns every character of the test texts, word-final too: its <unk> carries no
    '</w>', so where a word ends at an unknown character is unknowable from ids alone.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.BPEDecoder(suffix="</w>")
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, end_of_word_suffix="</w>")
    tk.train_from_iterator(_texts() + [" ".join(sorted(set("".join(CRAFTED))))] * 3, trainer)
    return _fast(PreTrainedTokenizerFast, tk)


def _texts() -> list[str]:
    return english_lines(300, seed=3) + [d["text"] for d in target_docs(seed=9)[:5]] + PUNCTUATION


def _fast(cls, tk):  # type: ignore[no-untyped-def]
    return cls(
        tokenizer_object=tk,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


FAMILIES = {
    "sentencepiece": lambda: _encoder_tokenizer("sentencepiece"),  # Unigram, as XLM-R
    "sentencepiece-bpe": _sentencepiece_bpe,
    "sentencepiece-digits": lambda: _sentencepiece_bpe(digits=True),
    "bytelevel": lambda: _encoder_tokenizer("bytelevel"),  # RoBERTa
    "wordpiece": lambda: _encoder_tokenizer("wordpiece"),  # BERT
    "end-of-word": _end_of_word_bpe,
}


def _tokenizer_starts(tok, text: str) -> tuple[list[int], list[bool]]:  # type: ignore[no-untyped-def]
    """(ids, word starts) as the tokenizer's own encoding reports words (`word_ids()`)."""
    enc = tok(text, add_special_tokens=False)
    words = enc.word_ids()
    return enc["input_ids"], [i == 0 or words[i] != words[i - 1] for i in range(len(words))]


def _plan(tok):  # type: ignore[no-untyped-def]
    from langadapt.train.config import TrainConfig
    from langadapt.train.mlm import MaskingPlan

    return MaskingPlan.from_tokenizer(tok, TrainConfig(objective="mlm"))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_whole_word_masking_takes_words_as_the_tokenizer_splits_them(family):
    import torch

    tok = FAMILIES[family]()
    plan = _plan(tok)
    texts = CRAFTED + [d["text"] for d in target_docs(seed=21)[:3]] + english_lines(3, seed=8)
    for text in texts:
        ids, expected = _tokenizer_starts(tok, text)
        words, special = plan.word_ids(torch.tensor([ids]))
        starts = [True] + (words[0, 1:] != words[0, :-1]).tolist()
        assert starts == expected, (family, text, tok.convert_ids_to_tokens(ids))
        assert not special.any() or tok.unk_token_id in ids  # only <unk> is never masked among these


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_within_word_pseudo_likelihood_hides_the_rest_of_the_tokenizers_word(family):
    from langadapt.scoring.pppl import _document_windows

    tok = FAMILIES[family]()
    for text in CRAFTED:
        ids, starts = _tokenizer_starts(tok, text)
        (window,) = _document_windows(tok, [text], size=512, stride=512, within_word=True)
        offset = window.scored.start
        for p, masked in enumerate(window.masks):
            end = next((q for q in range(p + 1, len(ids)) if starts[q]), len(ids))
            assert masked == [q + offset for q in range(p, end)], (family, text, p)


def test_unk_inside_a_word_belongs_to_it():
    """XLM-R writes characters it lacks as <unk> inside the word: the word goes on through it."""
    import torch

    from langadapt.scoring.pppl import _document_windows

    tok = _encoder_tokenizer("sentencepiece")
    text = "ŵa⁂b mwana"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[:4] == ["▁", "<unk>", "a", "<unk>"] and pieces[4].startswith("▁")  # the case under test
    words, _ = _plan(tok).word_ids(torch.tensor([ids]))
    assert words[0].tolist() == [0, 0, 0, 0] + [1] * (len(ids) - 4)
    (window,) = _document_windows(tok, [text], size=64, stride=64, within_word=True)
    first = window.scored.start
    assert window.masks[0] == [first, first + 1, first + 2, first + 3]  # scoring '▁' hides the whole word


def test_special_tokens_are_words_of_their_own_and_a_word_starts_after_each():
    import torch

    tok = _encoder_tokenizer("bytelevel")
    body = tok("mwana wanga", add_special_tokens=False)["input_ids"]
    ids = [tok.bos_token_id] + body + [tok.eos_token_id, tok.bos_token_id] + body
    words, special = _plan(tok).word_ids(torch.tensor([ids]))
    n = len(body)
    starts = [True] + (words[0, 1:] != words[0, :-1]).tolist()
    alone = _tokenizer_starts(tok, "mwana wanga")[1]
    assert starts == [True] + alone + [True, True] + alone
    assert special[0].tolist() == [True] + [False] * n + [True, True] + [False] * n


def test_byte_level_pieces_of_one_character_stay_in_its_word():
    """Byte-level BPE splits a character it rarely saw into bytes; a word may begin with such a piece."""
    import torch

    from langadapt.models.encoder import _byte_level_bytes, _decodes

    tok = _encoder_tokenizer("bytelevel")
    for text in ["(ŵa⁂b", "x ⁂⁂y", "mwana,ŵ", "⁂,ɓ"]:
        ids, expected = _tokenizer_starts(tok, text)
        assert not all(_decodes(_byte_level_bytes(t)) for t in tok.convert_ids_to_tokens(ids))  # the case under test
        words, _ = _plan(tok).word_ids(torch.tensor([ids]))
        assert [True] + (words[0, 1:] != words[0, :-1]).tolist() == expected, text

"""Vocabulary methods on every tokenizer family, on tiny tokenizers trained here.

extend: every added token is produced on target text, and English the base handled
encodes exactly as before; replace: special tokens kept, shared tokens keep their rows;
trim: the trimmed model gives the full model's logits on text inside the kept vocabulary;
translit: romanised forms of a non-Latin vocabulary, with the old ids they come from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import english_lines, save_tiny_llama, target_docs, tiny_recipe_dict

from langadapt.corpus import flow as corpus
from langadapt.errors import ConfigError
from langadapt.recipe import Recipe
from langadapt.rundir import RunDir, read_json
from langadapt.tokenizer import flow as tokenizer

FAMILIES = ("bpe-bytelevel", "bpe-sentencepiece", "unigram", "wordpiece")
CYRILLIC = ["при", "вет", "мир", "да", "ко", "ни", "сло", "ва", "жи", "зн", "ро", "ша"]


def _texts() -> list[str]:
    return english_lines(300, seed=3) + [d["text"] for d in target_docs(seed=9)[:5]]


def family_tokenizer(family: str, texts: list[str] | None = None):  # type: ignore[no-untyped-def]
    """A tokenizer of one family (~300-400 tokens) with that family's usual special tokens and post-processor."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast, LlamaTokenizerFast, PreTrainedTokenizerFast, XLMRobertaTokenizerFast

    texts = texts or _texts()
    if family == "bpe-bytelevel":  # GPT-2 / Llama-3 / SmolLM
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        tk.train_from_iterator(
            texts,
            trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<s>"], initial_alphabet=alphabet),
        )
        return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="<|endoftext|>")
    if family == "bpe-sentencepiece":  # Llama-2 / Gemma: '▁' words, byte fallback for unknown characters
        tk = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tk.pre_tokenizer = pre_tokenizers.Metaspace()
        tk.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
        tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=350, special_tokens=["<unk>", "<s>", "</s>"]))
        state = json.loads(tk.to_str())
        vocab = state["model"]["vocab"]
        for b in range(256):
            vocab.setdefault(f"<0x{b:02X}>", len(vocab))
        tk = Tokenizer.from_str(json.dumps(state))
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        return LlamaTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if family == "unigram":  # XLM-R / mT5 / Glot500
        tk = Tokenizer(models.Unigram())
        tk.pre_tokenizer = pre_tokenizers.Metaspace()
        tk.decoder = decoders.Metaspace()
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tk.train_from_iterator(
            texts, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>")
        )
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
        return XLMRobertaTokenizerFast(tokenizer_object=tk)
    assert family == "wordpiece"  # BERT / mBERT / MiniLM
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tk.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tk.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return BertTokenizerFast(tokenizer_object=tk)


@pytest.fixture(scope="session")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Llama per tokenizer family (the model only matters for trim, which runs the init stage)."""
    root = tmp_path_factory.mktemp("family-models")
    return {f: save_tiny_llama(root / f, family_tokenizer(f)) for f in FAMILIES}


def _run(corpus_files, model: Path, tmp_path: Path, stages=(corpus, tokenizer), **sections):  # type: ignore[no-untyped-def]
    recipe = Recipe.from_dict(tiny_recipe_dict(corpus_files, model, tmp_path / "run", **sections))
    rd = RunDir(recipe.resolved_run_dir)
    for stage in stages:
        stage.run(recipe, rd)
    return recipe, rd


def _load(folder: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


# -- extend ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_extend_adds_used_tokens_and_leaves_english_alone(family, family_models, corpus_files, tmp_path):
    from langadapt.documents import read_texts

    _, rd = _run(corpus_files, family_models[family], tmp_path)
    base, new = _load(family_models[family]), _load(rd.path("tokenizer"))
    metrics = read_json(rd.path("tokenizer") / "metrics.json")
    assert metrics["family"] == family
    added = metrics["new_token_ids"]
    assert 0 < len(added) <= 40 and len(new) == len(base) + len(added)
    old = base.get_vocab()
    assert all(new.get_vocab()[t] == i for t, i in old.items())  # old ids never move
    # every added token is produced when encoding the target language
    produced = {i for ids in new(read_texts(rd, "nya", "train"), add_special_tokens=False)["input_ids"] for i in ids}
    assert set(added) <= produced, new.convert_ids_to_tokens(sorted(set(added) - produced))
    # English the base tokenised encodes exactly as before
    for line in english_lines(40, seed=5):
        assert new(line)["input_ids"] == base(line)["input_ids"], line
    nya = metrics["heldout"]["nya"]
    assert nya["adapted"]["fertility"] < nya["base"]["fertility"]
    eng = metrics["heldout"]["eng"]
    assert eng["adapted"]["tokens"] == eng["base"]["tokens"]
    if family != "wordpiece":  # WordPiece lowercases
        text = target_docs()[0]["text"]
        assert new.decode(new(text, add_special_tokens=False)["input_ids"]) == text


def test_extend_unigram_scores_let_new_pieces_win(family_models):
    from langadapt.tokenizer import unigram
    from langadapt.tokenizer.state import tokenizer_state

    base = _load(family_models["unigram"])
    state = tokenizer_state(base)
    target = tokenizer_state(base.train_new_from_iterator([d["text"] for d in target_docs()], vocab_size=300))
    cands, _ = unigram.candidates(state, target, 50)
    seg = unigram.segmentation_score(state)
    assert cands and all(c.data >= seg(c.token) + unigram.MARGIN for c in cands)
    assert all(c.token not in dict(state["model"]["vocab"]) for c in cands)


# -- replace -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_replace_trains_a_target_vocabulary_of_the_same_family(family, family_models, corpus_files, tmp_path):
    from langadapt.tokenizer.state import family_of, special_tokens, tokenizer_state

    _, rd = _run(corpus_files, family_models[family], tmp_path, tokenizer={"method": "replace"})
    base, new = _load(family_models[family]), _load(rd.path("tokenizer"))
    metrics = read_json(rd.path("tokenizer") / "metrics.json")
    assert family_of(tokenizer_state(new)) == family
    assert special_tokens(base) <= set(new.get_vocab())
    assert metrics["shared_tokens"] > 0 and metrics["added_tokens"] > 0
    nya = metrics["heldout"]["nya"]
    assert nya["adapted"]["fertility"] < nya["base"]["fertility"]
    # the post-processor points at the new ids of the special tokens
    ids = new("ndi")["input_ids"]
    specials = {new.convert_tokens_to_ids(t) for t in special_tokens(new)}
    assert any(i in specials for i in ids) == any(i in base.all_special_ids for i in base("ndi")["input_ids"])


def test_replace_keeps_rows_of_shared_tokens(family_models, corpus_files, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from langadapt.init import flow as init

    model_dir = family_models["bpe-bytelevel"]
    _, rd = _run(corpus_files, model_dir, tmp_path, (corpus, tokenizer, init), tokenizer={"method": "replace"})
    base, new = _load(model_dir), _load(rd.path("tokenizer"))
    old_rows = AutoModelForCausalLM.from_pretrained(model_dir).get_input_embeddings().weight
    new_rows = AutoModelForCausalLM.from_pretrained(rd.path("init")).get_input_embeddings().weight
    shared = [(i, base.get_vocab()[t]) for t, i in new.get_vocab().items() if t in base.get_vocab()]
    assert shared and new_rows.shape[0] == len(new)
    assert torch.equal(new_rows[[n for n, _ in shared]], old_rows[[o for _, o in shared]])


# -- trim --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_trimmed_model_gives_the_same_logits_inside_the_kept_vocabulary(family, family_models, corpus_files, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from langadapt.documents import read_texts
    from langadapt.init import flow as init

    model_dir = family_models[family]
    _, rd = _run(corpus_files, model_dir, tmp_path, (corpus, tokenizer, init), tokenizer={"method": "trim"})
    base, new = _load(model_dir), _load(rd.path("tokenizer"))
    metrics = read_json(rd.path("tokenizer") / "metrics.json")
    assert metrics["removed_tokens"] > 0 and len(new) < len(base)
    assert set(base.all_special_tokens) <= set(new.get_vocab())
    full = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    small = AutoModelForCausalLM.from_pretrained(rd.path("init")).eval()
    assert small.get_input_embeddings().weight.shape[0] == len(new)
    kept_old_ids = [base.get_vocab()[t] for t in new.convert_ids_to_tokens(list(range(len(new))))]
    for text in read_texts(rd, "nya", "train")[:3] + read_texts(rd, "eng", "train")[:3]:
        old_ids, new_ids = base(text)["input_ids"], new(text)["input_ids"]
        assert base.convert_ids_to_tokens(old_ids) == new.convert_ids_to_tokens(new_ids)
        with torch.no_grad():
            want = full(torch.tensor([old_ids])).logits[0][:, kept_old_ids]
            got = small(torch.tensor([new_ids])).logits[0]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_trim_that_would_drop_special_tokens_fails_at_validation(family_models, corpus_files, tmp_path):
    data = tiny_recipe_dict(
        corpus_files,
        family_models["unigram"],
        tmp_path / "run",
        tokenizer={"method": "trim", "trim_vocab_size": 3, "trim_languages": ["xyz"]},
    )
    with pytest.raises(ConfigError) as e:
        Recipe.from_dict(data)
    text = str(e.value)
    assert "would drop special tokens" in text and "<mask>" in text and "'xyz' is not a corpus language" in text


# -- translit ----------------------------------------------------------------------------


def _cyrillic_lines(n: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    words = ["".join(rng.choice(CYRILLIC) for _ in range(rng.randint(1, 3))) for _ in range(60)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 10))) for _ in range(n)]


@pytest.mark.parametrize("family", ["bpe-bytelevel", "unigram"])
def test_translit_adds_romanised_forms_with_their_sources(family, corpus_files, tmp_path):
    from langadapt.tokenizer.state import tokenizer_state
    from langadapt.tokenizer.translit import HINT_KEY, Spelling, romaniser

    base_tok = family_tokenizer(family, _cyrillic_lines(300, seed=1) + english_lines(100, seed=3))
    model_dir = save_tiny_llama(tmp_path / "cyrillic", base_tok)
    _, rd = _run(corpus_files, model_dir, tmp_path, tokenizer={"method": "translit", "translit_init": "mean"})
    base, new = _load(model_dir), _load(rd.path("tokenizer"))
    sources = read_json(rd.path("tokenizer") / "token_sources.json")
    assert sources.pop(HINT_KEY) == "mean" and len(sources) > 20
    old_vocab, new_vocab = base.get_vocab(), new.get_vocab()
    assert all(new_vocab[t] == i for t, i in old_vocab.items())
    spell, rom = Spelling(tokenizer_state(base)), romaniser()
    by_id = {i: t for t, i in old_vocab.items()}
    for token, ids in sources.items():
        assert token in new_vocab and token not in old_vocab
        for i in ids:  # each source romanises to the new token
            marker, text = spell.split(by_id[i])
            assert spell.join(marker, rom.romanize_string(text)) == token
    # romanised text now uses the new tokens, and Cyrillic text encodes as before
    cyr = _cyrillic_lines(20, seed=4)
    latin = [rom.romanize_string(line) for line in cyr]
    new_ids = {new_vocab[t] for t in sources}
    used = {i for ids in new(latin, add_special_tokens=False)["input_ids"] for i in ids}
    assert used & new_ids
    assert sum(len(x) for x in new(latin)["input_ids"]) < sum(len(x) for x in base(latin)["input_ids"])
    for line in cyr:
        assert new(line)["input_ids"] == base(line)["input_ids"]

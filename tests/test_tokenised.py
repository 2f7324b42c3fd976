"""The tokenised-corpus cache: the blocks of the lazy stream it replaced, byte for byte; a re-run or a
resumed run reads it without tokenising; a changed tokenizer or corpus never reads a stale entry."""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from conftest import english_lines, target_docs
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from langadapt.rundir import RunDir, read_json
from langadapt.train import data, loop, tokenised
from langadapt.train import flow as train
from langadapt.train.tokenised import TokenCache, tokenizer_fingerprint


@dataclass
class LazyStream:
    """The stream as it was before the cache: each document tokenised when it is drawn (the reference)."""

    texts: list[str]
    tok: Any
    sep_id: int
    seq_len: int
    seed: int
    epoch: int = 0
    next_doc: int = 0
    buffer: list[int] = field(default_factory=list)
    documents_started: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._shuffle()

    def _shuffle(self) -> None:
        self._order = list(range(len(self.texts)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(self._order)

    def next_block(self) -> list[int]:
        while len(self.buffer) < self.seq_len:
            if self.next_doc >= len(self._order):
                self.epoch += 1
                self.next_doc = 0
                self._shuffle()
            text = self.texts[self._order[self.next_doc]]
            self.next_doc += 1
            self.documents_started += 1
            self.buffer.extend([self.sep_id] + self.tok(text, add_special_tokens=False, verbose=False)["input_ids"])
        block, self.buffer = self.buffer[: self.seq_len], self.buffer[self.seq_len :]
        return block

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "next_doc": self.next_doc,
            "buffer": list(self.buffer),
            "documents_started": self.documents_started,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.epoch, self.next_doc = state["epoch"], state["next_doc"]
        self.buffer, self.documents_started = list(state["buffer"]), state["documents_started"]
        self._shuffle()


def _texts() -> list[str]:
    """Short and long documents, an empty one, and one longer than any block."""
    texts = [d["text"] for d in target_docs(n_groups=3, per_group=4)] + english_lines(12)
    return texts + ["", " ".join(english_lines(40, seed=5))]


class Spy:
    """Counts the texts a tokenizer is asked to encode."""

    def __init__(self, tok: Any) -> None:
        self.tok, self.texts = tok, 0
        self.vocab_files_names = tok.vocab_files_names

    def __call__(self, text: Any, **kwargs: Any) -> Any:
        self.texts += len(text) if isinstance(text, list) else 1
        return self.tok(text, **kwargs)

    def __len__(self) -> int:
        return len(self.tok)


@pytest.mark.parametrize("seq_len", [5, 16, 64])
def test_cached_stream_draws_the_lazy_streams_blocks_byte_for_byte(tiny_model, tmp_path, seq_len):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    texts, sep = _texts(), tok.eos_token_id
    source = tmp_path / "train.parquet"
    source.write_bytes(b"the corpus split")
    cache = TokenCache(tmp_path / "cache", tok, tokenizer_fingerprint(tiny_model, tok))
    docs = cache.documents("nya", "train", source, lambda: texts)
    assert isinstance(docs.tokens, np.memmap) and docs.tokens.dtype == np.uint16  # read back from the file
    old, new = LazyStream(texts, tok, sep, seq_len, seed=3), data.TokenStream(docs, tok, sep, seq_len, seed=3)
    steps = 2 * (docs.n_tokens + len(docs)) // seq_len + 3  # into a third epoch
    for step in range(steps):
        assert new.next_block().tolist() == old.next_block()
        assert new.state() == old.state()
        if step == steps // 2:  # a checkpoint of either resumes the other
            old_state, new_state = old.state(), new.state()
            new = data.TokenStream(docs, tok, sep, seq_len, seed=3)
            new.restore(old_state)
            old = LazyStream(texts, tok, sep, seq_len, seed=3)
            old.restore(new_state)
    assert new.epoch >= 2


def test_a_second_run_reads_the_cache_without_tokenising(tiny_model, tmp_path):
    tok = Spy(AutoTokenizer.from_pretrained(tiny_model))
    texts, key = _texts(), tokenizer_fingerprint(tiny_model, tok.tok)
    source = tmp_path / "train.parquet"
    source.write_bytes(b"the corpus split")
    built = TokenCache(tmp_path / "cache", tok, key).documents("nya", "train", source, lambda: texts)
    assert tok.texts == len(texts)  # each document tokenised once, in batches
    reference = [tok.tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert [built[i].tolist() for i in range(len(texts))] == reference

    def unread() -> list[str]:
        raise AssertionError("a cached split is not read again")

    again = TokenCache(tmp_path / "cache", tok, key).documents("nya", "train", source, unread)
    assert tok.texts == len(texts)  # not called again
    assert np.array_equal(again.tokens, built.tokens) and np.array_equal(again.offsets, built.offsets)
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(entries) == 1 and entries[0].startswith("nya-train-")


def test_a_changed_tokenizer_or_corpus_never_reads_a_stale_entry(tiny_model, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    texts = _texts()
    source = tmp_path / "train.parquet"
    source.write_bytes(b"the corpus split")
    first = TokenCache(tmp_path / "cache", tok, tokenizer_fingerprint(tiny_model, tok))
    first.documents("nya", "train", source, lambda: texts)
    old_entry = next((tmp_path / "cache").iterdir())

    # the same tokenizer with one more token: another key, tokenised again, the old entry removed
    changed_dir = tmp_path / "changed"
    shutil.copytree(tiny_model, changed_dir)
    changed = AutoTokenizer.from_pretrained(changed_dir)
    changed.add_tokens(["ndikufuna"])
    changed.save_pretrained(changed_dir)
    changed = Spy(AutoTokenizer.from_pretrained(changed_dir))
    assert tokenizer_fingerprint(changed_dir, changed.tok) != tokenizer_fingerprint(tiny_model, tok)
    texts = texts + ["ndikufuna"]
    docs = TokenCache(tmp_path / "cache", changed, tokenizer_fingerprint(changed_dir, changed.tok)).documents(
        "nya", "train", source, lambda: texts
    )
    assert changed.texts == len(texts)
    assert docs[len(texts) - 1].tolist() == [len(changed) - 1]  # the new token, which the old entry cannot hold
    assert not old_entry.exists() and len(list((tmp_path / "cache").iterdir())) == 1

    # a changed corpus file: another key too
    source.write_bytes(b"the corpus split, rewritten")
    TokenCache(tmp_path / "cache", changed, tokenizer_fingerprint(changed_dir, changed.tok)).documents(
        "nya", "train", source, lambda: texts
    )
    assert changed.texts == 2 * len(texts)


def test_other_ranks_wait_for_rank_0s_entry_and_never_tokenise(tiny_model, tmp_path, monkeypatch):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    key, texts = tokenizer_fingerprint(tiny_model, tok), _texts()
    source = tmp_path / "train.parquet"
    source.write_bytes(b"the corpus split")
    monkeypatch.setattr(tokenised, "WAIT_SECONDS", 0.01)
    follower = Spy(tok)

    def rank_0() -> None:
        time.sleep(0.3)
        TokenCache(tmp_path / "cache", tok, key, builds=True).documents("nya", "train", source, lambda: texts)

    thread = threading.Thread(target=rank_0)
    thread.start()
    docs = TokenCache(tmp_path / "cache", follower, key, builds=False).documents("nya", "train", source, list)
    thread.join()
    assert follower.texts == 0 and len(docs) == len(texts)
    assert docs[0].tolist() == tok(texts[0], add_special_tokens=False)["input_ids"]


def test_heldout_sample_from_the_cache_equals_the_one_tokenised_here(tiny_model, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    texts = english_lines(30, seed=4) + [" ".join(english_lines(20))]
    ids = tokenised.tokenise(texts[: data.HELDOUT_CANDIDATES], tok)
    here = data.heldout_sample(texts, tok, tok.eos_token_id, 16, 200)
    cached = data.heldout_sample(texts, Spy(tok), tok.eos_token_id, 16, 200, ids)
    assert all(torch.equal(a, b) for a, b in zip(here[:2], cached[:2])) and here[2] == cached[2] > 0
    assert data.heldout_documents(texts, tok, 200) == data.heldout_documents(texts, tok, 200, ids)


def _count_tokenised(monkeypatch) -> list[int]:
    """Every text any tokenizer is asked to encode, counted (the spy on the train stage)."""
    counted = [0]
    real = PreTrainedTokenizerBase.__call__

    def spy(self, text=None, *args, **kwargs):
        counted[0] += len(text) if isinstance(text, list) else 1
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", spy)
    return counted


def _prepare(recipe):
    from langadapt.corpus import flow as corpus
    from langadapt.init import flow as embed_init
    from langadapt.tokenizer import flow as tokenizer

    rd = RunDir(recipe.resolved_run_dir)
    for stage in (corpus, tokenizer, embed_init):
        stage.run(recipe, rd)
    return rd


def _losses(rd):
    lines = (rd.path("train") / "metrics.jsonl").read_text().splitlines()
    return [(json.loads(line)["step"], json.loads(line)["loss"]) for line in lines]


def test_a_resumed_or_forced_train_stage_does_not_tokenise_again(tiny_recipe, tmp_path, monkeypatch):
    recipe = tiny_recipe(run_dir=str(tmp_path / "run"), train={"max_steps": 2, "save_every": 1, "eval_every": 1})
    rd = _prepare(recipe)
    counted = _count_tokenised(monkeypatch)
    real_save = loop.save_checkpoint

    def save_then_die(out, step, *args, **kwargs):
        real_save(out, step, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.run(recipe, rd)
    first = counted[0]
    assert first > 0  # both languages' training and held-out documents, once
    entries = sorted(p.name.rsplit("-", 1)[0] for p in (rd.root / "cache" / "train" / "tokens").iterdir())
    assert entries == ["eng-heldout", "eng-train", "nya-heldout", "nya-train"]

    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    train.run(recipe, rd)  # the interrupted stage resumes: nothing is tokenised again
    assert counted[0] == first and read_json(rd.path("train") / "summary.json")["resumed_from_step"] == 1
    resumed = _losses(rd)
    train.run(recipe, rd, force=True)  # the whole stage again: the same blocks, from the cache
    assert counted[0] == first and _losses(rd) == resumed
    streams = read_json(rd.path("train") / "summary.json")["streams"]
    assert streams["nya"]["tokens"] > 0 and streams["nya"]["documents"] > 0

"""Auxiliary fastText vectors trained locally, cached in the run directory.

No aligned static vectors for most languages can be downloaded offline, so FOCUS, OMP
and OFA train fastText (gensim) on the target corpus as segmented by the new tokenizer
(one vector per token string), and WECHSEL trains word vectors on each language's text.
Training runs on one worker so that the vectors are the same for the same seed.

The cache holds plain arrays (safetensors) and JSON, never pickles: a cached file is
data, not code. Its name is a hash of everything that made it, so a changed corpus,
tokenizer or setting trains anew and an unchanged one is reused across re-runs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.errors import MissingDependencyError
from langadapt.rundir import fingerprint, read_json, write_json

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
_WORD = re.compile(r"\w+(?:['’]\w+)*")


@dataclass
class Space:
    """Vectors for a list of strings; `trained[i]` is False where a vector comes only from character n-grams."""

    keys: list[str]
    vectors: "np.ndarray"  # (len(keys), dim) float32
    trained: "np.ndarray"  # (len(keys),) bool

    def index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}


def _fasttext(sentences: list[list[str]], dim: int, epochs: int, seed: int, min_count: int) -> Any:
    try:
        from gensim.models import FastText
    except ImportError:
        raise MissingDependencyError("gensim", "training fastText vectors", "pip install 'langadapt[init]'") from None
    model = FastText(
        vector_size=dim, window=5, min_count=min_count, min_n=2, max_n=5, sg=1, seed=seed, workers=1, epochs=epochs
    )
    model.build_vocab(corpus_iterable=sentences)
    if not model.wv.key_to_index:
        return model
    model.train(corpus_iterable=sentences, total_examples=len(sentences), epochs=epochs)
    return model


def _embed(model: Any, keys: list[str]) -> tuple["np.ndarray", "np.ndarray"]:
    import numpy as np

    dim = model.wv.vector_size
    vecs = np.zeros((len(keys), dim), dtype=np.float32)
    trained = np.zeros(len(keys), dtype=bool)
    if not model.wv.key_to_index:
        return vecs, trained
    for i, key in enumerate(keys):
        if key in model.wv.key_to_index:
            trained[i] = True
        if key:
            vecs[i] = model.wv[key]  # fastText composes unseen strings from their character n-grams
    return vecs, trained


def _cached(cache: Path, key: str, build: Any) -> Space:
    from safetensors.numpy import load_file, save_file

    path = cache / f"{key}.safetensors"
    meta = cache / f"{key}.json"
    if path.is_file() and meta.is_file():
        arrays = load_file(str(path))
        return Space(read_json(meta)["keys"], arrays["vectors"], arrays["trained"].astype(bool))
    space = build()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"vectors": space.vectors, "trained": space.trained.astype("uint8")}, str(tmp))
    write_json(meta, {"keys": space.keys})
    tmp.replace(path)
    return space


def token_space(
    cache: Path, tokenizer: Any, texts: list[str], dim: int, epochs: int, seed: int, name: str = "tokens"
) -> Space:
    """fastText vectors of every token of `tokenizer`, trained on `texts` segmented by it."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    keys = [t for t, _ in vocab]
    key = f"{name}-{fingerprint(keys, digest(texts), dim, epochs, seed)}"

    def build() -> Space:
        import numpy as np

        log.info("training fastText on %d documents as %d-token segments (cached in %s)", len(texts), len(keys), cache)
        by_id = np.array(keys, dtype=object)
        sentences = [list(by_id[ids]) for ids in _encode(tokenizer, texts)]
        model = _fasttext(sentences, dim, epochs, seed, min_count=2)
        vecs, trained = _embed(model, keys)
        return Space(keys, vecs, trained)

    return _cached(cache, key, build)


def word_space(cache: Path, texts: list[str], dim: int, epochs: int, seed: int, name: str, extra: list[str]) -> Space:
    """Word-level fastText vectors (lower-cased words) trained on `texts`, plus vectors for the
    `extra` strings (token surfaces), which fastText composes from character n-grams when they
    are not words of the text (WECHSEL's subword embeddings)."""
    key = f"{name}-{fingerprint(digest(texts), extra, dim, epochs, seed)}"

    def build() -> Space:
        log.info("training %s word vectors on %d documents (cached in %s)", name, len(texts), cache)
        model = _fasttext([words(t) for t in texts], dim, epochs, seed, min_count=3)
        keys = list(model.wv.index_to_key)
        known = set(keys)
        keys += [s for s in dict.fromkeys(extra) if s not in known]
        vecs, trained = _embed(model, keys)
        return Space(keys, vecs, trained)

    return _cached(cache, key, build)


def words(text: str) -> list[str]:
    """Lower-cased words of any script that separates words with spaces or punctuation."""
    return _WORD.findall(text.lower())


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    out: list[list[int]] = []
    for start in range(0, len(texts), 256):
        out.extend(tokenizer(texts[start : start + 256], add_special_tokens=False, verbose=False)["input_ids"])
    return out


def digest(texts: list[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()

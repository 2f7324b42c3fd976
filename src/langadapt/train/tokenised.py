"""The tokenised corpus: each language's documents tokenised once and kept in the run directory.

Training packs its blocks from `TokenisedDocuments`: one flat token array and the document
boundaries (document i is `tokens[offsets[i]:offsets[i + 1]]`), so drawing a step is array
slicing. The train stage tokenises each language's training documents, and the candidates
of its held-out sample, once: in batches of about `BATCH_CHARACTERS` characters through the
tokenizer (a fast tokenizer encodes a batch in Rust on every core), written as it goes, and
published atomically (a temporary folder renamed into place) under

    <run>/cache/train/tokens/<language>-<split>-<key>/   tokens.bin  offsets.npy  meta.json

`tokens.bin` holds the ids as raw little-endian uint16 (vocabularies of at most 65,536
tokens) or uint32, read through a memory map (processes on one machine share its pages);
`offsets.npy` the n + 1 document boundaries (int64). The key is a hash of the tokenizer's
files, the bytes of the corpus split's parquet file, how many documents were taken and the
`tokenizers` and `transformers` versions: a changed tokenizer, corpus or library never reads
a stale cache, it writes a new entry (and removes the language's older entries of that split).

Where it lives, and why not in the stage's folder: a stage writes into `train.partial/`,
which a re-run with another train fingerprint (any change of learning rate, steps, method)
deletes, and which becomes `train/` when the stage completes. Tokens depend only on the
tokenizer and the corpus, so they belong beside the stages, like `cache/init/`: an interrupted
run finds them on resume (nothing removes `cache/`), a re-run with another training config
reads them, and the completed `train/` folder, which evaluation, the report and export read,
carries no copy of the corpus. Deleting `cache/` reclaims the space; the next training
tokenises again.

Several processes (`accelerate launch` / `torchrun`): rank 0 alone tokenises and writes; the
others compute the same key and wait until the entry appears (a file-system wait, not a
collective, so a long tokenisation cannot run into the process group's timeout; a launcher
stops every process when rank 0 fails). Every process then reads the same memory-mapped files
and no process tokenises during training.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from langadapt.rundir import fingerprint, sha256_file, write_json

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1  # the layout of a cache entry; a new layout is a new key
BATCH_CHARACTERS = 1 << 21  # characters per call to the tokenizer: enough documents for every core, bounded memory
WAIT_SECONDS = 0.5  # how often a process other than rank 0 looks for the entry rank 0 is writing
# files `save_pretrained` writes for a tokenizer (besides the vocabulary files its class names)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


@dataclass(frozen=True)
class TokenisedDocuments:
    """Documents as one flat token array: document i is `tokens[offsets[i]:offsets[i + 1]]` (no separators)."""

    tokens: "np.ndarray"
    offsets: "np.ndarray"  # int64, one more than there are documents

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> "np.ndarray":
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])


def token_dtype(tok: Any) -> "np.dtype":
    """uint16 when every id of the vocabulary fits, else uint32: half the size for vocabularies up to 65,536."""
    import numpy as np

    return np.dtype(np.uint16) if len(tok) <= 1 << 16 else np.dtype(np.uint32)


def _batches(texts: list[str]) -> Iterator[list[str]]:
    start, size = 0, 0
    for i, text in enumerate(texts):
        size += len(text)
        if size >= BATCH_CHARACTERS:
            yield texts[start : i + 1]
            start, size = i + 1, 0
    if start < len(texts):
        yield texts[start:]


def _encode(texts: list[str], tok: Any, dtype: "np.dtype") -> Iterator[tuple["np.ndarray", "np.ndarray"]]:
    """(tokens, lengths) of each batch: what `tok(text, add_special_tokens=False)` gives each text, batched."""
    import numpy as np

    for batch in _batches(texts):
        ids = tok(batch, add_special_tokens=False, verbose=False)["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        # an id that does not fit the dtype raises OverflowError here instead of wrapping around
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))
        yield flat, lengths


def _offsets(lengths: list["np.ndarray"]) -> "np.ndarray":
    import numpy as np

    offsets = np.zeros(sum(len(x) for x in lengths) + 1, dtype=np.int64)
    if len(offsets) > 1:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    return offsets


def tokenise(texts: list[str], tok: Any) -> TokenisedDocuments:
    """Tokenise documents in memory, in batches (no cache): for callers without a run directory."""
    import numpy as np

    dtype = token_dtype(tok)
    parts = list(_encode(texts, tok, dtype))
    tokens = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=dtype)
    return TokenisedDocuments(tokens, _offsets([p[1] for p in parts]))


def tokenizer_fingerprint(folder: str | Path, tok: Any) -> str:
    """A hash of the files a tokenizer is loaded from (its class and every tokenizer file in its folder)."""
    folder = Path(folder)
    names = set(TOKENIZER_FILES) | set(getattr(tok, "vocab_files_names", {}).values())
    files = {n: sha256_file(folder / n) for n in sorted(names) if (folder / n).is_file()}
    return fingerprint(type(tok).__name__, files)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


class TokenCache:
    """Tokenised documents of one run directory, built by one process (rank 0) and read by all.

    `folder` is the cache's root (`<run>/cache/train/tokens`); `tokenizer_key` is
    `tokenizer_fingerprint` of the tokenizer `tok` was loaded from; `builds`: whether this
    process tokenises and writes a missing entry (rank 0) or waits for it (every other rank).
    """

    def __init__(self, folder: Path, tok: Any, tokenizer_key: str, builds: bool = True) -> None:
        self.folder, self.tok, self.tokenizer_key, self.builds = Path(folder), tok, tokenizer_key, builds

    def key(self, source: Path, limit: int | None = None) -> str:
        """What an entry depends on: the tokenizer, the corpus file's bytes, how many documents, the libraries."""
        return fingerprint(
            FORMAT,
            self.tokenizer_key,
            sha256_file(source),
            limit,
            _version("tokenizers"),
            _version("transformers"),
        )

    def documents(
        self,
        language: str,
        split: str,
        source: Path,
        texts: Callable[[], list[str]],
        limit: int | None = None,
    ) -> TokenisedDocuments:
        """The tokenised documents of `source` (a corpus split's parquet file), from the cache or tokenised now.

        `texts` reads the documents and is called only when this process tokenises them;
        `limit`: only the first `limit` documents (the held-out sample's candidates).
        """
        entry = self.folder / f"{language}-{split}-{self.key(source, limit)}"
        if not entry.is_dir():
            if self.builds:
                self._build(entry, texts()[:limit] if limit is not None else texts())
                self._remove_stale(entry, f"{language}-{split}-")
            else:
                self._wait_for(entry)
        return self._read(entry)

    def _read(self, entry: Path) -> TokenisedDocuments:
        import numpy as np

        from langadapt.rundir import read_json

        meta = read_json(entry / "meta.json")
        offsets = np.load(entry / "offsets.npy")
        dtype = np.dtype(meta["dtype"]).newbyteorder("<")
        tokens = (
            np.memmap(entry / "tokens.bin", dtype=dtype, mode="r", shape=(int(offsets[-1]),))
            if offsets[-1]
            else np.zeros(0, dtype=dtype)  # an empty file cannot be memory-mapped
        )
        log.info("tokens: %s read from the cache (%d documents, %d tokens)", entry.name, len(offsets) - 1, offsets[-1])
        return TokenisedDocuments(tokens, offsets)

    def _build(self, entry: Path, texts: list[str]) -> None:
        import numpy as np

        t0 = time.time()
        tmp = entry.with_name(f".{entry.name}.tmp")
        if tmp.exists():  # left by an interrupted build
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        dtype = token_dtype(self.tok).newbyteorder("<")
        lengths = []
        with open(tmp / "tokens.bin", "wb") as f:
            for flat, n in _encode(texts, self.tok, dtype):
                f.write(flat.astype(dtype, copy=False).tobytes())
                lengths.append(n)
        offsets = _offsets(lengths)
        np.save(tmp / "offsets.npy", offsets)
        seconds = round(time.time() - t0, 2)
        write_json(
            tmp / "meta.json",
            {"documents": len(texts), "tokens": int(offsets[-1]), "dtype": dtype.name, "seconds": seconds},
        )
        os.replace(tmp, entry)
        log.info(
            "tokens: %s tokenised in %.1f s (%d documents, %d tokens), cached in %s",
            entry.name,
            seconds,
            len(texts),
            offsets[-1],
            self.folder,
        )

    def _remove_stale(self, entry: Path, prefix: str) -> None:
        """Entries of the same language and split under another key (another tokenizer or corpus)."""
        for old in self.folder.glob(prefix + "*"):
            if old != entry and old.is_dir():
                shutil.rmtree(old)

    def _wait_for(self, entry: Path) -> None:
        t0 = last = time.time()
        while not entry.is_dir():
            time.sleep(WAIT_SECONDS)
            if time.time() - last >= 60:
                last = time.time()
                log.info("tokens: waiting %.0f s for rank 0 to tokenise %s", last - t0, entry.name)

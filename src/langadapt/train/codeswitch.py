"""Code-switching: target-language words replaced by their dictionary translations, as augmentation
(`codeswitch`, encoders) and as the restore objective (`codeswitch-restore`, decoders).

A word of the target text is replaced, with probability `train.codeswitch_probability`, by one
of its translations in the source language (drawn at random among them; a capitalised word
gets a capitalised translation). Words are found as the project finds them everywhere
(`script.word_spans`): runs between spaces with punctuation trimmed from their edges, of any
script; in scripts written without spaces (Thai, Han, kana, ...) a run of characters is
matched against the dictionary longest entry first, and characters no entry covers are left
as they are. Only words the dictionary holds can change, so the rate over all words is p
times the dictionary's coverage (both are in the summary).

- `codeswitch` (masked, encoders): mlm on code-switched target text. A share of the target's
  rows (`train.codeswitch_ratio`) is drawn from the switched text, the rest is plain text;
  the model learns words of both languages in the same contexts (as in Conneau et al.'s
  and Qin et al.'s code-switching augmentation).
- `codeswitch-restore` (causal, decoders): the code-switched text and its original form a
  pair, `<eos>switched<pair_separator>original`, with the loss on the original only
  (`train.translation_loss_on`): the model reconstructs the target text from its mixed
  form ("code-switching restore").

The switch of a document is a function of the seed, the epoch and the document, so a resumed
run switches exactly as an uninterrupted one, and each epoch switches differently.

Dictionaries (`train.codeswitch_dictionary`): a TSV of word pairs, a dictd index (Debian's
freedict packages), or `init`, the word pairs WECHSEL aligned its embedding spaces with
(`init.method: wechsel`, from the init stage's report). Which side of a file is the target
language is told from the training text (`sources/dictionary.orient`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langadapt.script import char_script, word_spans
from langadapt.train.data import TokenStream
from langadapt.train.mlm import MaskedLM, MaskingPlan, mlm_loss
from langadapt.train.objectives import OBJECTIVES
from langadapt.train.pairs import PairStream
from langadapt.train.translation import translation_clm_loss

if TYPE_CHECKING:
    import numpy as np
    import torch

    from langadapt.train.config import TrainConfig

_UNSPACED_SCRIPTS = frozenset(("Thai", "Laoo", "Khmr", "Mymr", "Hani", "Hira", "Kana", "Tibt", "Yiii", "Bali", "Java"))


@dataclass
class CodeSwitcher:
    """Replaces target words by translations: `translations` maps a lower-cased target word to its translations."""

    translations: dict[str, list[str]]
    probability: float
    longest: int = field(init=False)

    def __post_init__(self) -> None:
        self.longest = max((len(w) for w in self.translations), default=1)

    def words(self, text: str) -> list[tuple[int, int]]:
        """The words of `text` that may be switched: its word spans, with runs of characters of unspaced scripts
        cut into the dictionary's longest entries (what no entry covers stays as single characters)."""
        spans, out, i = word_spans(text), [], 0
        while i < len(spans):
            a, b = spans[i]
            if b - a == 1 and char_script(text[a]) in _UNSPACED_SCRIPTS:
                j = i
                while j + 1 < len(spans) and spans[j + 1][0] == spans[j][1] and spans[j + 1][1] - spans[j + 1][0] == 1:
                    j += 1
                out.extend(self._longest_first(text, a, spans[j][1]))
                i = j + 1
                continue
            out.append((a, b))
            i += 1
        return out

    def _longest_first(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        out, k = [], start
        while k < end:
            for n in range(min(self.longest, end - k), 0, -1):
                if n == 1 or text[k : k + n].lower() in self.translations:
                    out.append((k, k + n))
                    k += n
                    break
        return out

    def switch(self, text: str, rng: random.Random) -> tuple[str, int, int]:
        """(switched text, words, words replaced)."""
        pieces, last, n_words, replaced = [], 0, 0, 0
        for a, b in self.words(text):
            n_words += 1
            options = self.translations.get(text[a:b].lower())
            if not options or rng.random() >= self.probability:
                continue
            choice = options[rng.randrange(len(options))] if len(options) > 1 else options[0]
            if text[a].isupper():
                choice = choice[:1].upper() + choice[1:]
            pieces += [text[last:a], choice]
            last, replaced = b, replaced + 1
        pieces.append(text[last:])
        return "".join(pieces), n_words, replaced


def switcher_from_pairs(
    pairs: list[tuple[str, str]], probability: float, target_words: set[str] | None = None
) -> CodeSwitcher:
    """A switcher from (source word, target word) pairs (every translation of a target word kept once)."""
    table: dict[str, list[str]] = {}
    for source, target in pairs:
        key = target.lower()
        if target_words is not None and key not in target_words:
            continue
        if source not in table.setdefault(key, []):
            table[key].append(source)
    return CodeSwitcher(table, probability)


def target_second(pairs: list[tuple[str, str]], target_words: set[str]) -> list[tuple[str, str]]:
    """The pairs as (source word, target word): the side whose words the target text uses more is the target."""
    first = sum(1 for a, _ in pairs if a.lower() in target_words)
    second = sum(1 for _, b in pairs if b.lower() in target_words)
    return [(b, a) for a, b in pairs] if first > second else pairs


def _document_rng(seed: int, epoch: int, index: int) -> random.Random:
    return random.Random((seed * 1_000_003 + epoch) * 2_147_483_647 + index)


@dataclass
class SwitchedStream(TokenStream):
    """A target stream whose documents are code-switched afresh each epoch, tokenised as they are drawn."""

    texts: list[str] = field(default_factory=list, repr=False)
    switcher: CodeSwitcher | None = field(default=None, repr=False)
    words_seen: int = 0
    words_switched: int = 0

    def _next_document(self) -> "np.ndarray":
        import numpy as np

        if self.next_doc >= len(self._order):
            self.epoch += 1
            self.next_doc = 0
            self._shuffle()
        k = self._order[self.next_doc]
        assert self.switcher is not None
        text, n, r = self.switcher.switch(self.texts[k], _document_rng(self.seed, self.epoch, k))
        self.words_seen, self.words_switched = self.words_seen + n, self.words_switched + r
        self.next_doc += 1
        self.documents_started += 1
        return np.asarray(self.tok(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=np.int64)


@dataclass
class RestoreStream(PairStream):
    """Pairs (code-switched document, the document), switched afresh each epoch, the switched side first."""

    texts: list[str] = field(default_factory=list, repr=False)
    switcher: CodeSwitcher | None = field(default=None, repr=False)
    words_seen: int = 0
    words_switched: int = 0
    _drawn: tuple[int, int, Any] = field(default=(-1, -1, None), repr=False)

    def _peek(self) -> tuple["np.ndarray", "np.ndarray"]:
        import numpy as np

        if self.next_doc >= len(self._order):
            self.epoch += 1
            self.next_doc = 0
            self._shuffle()
        k = self._order[self.next_doc]
        if self._drawn[:2] != (self.epoch, self.next_doc):  # a pair that did not fit is peeked again next row
            assert self.switcher is not None
            text, n, r = self.switcher.switch(self.texts[k], _document_rng(self.seed, self.epoch, k))
            self.words_seen, self.words_switched = self.words_seen + n, self.words_switched + r
            ids = self.tok([text, self.texts[k]], add_special_tokens=False, verbose=False)["input_ids"]
            self._drawn = (self.epoch, self.next_doc, tuple(np.asarray(x, dtype=np.int64) for x in ids))
        return self._drawn[2]


def load_dictionary(spec: str, init_report: dict[str, Any] | None) -> tuple[list[tuple[str, str]], str]:
    """(word pairs as read, where from): `init` takes WECHSEL's from the init stage's report, else a TSV or
    dictd file (`sources/dictionary.read_dictionary`)."""
    from pathlib import Path

    from langadapt.errors import InputError
    from langadapt.sources.dictionary import read_dictionary

    if spec == "init":
        for value in (init_report or {}).values():
            if isinstance(value, dict) and value.get("word_pairs"):
                return [(a, b) for a, b in value["word_pairs"]], "the word pairs WECHSEL aligned with (init stage)"
        raise InputError(
            "train.codeswitch_dictionary: init takes the dictionary WECHSEL used, and the init stage's report has none",
            hint="set init.method: wechsel, or give a TSV or dictd dictionary file",
        )
    return read_dictionary(Path(spec).expanduser()), f"file {Path(spec).name}"


@OBJECTIVES.register(
    "codeswitch",
    help="encoders: mlm on target text whose words are replaced by dictionary translations with probability "
    "train.codeswitch_probability, in a share train.codeswitch_ratio of the target's rows (augmentation)",
)
def codeswitch_loss(
    model: Any,
    input_ids: "torch.Tensor",
    position_ids: "torch.Tensor | None" = None,
    *,
    plan: MaskingPlan,
    words: "torch.Tensor | None" = None,
    longest_word: int | None = None,
    seed: int | None = None,
) -> "torch.Tensor":
    """mlm's loss: the switching happened to the text the rows were drawn from."""
    return mlm_loss(model, input_ids, position_ids, plan=plan, words=words, longest_word=longest_word, seed=seed)


@OBJECTIVES.register(
    "codeswitch-restore",
    help="decoders: pairs <eos>code-switched<sep>original of the target text, the loss on the original "
    "(code-switching restore), in a share train.codeswitch_ratio of the target's rows",
)
def codeswitch_restore_loss(
    model: Any, input_ids: "torch.Tensor", segments: "torch.Tensor", *, loss_on: str = "target"
) -> "torch.Tensor":
    """translation-clm's loss over the (switched, original) pairs."""
    return translation_clm_loss(model, input_ids, segments, loss_on=loss_on)


class SwitchedMaskedLM(MaskedLM):
    """`codeswitch` with its plan bound, drawing a share of the target's rows from the switched stream."""

    def __init__(self, plan: MaskingPlan, target_stream: str, target_share: float) -> None:
        super().__init__(plan)
        self.target_stream, self.target_share = target_stream, target_share


def build_switch_stream(
    cfg: "TrainConfig",
    name: str,
    tok: Any,
    sep_id: int,
    seed: int,
    texts: list[str],
    documents: Any,
    init_report: dict[str, Any] | None,
    pair_separator: tuple[int, ...] = (),
) -> tuple["SwitchedStream | RestoreStream", dict[str, Any]]:
    """The stream `name` (codeswitch, codeswitch-restore) trains on, and a record of its dictionary."""
    import numpy as np

    from langadapt.sources.dictionary import words as dictionary_words

    pairs, origin = load_dictionary(cfg.codeswitch_dictionary, init_report)
    target_words = {w for t in texts for w in dictionary_words(t)}
    if cfg.codeswitch_dictionary != "init":  # WECHSEL's pairs are (source, target) already
        pairs = target_second(pairs, target_words)
    switcher = switcher_from_pairs(pairs, cfg.codeswitch_probability, target_words)
    record = {"dictionary": origin, "dictionary_pairs": len(pairs), "target_words_covered": len(switcher.translations)}
    if not switcher.translations:
        from langadapt.errors import InputError

        raise InputError(
            f"train.codeswitch_dictionary ({origin}): none of its {len(pairs)} pairs has a word of the target text",
            hint="check that the dictionary pairs the target language with the source language",
        )
    if name == "codeswitch":
        stream: SwitchedStream | RestoreStream = SwitchedStream(
            documents, tok, sep_id, cfg.seq_len, seed, texts=texts, switcher=switcher
        )
    else:
        empty = [np.zeros(0, dtype=np.int64)] * len(texts)
        stream = RestoreStream(
            empty, empty, sep_id, pair_separator, cfg.seq_len, seed, "forward", tok=tok, texts=texts, switcher=switcher
        )
    return stream, record

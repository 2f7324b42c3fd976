"""Method `extend`: add the N most useful target-language tokens to the base tokenizer, any family.

The flow is the same for every family; only how a token enters the vocabulary differs
(`bpe.py`: a merge appended after the base merges; `unigram.py`: a scored piece;
`wordpiece.py`: a word or '##' continuation):

1. train a tokenizer of the base's own family on the target training text, through the
   base's normaliser and pre-tokeniser, so its tokens are spelt in the same alphabet;
2. its tokens the base lacks become candidates (in the target's order of preference);
3. tokenise a sample of the target text with all candidates added, count how often each
   is used, and keep the N most used (plus the BPE intermediates their merges need);
4. replay protection: a candidate that shows up when encoding the replay language's text
   would change how the base tokenises that language, so it is dropped (for every family
   the encoding of a text changes exactly when a new token appears in it);
5. re-check the chosen set until every added token is used on the target sample and none
   appears in the replay sample.

Old ids never move: new tokens get ids after the last existing one.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.errors import StageError
from langadapt.tokenizer import bpe, unigram, wordpiece
from langadapt.tokenizer.methods import TOKENIZER_METHODS, MethodInputs
from langadapt.tokenizer.state import Candidate, check_extendable, family_of, tokenizer_from_state, tokenizer_state

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)
SAMPLE_CHARS = 2_000_000  # text per language used to count candidate usage
CANDIDATE_FACTOR = 3  # candidates considered per requested new token
ROUNDS = 6  # re-selection rounds before dropping without refilling


def _parts(family: str) -> Any:
    return {"bpe-bytelevel": bpe, "bpe-sentencepiece": bpe, "unigram": unigram, "wordpiece": wordpiece}[family]


def train_target(
    base: "PreTrainedTokenizerBase", texts: list[str], vocab_size: int, min_frequency: int
) -> "PreTrainedTokenizerBase":
    """A tokenizer of the base's family, normaliser, pre-tokeniser and special tokens, trained on `texts`."""
    family = family_of(tokenizer_state(base))
    kwargs = {} if family == "unigram" else {"min_frequency": min_frequency}  # Unigram's trainer has no such knob
    log.info("training a %d-token %s tokenizer on %d documents", vocab_size, family, len(texts))
    return base.train_new_from_iterator(iter(texts), vocab_size=vocab_size, **kwargs)


def head(texts: list[str], chars: int = SAMPLE_CHARS) -> list[str]:
    """The first texts up to about `chars` characters."""
    out, size = [], 0
    for t in texts:
        if size >= chars:
            break
        out.append(t)
        size += len(t)
    return out


def select(pool: list[Candidate], usage: Counter, n: int) -> list[Candidate]:
    """The n most used candidates plus the new tokens their construction needs, in pool order."""
    by_token = {c.token: c for c in pool}
    order = {c.token: i for i, c in enumerate(pool)}
    chosen: set[str] = set()

    def needed(token: str, seen: frozenset[str] = frozenset()) -> list[str]:
        if token not in by_token or token in chosen or token in seen:
            return []
        deps = [t for part in by_token[token].needs for t in needed(part, seen | {token})]
        return deps + [token]

    for token in sorted(by_token, key=lambda t: (-usage[t], order[t])):
        if usage[token] == 0 or len(chosen) >= n:
            break
        extra = list(dict.fromkeys(needed(token)))
        if len(chosen) + len(extra) <= n:
            chosen.update(extra)
    return [c for c in pool if c.token in chosen]


def without(pool: list[Candidate], bad: set[str]) -> list[Candidate]:
    """`pool` minus `bad` and every candidate built (directly or not) from a dropped one."""
    dropped = set(bad)
    out = []
    for c in pool:  # pool order puts parts before the tokens built from them
        if c.token in dropped or any(p in dropped for p in c.needs):
            dropped.add(c.token)
        else:
            out.append(c)
    return out


class _Trial:
    """Builds a tokenizer with some candidates added and measures it on the target and replay samples."""

    def __init__(self, base: "PreTrainedTokenizerBase", state: dict, part: Any, target: list[str], replay: list[str]):
        self.base, self.state, self.part, self.target, self.replay = base, state, part, target, replay

    def build(self, cands: list[Candidate], folder: Path) -> "PreTrainedTokenizerBase":
        return tokenizer_from_state(self.base, self.part.with_tokens(self.state, cands), folder)

    def measure(self, cands: list[Candidate], folder: Path) -> tuple[Counter, set[str]]:
        """(uses of each candidate on the target sample, candidates that appear in the replay sample)."""
        tok = self.build(cands, folder)
        ids = {tok.convert_tokens_to_ids(c.token): c.token for c in cands}
        backend = tok.backend_tokenizer  # no model_max_length warnings: these texts never reach a model
        usage: Counter = Counter()
        for enc in backend.encode_batch(self.target, add_special_tokens=False):
            usage.update(ids[i] for i in enc.ids if i in ids)
        leaked: set[str] = set()
        for enc in backend.encode_batch(self.replay, add_special_tokens=False):
            leaked.update(ids[i] for i in enc.ids if i in ids)
        shutil.rmtree(folder)
        return usage, leaked


@TOKENIZER_METHODS.register(
    "extend",
    help="add the N most used tokens of a target-language tokenizer of the base's family (BPE, Unigram, WordPiece)",
)
def extend(inp: MethodInputs) -> dict[str, Any]:
    cfg = inp.recipe.tokenizer
    check_extendable(inp.base)
    state = tokenizer_state(inp.base)
    family = family_of(state)
    part = _parts(family)
    target = train_target(inp.base, inp.target_texts, cfg.target_vocab_size, cfg.min_frequency)
    pool, not_candidates = part.candidates(state, tokenizer_state(target), CANDIDATE_FACTOR * cfg.new_tokens)
    if not pool:
        raise StageError(
            f"tokenizer: the target {family} tokenizer proposes no token the base tokenizer lacks",
            hint="use tokenizer.method: keep, or give more target-language text",
        )
    trial = _Trial(inp.base, state, part, head(inp.target_texts), head(inp.replay_texts))
    scratch = inp.out / ".candidates"
    n_candidates = len(pool)

    usage, leaked = trial.measure(pool, scratch)
    replay_dropped: set[str] = set()
    for _ in range(ROUNDS):  # drop what changes the replay language; others may then surface there
        if not leaked:
            break
        replay_dropped |= leaked
        pool = without(pool, leaked)
        usage, leaked = trial.measure(pool, scratch)
    chosen = select(pool, usage, cfg.new_tokens)
    attempt = 0
    while True:
        uses, leaked = trial.measure(chosen, scratch)
        bad = {c.token for c in chosen if uses[c.token] == 0} | leaked
        if not bad:
            break
        replay_dropped |= leaked
        pool = without(pool, bad)
        # refill from the remaining pool for a few rounds, then only shrink (which always ends)
        chosen = select(pool, usage, cfg.new_tokens) if attempt < ROUNDS else without(chosen, bad)
        attempt += 1

    tok = trial.build(chosen, inp.out)
    rows = [(tok.convert_tokens_to_ids(c.token), c) for c in chosen]
    with open(inp.out / "new_tokens.tsv", "w", encoding="utf-8") as f:
        f.write("id\ttoken\ttext\tsample_uses\n")
        for i, c in rows:
            f.write(f"{i}\t{c.token}\t{tok.convert_tokens_to_string([c.token])!r}\t{uses[c.token]}\n")
    log.info(
        "added %d %s tokens (%d candidates; %d dropped because they would change the replay language)",
        len(chosen),
        family,
        n_candidates,
        len(replay_dropped),
    )
    return {
        "family": family,
        "requested_new_tokens": cfg.new_tokens,
        "added_tokens": len(chosen),
        "candidates": n_candidates,
        "candidates_dropped_for_replay": len(replay_dropped),
        "target_tokens_not_reachable": dict(not_candidates),
        "new_token_ids": [i for i, _ in rows],
    }

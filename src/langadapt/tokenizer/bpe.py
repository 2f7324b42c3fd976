"""Method `extend` for BPE tokenizers (BPE tokenizers: byte-level like GPT-2/Llama-3/SmolLM, or SentencePiece-BPE
like Llama-2/Gemma as stored in tokenizer.json):

1. train a BPE on the target training text with the base tokenizer's own normaliser and
   pre-tokeniser, so its tokens are spelt in the same alphabet;
2. walk its merges in order; for each token the base lacks, segment it with the base
   merges (plus those added so far): if that gives two pieces, the merge of those two
   pieces makes it a candidate (see `candidate_merges` for why not the target's merge);
3. append all candidate merges after the base merges (lowest priority, so text the base
   tokenises well is left alone), tokenise a sample of the target text and count how
   often each candidate is used;
4. keep the N most used, plus the intermediate tokens their merges need, in merge order.

Old ids never move: new tokens get ids after the last existing one. Metrics (fertility,
bytes per token, continued-word ratio, UNK rate) are measured before and after on held-out
text of every language in the corpus.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.errors import ConfigError, StageError
from langadapt.tokenizer.methods import TOKENIZER_METHODS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
SAMPLE_CHARS = 2_000_000  # target text used to count candidate usage
CANDIDATE_FACTOR = 3  # candidates considered per requested new token


def _merge_pair(m: Any) -> tuple[str, str]:
    if isinstance(m, str):
        a, b = m.split(" ", 1)
        return a, b
    return m[0], m[1]


def check_extendable(tok: "PreTrainedTokenizerBase") -> None:
    """Raise a ConfigError unless `extend` can work on this tokenizer."""
    _bpe_state(tok)


def _bpe_state(tok: "PreTrainedTokenizerBase") -> dict[str, Any]:
    if not getattr(tok, "is_fast", False):
        raise ConfigError(["tokenizer.method extend: the base tokenizer has no fast (tokenizer.json) version"])
    state = json.loads(tok.backend_tokenizer.to_str())
    kind = state["model"]["type"]
    if kind != "BPE":
        raise ConfigError(
            [
                f"tokenizer.method extend supports BPE tokenizers; the base tokenizer is {kind}. Use tokenizer.method: keep"
            ]
        )
    return state


def bpe_pieces(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges (lower rank first) to one pre-token; the reference algorithm."""
    parts = list(word)
    while len(parts) > 1:
        rank, i = min((ranks.get((parts[j], parts[j + 1]), _NO_MERGE), j) for j in range(len(parts) - 1))
        if rank == _NO_MERGE:
            break
        pair, merged = (parts[i], parts[i + 1]), []
        j = 0
        while j < len(parts):
            if j < len(parts) - 1 and (parts[j], parts[j + 1]) == pair:
                merged.append(parts[j] + parts[j + 1])
                j += 2
            else:
                merged.append(parts[j])
                j += 1
        parts = merged
    return parts


_NO_MERGE = 1 << 62


def candidate_merges(
    base_state: dict[str, Any], target_state: dict[str, Any], limit: int
) -> tuple[list[tuple[str, str, str]], Counter]:
    """Merges (x, y, token) that add target-BPE tokens the base lacks, in target merge order.

    The target BPE builds a token along its own merge path, which the base merges often
    pre-empt (base 'nd'+'ipo' where the target merged 'ndi'+'po'), so appending the
    target's merge would never fire. Instead each token's merge is taken from how the
    base (plus merges added so far) actually segments it: a token that segments into
    exactly two pieces gets the merge of those two pieces.
    """
    vocab = set(base_state["model"]["vocab"])
    vocab |= {t["content"] for t in base_state.get("added_tokens", [])}
    ranks = {_merge_pair(m): i for i, m in enumerate(base_state["model"]["merges"])}
    out: list[tuple[str, str, str]] = []
    skipped: Counter = Counter()
    for m in target_state["model"]["merges"]:
        new = "".join(_merge_pair(m))
        if new in vocab:
            continue
        pieces = bpe_pieces(new, ranks)
        if len(pieces) != 2 or pieces[0] not in vocab or pieces[1] not in vocab:
            skipped["needs_more_than_one_merge" if len(pieces) > 2 else "unspellable"] += 1
            continue
        out.append((pieces[0], pieces[1], new))
        vocab.add(new)
        ranks[(pieces[0], pieces[1])] = len(ranks)
        if len(out) >= limit:
            break
    return out, skipped


def with_merges(base_state: dict[str, Any], merges: list[tuple[str, str, str]]) -> dict[str, Any]:
    """A copy of the base tokenizer state with `merges` appended and their tokens added."""
    state = json.loads(json.dumps(base_state))
    model = state["model"]
    ids = list(model["vocab"].values()) + [t["id"] for t in state.get("added_tokens", [])]
    next_id = max(ids) + 1
    as_string = bool(model["merges"]) and isinstance(model["merges"][0], str)
    for a, b, new in merges:
        model["vocab"][new] = next_id
        next_id += 1
        model["merges"].append(f"{a} {b}" if as_string else [a, b])
    return state


def select_merges(cands: list[tuple[str, str, str]], usage: Counter, n: int) -> list[tuple[str, str, str]]:
    """The n most used candidates plus the intermediate candidates their merges need."""
    by_token = {new: (a, b, new) for a, b, new in cands}
    order = {new: i for i, (_, _, new) in enumerate(cands)}
    chosen: set[str] = set()

    def needed(token: str) -> list[str]:
        if token not in by_token or token in chosen:
            return []
        a, b, _ = by_token[token]
        return needed(a) + needed(b) + [token]

    for token in sorted(by_token, key=lambda t: (-usage[t], order[t])):
        if usage[token] == 0 or len(chosen) >= n:
            break
        extra = list(dict.fromkeys(needed(token)))
        if len(chosen) + len(extra) <= n:
            chosen.update(extra)
    return [m for m in cands if m[2] in chosen]


def _tokenizer_from_state(
    base: "PreTrainedTokenizerBase", state: dict[str, Any], folder: Path
) -> "PreTrainedTokenizerBase":
    """Save `base` to `folder`, replace its tokenizer.json with `state`, reload."""
    from transformers import AutoTokenizer

    base.save_pretrained(folder)
    for stale in ("tokenizer.model", "vocab.json", "merges.txt", "vocab.txt", "sentencepiece.bpe.model"):
        (folder / stale).unlink(missing_ok=True)  # slow-tokenizer files would disagree with the new vocab
    (folder / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    return AutoTokenizer.from_pretrained(folder)


@TOKENIZER_METHODS.register(
    "extend", help="add the N most used tokens of a target-language BPE, as merges appended to the base BPE"
)
def extend(base: "PreTrainedTokenizerBase", train_texts: list[str], recipe: "Recipe", out: Path) -> dict[str, Any]:
    cfg = recipe.tokenizer
    base_state = _bpe_state(base)
    log.info("training a %d-token target BPE on %d documents", cfg.target_vocab_size, len(train_texts))
    target = base.train_new_from_iterator(
        iter(train_texts), vocab_size=cfg.target_vocab_size, min_frequency=cfg.min_frequency
    )
    target_state = json.loads(target.backend_tokenizer.to_str())
    cands, not_candidates = candidate_merges(base_state, target_state, CANDIDATE_FACTOR * cfg.new_tokens)
    if not cands:
        raise StageError(
            "tokenizer: the target BPE proposes no token the base tokenizer lacks", hint="use tokenizer.method: keep"
        )

    sample, size = [], 0
    for t in train_texts:
        sample.append(t)
        size += len(t)
        if size >= SAMPLE_CHARS:
            break
    scratch = out / ".candidates"
    trial = _tokenizer_from_state(base, with_merges(base_state, cands), scratch)
    id_to_token = {trial.convert_tokens_to_ids(new): new for _, _, new in cands}
    usage: Counter = Counter()
    for ids in trial(sample, add_special_tokens=False)["input_ids"]:
        usage.update(id_to_token[i] for i in ids if i in id_to_token)
    shutil.rmtree(scratch)

    chosen = select_merges(cands, usage, cfg.new_tokens)
    unused = sum(1 for _, _, new in cands if usage[new] == 0)
    extended = _tokenizer_from_state(base, with_merges(base_state, chosen), out)
    rows = [
        {
            "id": extended.convert_tokens_to_ids(new),
            "token": new,
            "text": extended.convert_tokens_to_string([new]),
            "parts": [a, b],
            "sample_uses": usage[new],
        }
        for a, b, new in chosen
    ]
    with open(out / "new_tokens.tsv", "w", encoding="utf-8") as f:
        f.write("id\ttoken\ttext\tsample_uses\n")
        for r in rows:
            f.write(f"{r['id']}\t{r['token']}\t{r['text']!r}\t{r['sample_uses']}\n")
    log.info(
        "added %d tokens (%d candidates, %d never used because base merges pre-empt them)",
        len(chosen),
        len(cands),
        unused,
    )
    return {
        "requested_new_tokens": cfg.new_tokens,
        "added_tokens": len(chosen),
        "candidates": len(cands),
        "candidates_never_used": unused,
        "target_tokens_not_reachable": dict(not_candidates),
        "new_token_ids": [r["id"] for r in rows],
    }

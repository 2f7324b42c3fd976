"""Method `trim`: keep the special tokens plus every token a set of corpora uses.

Multilingual vocabularies are mostly rows a given language never touches (XLM-R: 250k
tokens); trimming them (Ushio et al., 2023; the MAFT recipe) shrinks the embedding matrix
and the head without changing the model on text inside the kept vocabulary. The
tokenizer is rewritten consistently for its family:

- BPE: a merge survives when its two parts and its result are kept, and every kept token
  keeps the parts it is built from (recursively), so it stays reachable;
- Unigram: the kept pieces keep their scores;
- WordPiece: the kept entries (greedy longest match over a subset that holds the old
  choice picks the same token).

In each case a text whose old tokens were all kept encodes to the same token strings. Ids
are renumbered densely in their old order; the init stage copies the kept rows by token
string, so the trimmed model is the init stage's output.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from langadapt.errors import StageError
from langadapt.tokenizer.bpe import _merge_pair
from langadapt.tokenizer.methods import TOKENIZER_METHODS, MethodInputs
from langadapt.tokenizer.state import (
    alphabet,
    check_extendable,
    family_of,
    special_tokens,
    tokenizer_from_state,
    tokenizer_state,
    vocab_of,
)

log = logging.getLogger(__name__)
BATCH = 1000  # texts encoded at a time while counting


def trim_texts(inp: MethodInputs) -> dict[str, list[str]]:
    """The texts whose tokens are kept, by name: corpus languages (training split) and extra sources."""
    from langadapt.documents import languages, read_texts
    from langadapt.sources.reading import read_source

    cfg = inp.recipe.tokenizer
    target, replay = languages(inp.rd)
    langs = cfg.trim_languages or tuple(lang for lang in (target, replay) if lang)
    texts = {lang: read_texts(inp.rd, lang, "train") for lang in langs}
    for i, src in enumerate(cfg.trim_sources):
        texts[f"trim_sources[{i}]:{src.language}"] = [d.text for d in read_source(src)[0]]
    return texts


def token_counts(tok: Any, texts: list[str]) -> Counter:
    counts: Counter = Counter()
    for i in range(0, len(texts), BATCH):
        for enc in tok.backend_tokenizer.encode_batch(texts[i : i + BATCH], add_special_tokens=False):
            counts.update(enc.ids)
    return counts


def made_by(state: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """For a BPE state: token -> the merges (a, b) that produce it."""
    out: dict[str, list[tuple[str, str]]] = {}
    for m in state["model"]["merges"]:
        a, b = _merge_pair(m)
        out.setdefault(a + b, []).append((a, b))
    return out


def bpe_closure(producers: dict[str, list[tuple[str, str]]], tokens: set[str]) -> set[str]:
    """`tokens` plus, recursively, the parts of every merge that produces one of them."""
    out, stack = set(tokens), list(tokens)
    while stack:
        for a, b in producers.get(stack.pop(), []):
            for part in (a, b):
                if part not in out:
                    out.add(part)
                    stack.append(part)
    return out


def choose(state: dict[str, Any], always: set[str], counts: Counter, min_count: int, cap: int) -> set[str]:
    """Tokens to keep: `always`, then tokens used at least `min_count` times, most used first, up to `cap`."""
    id_to_token = {i: t for t, i in vocab_of(state).items()}
    producers = made_by(state) if state["model"]["type"] == "BPE" else {}
    keep = bpe_closure(producers, always)
    for i, n in counts.most_common():
        if n < min_count:
            break
        token = id_to_token.get(i)
        if token is None or token in keep:
            continue
        extra = bpe_closure(producers, {token}) - keep
        if cap and len(keep) + len(extra) > cap:
            continue
        keep |= extra
    return keep


def restrict(state: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    """A copy of `state` with only `keep`, ids renumbered densely in their old order."""
    state = json.loads(json.dumps(state))
    old = vocab_of(state)
    new_id = {t: i for i, t in enumerate(sorted((t for t in old if t in keep), key=lambda t: old[t]))}
    model = state["model"]
    if model["type"] == "Unigram":
        unk = model["vocab"][model["unk_id"]][0] if model.get("unk_id") is not None else None
        model["vocab"] = [[p, s] for p, s in model["vocab"] if p in new_id]
        if unk is not None:
            model["unk_id"] = new_id[unk]
    else:
        model["vocab"] = {t: new_id[t] for t in sorted(model["vocab"], key=model["vocab"].get) if t in new_id}
    if model["type"] == "BPE":
        as_string = bool(model["merges"]) and isinstance(model["merges"][0], str)
        kept = [(a, b) for a, b in map(_merge_pair, model["merges"]) if a in new_id and b in new_id and a + b in new_id]
        model["merges"] = [f"{a} {b}" if as_string else [a, b] for a, b in kept]
    state["added_tokens"] = [{**t, "id": new_id[t["content"]]} for t in state.get("added_tokens", [])]
    _remap_ids(state.get("post_processor"), new_id)
    return state


def _remap_ids(node: Any, new_id: dict[str, int]) -> None:
    """Point post-processor special-token ids (Template, Roberta, Bert processing) at the new ids."""
    if isinstance(node, list):
        for v in node:
            _remap_ids(v, new_id)
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("tokens"), list) and isinstance(node.get("ids"), list):
        node["ids"] = [new_id[t] for t in node["tokens"]]
    for key in ("sep", "cls"):
        pair = node.get(key)
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str):
            node[key] = [pair[0], new_id[pair[0]]]
    for v in node.values():
        if isinstance(v, (dict, list)):
            _remap_ids(v, new_id)


@TOKENIZER_METHODS.register(
    "trim", help="keep special tokens and the tokens the corpus uses (above a count); the model shrinks to match"
)
def trim(inp: MethodInputs) -> dict[str, Any]:
    cfg = inp.recipe.tokenizer
    check_extendable(inp.base, cfg)
    state = tokenizer_state(inp.base)
    texts = trim_texts(inp)
    counts: Counter = Counter()
    for t in texts.values():
        counts.update(token_counts(inp.base, t))
    specials = special_tokens(inp.base)
    always = specials | {t["content"] for t in state.get("added_tokens", [])}
    if cfg.trim_keep_alphabet:
        always |= alphabet(state)
    keep = choose(state, always, counts, cfg.trim_min_count, cfg.trim_vocab_size)
    lost = specials - keep
    if lost:  # cannot happen when check_extendable passed; guards the promise that specials survive
        raise StageError(f"tokenizer: trimming would drop special tokens {sorted(lost)}")
    tok = tokenizer_from_state(inp.base, restrict(state, keep), inp.out)
    used = sum(1 for n in counts.values() if n >= cfg.trim_min_count)
    log.info("trimmed %d tokens to %d (%d used in the corpus)", len(inp.base), len(tok), used)
    return {
        "family": family_of(state),
        "requested_new_tokens": 0,
        "added_tokens": 0,
        "new_token_ids": [],
        "kept_tokens": len(tok),
        "removed_tokens": len(inp.base) - len(tok),
        "tokens_used_in_corpus": used,
        "trim_texts": {name: len(t) for name, t in texts.items()},
    }

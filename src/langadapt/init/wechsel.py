"""WECHSEL (Minixhofer et al., 2022): new rows from the nearest source tokens across languages.

Word vectors are trained on source-language text (the replay corpus, plus the source side
of parallel text) and on the target corpus; a bilingual dictionary aligns the two spaces
with an orthogonal map (Procrustes), fitted as the paper does on the raw word vectors of
the dictionary pairs, in float64. Every old token and every new token gets a vector from
its spelling (fastText composes it from character n-grams; the spelling is the token's
exact text, see `tokens.surface`), the old ones mapped into the target space. A new
token's row is a temperature softmax over its k most similar old tokens by cosine
similarity. Tokens whose spelling has no vector fall back to FVT (the paper samples them
from the old rows' normal).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.errors import ConfigError, InputError
from langadapt.init import align
from langadapt.init.focus import nearest
from langadapt.init.methods import (
    INIT_METHODS,
    InitContext,
    InitInputs,
    InitRows,
    Mixture,
    mixture_rows,
    pieces_mixture,
    replace_rows,
)
from langadapt.init.tokens import surfaces
from langadapt.init.vectors import Space, word_space

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
MIN_PAIRS = 20  # fewer usable dictionary pairs cannot fix an orthogonal map in any useful way


def dictionary(ctx: InitContext, source: Space, target: Space) -> align.Dictionary:
    """The recipe's dictionary file, else one induced from its parallel text."""
    c = ctx.config
    if c.dictionary:
        pairs = align.read_dictionary(Path(c.dictionary).expanduser())
        pairs = align.orient(pairs, set(source.keys), set(target.keys))
        return align.Dictionary(pairs, f"file {Path(c.dictionary).name}", {"pairs": len(pairs)})
    if c.parallel_source is None or c.parallel_target is None:
        raise ConfigError(["init.dictionary: wechsel needs a dictionary or parallel text (see validate --explain)"])
    src, tgt, pair_stats = _parallel(ctx)
    pairs, stats = align.induce(src, tgt, ctx.cache)
    origin = f"induced with eflomal from {c.parallel_source.path} / {c.parallel_target.path}"
    return align.Dictionary(pairs, origin, {**pair_stats, **stats})


def _parallel(ctx: InitContext) -> tuple[list[str], list[str], dict[str, int]]:
    c = ctx.config
    assert c.parallel_source is not None and c.parallel_target is not None
    return ctx.once("parallel", lambda: align.parallel_texts(c.parallel_source, c.parallel_target))


def procrustes(x: "np.ndarray", y: "np.ndarray") -> "np.ndarray":
    """The orthogonal W minimising |xW - y| (Schönemann 1966), computed in float64."""
    import numpy as np

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    u, _, vt = np.linalg.svd(x.T @ y)
    return u @ vt


@dataclass
class Aligned:
    """The two languages' token vectors in the target space (float64)."""

    old: "np.ndarray"  # (old vocab, d) each old token's surface vector, mapped by `map`; zeros where it has none
    old_ok: "np.ndarray"  # (old vocab,) bool: the old token has a surface vector (a candidate neighbour)
    new: dict[str, "np.ndarray"]  # new-vocabulary token -> its surface vector in the target space
    map: "np.ndarray"  # (d, d) the orthogonal map from the source word space to the target one
    report: dict[str, Any]


def aligned_spaces(ctx: InitContext) -> Aligned:
    """Old-token vectors mapped into the target space, new-token vectors, and the dictionary used.

    As WECHSEL does: the orthogonal map is fitted on the raw word vectors of the dictionary
    pairs (neither normalised nor centred), and the source-language token vectors are mapped
    by it; cosine similarity between the mapped vectors then picks the neighbours. Float64
    throughout, since the cross-covariance of a few hundred pairs can be ill-conditioned.
    """
    import numpy as np

    c = ctx.config
    old_keys = [t for t, _ in sorted(ctx.old_tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    new_keys = [t for t, _ in sorted(ctx.new_tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    old_surfaces = surfaces(ctx.old_tokenizer, old_keys)
    new_surfaces = surfaces(ctx.new_tokenizer, new_keys)
    source_texts = list(ctx.source_texts())
    if c.parallel_source is not None and c.parallel_target is not None:
        source_texts = list(dict.fromkeys(source_texts + _parallel(ctx)[0]))  # the replay text may be the same
    if not source_texts:
        raise InputError("wechsel found no source-language text", hint="set corpus.replay or init.parallel_source")
    dim, epochs = c.vector_dim, c.vector_epochs
    src = word_space(ctx.cache, source_texts, dim, epochs, ctx.seed, "source-words", old_surfaces)
    tgt = word_space(ctx.cache, ctx.target_texts(), dim, epochs, ctx.seed, "target-words", new_surfaces)
    d = dictionary(ctx, src, tgt)
    si, ti = src.index(), tgt.index()
    usable = [(si[a], ti[b]) for a, b in d.pairs if a in si and b in ti and src.trained[si[a]] and tgt.trained[ti[b]]]
    usable = list(dict.fromkeys(usable))
    if len(usable) < MIN_PAIRS:
        raise InputError(
            f"only {len(usable)} dictionary pairs ({d.origin}) have both words in the corpora; at least {MIN_PAIRS} "
            "are needed to align the two languages",
            hint="use a larger dictionary or more parallel text, or check that it pairs the replay and target languages",
        )
    src_all = np.asarray(src.vectors, dtype=np.float64)
    tgt_all = np.asarray(tgt.vectors, dtype=np.float64)
    w = procrustes(src_all[[a for a, _ in usable]], tgt_all[[b for _, b in usable]])
    mapped = src_all @ w
    old_vecs = np.stack([mapped[si[s]] if s in si else np.zeros(mapped.shape[1]) for s in old_surfaces])
    new_vecs = {k: tgt_all[ti[s]] for k, s in zip(new_keys, new_surfaces) if s in ti}
    old_ok = np.array([bool(s) and s in si for s in old_surfaces])
    log.info("wechsel: %d dictionary pairs (%s) aligned the spaces", len(usable), d.origin)
    report = {"dictionary": d.origin, "dictionary_pairs": len(d.pairs), "pairs_used": len(usable), **d.stats}
    # the (source word, target word) pairs that aligned the spaces: train.codeswitch_dictionary: init reads them
    report["word_pairs"] = list(
        dict.fromkeys((a, b) for a, b in d.pairs if a in si and b in ti and src.trained[si[a]] and tgt.trained[ti[b]])
    )
    return Aligned(old_vecs, old_ok, new_vecs, w, report)


def wechsel_mixture(x: InitInputs, spaces: Aligned) -> Mixture:
    """Softmax with temperature over each new token's k most similar old tokens; FVT where it has no vector."""
    import numpy as np
    import torch

    ctx = x.need_context("wechsel")
    candidates = torch.from_numpy(np.nonzero(spaces.old_ok)[0]).long()
    old = torch.from_numpy(spaces.old[candidates.numpy()]).double()
    have = [i for i, t in enumerate(x.tokens) if t in spaces.new and np.any(spaces.new[t])]
    mix = pieces_mixture(x.pieces)
    if not have:
        return mix
    queries = torch.from_numpy(np.stack([spaces.new[x.tokens[i]] for i in have])).double()
    sims, pos = nearest(queries, old, ctx.config.neighbours, ctx.device)
    weights = torch.softmax(sims / ctx.config.temperature, dim=1)
    return replace_rows(mix, have, [candidates[p] for p in pos], list(weights), "wechsel")


@INIT_METHODS.register(
    "wechsel",
    help="softmax over the nearest old tokens across languages, fastText spaces aligned by a bilingual dictionary "
    "(a file, or induced from parallel text) with an orthogonal map fitted on the raw word vectors, as the paper "
    "does (Minixhofer et al. 2022); needs the init extra",
)
def init_wechsel(x: InitInputs) -> InitRows:
    if x.mixture is not None:
        return mixture_rows(x, x.mixture)
    spaces = aligned_spaces(x.need_context("wechsel"))
    rows = mixture_rows(x, wechsel_mixture(x, spaces))
    rows.report = spaces.report
    return rows

"""The `tokenizer` section of a recipe, and its checks (every problem reported at validation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from langadapt.config import SourceConfig, opt

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

TRANSLIT_INIT = ("min", "mean", "max")
NEEDS_TARGET = ("extend", "replace")  # methods that train a target tokenizer on the corpus


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    method: str = opt(
        "extend",
        "extend: add the most useful target-language tokens; replace: a target tokenizer trained on the corpus; "
        "trim: keep only the tokens the corpus uses; translit: add romanised forms of the vocabulary; keep: "
        "unchanged (see `langadapt list tokenizer-methods`)",
    )
    new_tokens: int = opt(2000, "extend: number of new tokens to add")
    target_vocab_size: int = opt(
        8000, "extend: size of the target-language tokenizer that proposes new tokens; replace: the new vocabulary size"
    )
    min_frequency: int = opt(2, "extend/replace (BPE, WordPiece): a token must occur at least this often")
    trim_languages: tuple[str, ...] = opt(
        (), "trim: corpus languages whose training text decides what is kept (default: target and replay)"
    )
    trim_sources: tuple[SourceConfig, ...] = opt((), "trim: further text whose tokens are kept too")
    trim_min_count: int = opt(1, "trim: keep a token seen at least this often in that text")
    trim_vocab_size: int = opt(
        0,
        "trim: keep at most this many tokens in all (0: no limit); special tokens (and, with trim_keep_alphabet, "
        "single characters) first, then the most frequent",
    )
    trim_keep_alphabet: bool = opt(
        True, "trim: keep every single-character (or byte) token, so unseen words still spell out instead of UNK"
    )
    translit_init: str = opt(
        "max", "translit: hint for the init stage: a romanised token's row is the min, mean or max of its sources"
    )
    parity_target: SourceConfig | None = opt(
        None, "parallel text in the target language for the parity metric; documents pair with parity_reference by id"
    )
    parity_reference: SourceConfig | None = opt(
        None, "its translation in the reference language (e.g. builtin:bible-eng beside builtin:bible-nya)"
    )
    parity_max_pairs: int = opt(2000, "parity: use at most this many aligned documents")


def check(recipe: "Recipe") -> list[str]:
    """Problems with the tokenizer section."""
    from langadapt.sources import source_problems
    from langadapt.tokenizer.methods import TOKENIZER_METHODS

    t, p = recipe.tokenizer, []
    if t.method not in TOKENIZER_METHODS:
        p.append(f"tokenizer.method: {TOKENIZER_METHODS.unknown_message(t.method)}")
    if t.method == "extend" and t.new_tokens < 1:
        p.append("tokenizer.new_tokens: must be >= 1 with method 'extend'")
    if t.method in NEEDS_TARGET and t.target_vocab_size < 300:
        p.append("tokenizer.target_vocab_size: must be >= 300 (the byte alphabet alone is 256)")
    if t.min_frequency < 1:
        p.append("tokenizer.min_frequency: must be >= 1")
    if t.trim_min_count < 1:
        p.append("tokenizer.trim_min_count: must be >= 1")
    if t.trim_vocab_size < 0:
        p.append("tokenizer.trim_vocab_size: must be >= 0 (0: no limit)")
    if t.method == "trim":
        p.extend(_trim_problems(recipe))
    for i, src in enumerate(t.trim_sources):
        p.extend(source_problems(src, f"tokenizer.trim_sources[{i}]"))
    if t.translit_init not in TRANSLIT_INIT:
        p.append(f"tokenizer.translit_init: '{t.translit_init}' is not one of {', '.join(TRANSLIT_INIT)}")
    if t.method == "translit":
        import importlib.util

        if importlib.util.find_spec("uroman") is None:
            p.append("tokenizer.method: translit romanises with uroman: pip install uroman==1.3.1.1")
    if (t.parity_target is None) != (t.parity_reference is None):
        p.append("tokenizer.parity_target / tokenizer.parity_reference: give both sides of the parallel text")
    for key, src in (("parity_target", t.parity_target), ("parity_reference", t.parity_reference)):
        if src is not None:
            p.extend(source_problems(src, f"tokenizer.{key}"))
    if t.parity_target is not None and t.parity_target.language != recipe.corpus.target.language:
        p.append(
            f"tokenizer.parity_target.language: '{t.parity_target.language}' should be the corpus target language "
            f"'{recipe.corpus.target.language}'"
        )
    if t.parity_max_pairs < 1:
        p.append("tokenizer.parity_max_pairs: must be >= 1")
    return p


def _trim_problems(recipe: "Recipe") -> list[str]:
    """Trim options checked against the corpus languages and, when it is on disk, the base vocabulary."""
    t, p = recipe.tokenizer, []
    known = {recipe.corpus.target.language} | ({recipe.corpus.replay.language} if recipe.corpus.replay else set())
    for lang in t.trim_languages:
        if lang not in known:
            p.append(f"tokenizer.trim_languages: '{lang}' is not a corpus language ({', '.join(sorted(known))})")
    folder = _local_tokenizer_folder(recipe)
    if folder is not None and t.trim_vocab_size:
        from langadapt.errors import ConfigError
        from langadapt.models import load_tokenizer
        from langadapt.tokenizer.state import check_extendable

        try:
            check_extendable(load_tokenizer(str(folder)), t)
        except ConfigError as e:
            p.extend(e.problems)
    return p


def _local_tokenizer_folder(recipe: "Recipe") -> Path | None:
    """The base tokenizer's folder when it is already on disk (local folder or imported builtin), else None.

    Hub models are checked before any work instead (`pipeline.preflight`), where loading is allowed.
    """
    from langadapt.models import cache_dir, looks_like_local_path

    base = recipe.model.base
    if base.startswith("builtin:"):
        folder = cache_dir() / "models" / base[len("builtin:") :]
    elif looks_like_local_path(base) and not recipe.model.gguf_file:
        folder = Path(base).expanduser()
    else:
        return None
    return folder if (folder / "tokenizer.json").is_file() else None

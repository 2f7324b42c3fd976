"""The adapted tokenizer as GGUF metadata, and the check that a GGUF file tokenises as it does.

What llama.cpp gets (`tokenizer.ggml.*`) comes from the adapted `tokenizer.json` alone (a
`tokenizer.model` beside it may be the base's stale SentencePiece model and is never read):

- byte-level BPE (`gpt2`): every token by id, its type, the merges in rank order, the
  special ids and whether a BOS is prepended. New tokens that the extension added as BPE
  merges are ordinary tokens (type NORMAL) that llama.cpp builds by merging, exactly as the
  HF tokenizer does; only what the HF tokenizer itself matches as a whole string (its added
  tokens) becomes a CONTROL (special) or USER_DEFINED token.
- SentencePiece-style BPE (`llama`: '▁' for spaces, `<0xNN>` byte fallback; Llama 2,
  Mistral): llama.cpp merges by token score instead of a merge list, so each token built by
  a merge scores minus that merge's rank (earlier merges win, the extension's appended
  merges come last, as in the HF tokenizer); byte tokens are type BYTE.
- the pre-tokenizer identity (`tokenizer.ggml.pre`, which picks llama.cpp's split regex)
  comes from the base model, never from the extended vocabulary: from the base GGUF file
  when the base was one, else by matching the base `tokenizer.json`'s pre-tokenizer to the
  llama.cpp name that applies the same split (`data/gguf_pre.json`).
- whether llama.cpp prepends a BOS: a base GGUF file's own setting (transformers' import of
  such a file may add a BOS the original never had); else what the adapted tokenizer does.

`parity` reads the written file back with every reader available (transformers' GGUF
tokenizer, and llama.cpp through llama-cpp-python when installed) and compares token ids
with the adapted HF tokenizer's on held-out text; the first difference is an error.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from langadapt.config import ModelConfig
from langadapt.errors import InputError, LangAdaptError
from langadapt.models.importers import gguf_tokenizer
from langadapt.models.loading import base_gguf_file, load_tokenizer, resolve_base

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# tokenizer.ggml.token_type values (gguf.TokenType)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")
Reader = Callable[[list[str]], list[list[int]]]


@dataclass(frozen=True)
class Vocab:
    """Everything `tokenizer.ggml.*` holds for a byte-level BPE tokenizer."""

    model: str  # tokenizer.ggml.model: gpt2 (byte-level BPE) or llama (SentencePiece-style BPE)
    tokens: list[str]
    types: list[int]
    merges: list[str]  # gpt2
    scores: list[float]  # llama
    add_space_prefix: bool  # llama: a '▁' before the text
    special: dict[str, int]  # bos / eos / pad / unk -> id
    add_bos: bool
    add_eos: bool
    chat_template: str | None
    pre: str
    pre_source: str  # where the pre-tokenizer identity was read


@dataclass(frozen=True)
class BaseTokenizer:
    """What the GGUF tokenizer takes from the base model rather than from the adapted tokenizer."""

    pre: str  # tokenizer.ggml.pre
    source: str  # where it was read
    add_bos: bool | None = None  # a base GGUF file's tokenizer.ggml.add_bos_token; None: as the adapted tokenizer does


def tokenizer_json(tok: "PreTrainedTokenizerBase") -> dict[str, Any]:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise InputError(
            f"the adapted tokenizer ({type(tok).__name__}) has no tokenizer.json form, so its vocabulary cannot be read",
            hint="export --format merged (a transformers folder) instead",
        )
    return json.loads(backend.to_str())


def tokenizer_model(tok: "PreTrainedTokenizerBase") -> str | None:
    """The GGUF tokenizer model that holds this tokenizer: gpt2, llama, or None (none of them)."""
    data = tokenizer_json(tok)
    model = data.get("model", {})
    if model.get("type") != "BPE":
        return None
    # byte_fallback is inert under a ByteLevel pre-tokenizer (every byte is a token already)
    if _find(data.get("pre_tokenizer"), "ByteLevel"):
        return "gpt2"
    spaces = _find(data.get("pre_tokenizer"), "Metaspace") or _find(data.get("normalizer"), "Replace")
    return "llama" if model.get("byte_fallback") and spaces else None


def tokenizer_problems(tok: "PreTrainedTokenizerBase") -> list[str]:
    """Why the GGUF export cannot hold this tokenizer (empty: it can)."""
    if tokenizer_model(tok) is None:
        kind = tokenizer_json(tok).get("model", {}).get("type", "unknown")
        return [
            f"the adapted tokenizer ({kind}) is neither byte-level BPE (GPT-2, Llama 3, SmolLM, Qwen2) nor "
            "SentencePiece-style BPE with byte fallback (Llama 2, Mistral), the two the GGUF export writes"
        ]
    return []


def _find(node: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The first step of type `kind` in a normalizer or pre-tokenizer (or a Sequence of them)."""
    if not node:
        return None
    if node.get("type") == "Sequence":
        steps = node.get("pretokenizers", node.get("normalizers", []))
        return next((found for step in steps if (found := _find(step, kind))), None)
    return node if node.get("type") == kind else None


def _space_prefix(data: dict[str, Any]) -> bool:
    """Whether the tokenizer puts a '▁' before the text (a Metaspace that prepends, or a Prepend normalizer)."""
    meta = _find(data.get("pre_tokenizer"), "Metaspace")
    if meta is not None:
        return meta.get("prepend_scheme", "always" if meta.get("add_prefix_space", True) else "never") != "never"
    return _find(data.get("normalizer"), "Prepend") is not None


def canonical(pre: Any) -> Any:
    """A pre-tokenizer without what only changes offsets (`trim_offsets`); a one-step Sequence is its step."""
    if isinstance(pre, dict):
        out = {k: canonical(v) for k, v in pre.items() if k != "trim_offsets"}
        if out.get("type") == "Sequence" and len(out.get("pretokenizers", [])) == 1:
            return out["pretokenizers"][0]
        return out
    if isinstance(pre, list):
        return [canonical(p) for p in pre]
    return pre


def known_pre_tokenizers() -> list[dict[str, Any]]:
    text = resources.files("langadapt").joinpath("data/gguf_pre.json").read_text(encoding="utf-8")
    return json.loads(text)["known"]


def pre_name(pre_tokenizer: Any) -> str | None:
    """The llama.cpp pre-tokenizer name whose split is this tokenizer.json pre-tokenizer's, or None."""
    want = canonical(pre_tokenizer)
    return next((k["pre"] for k in known_pre_tokenizers() if canonical(k["pre_tokenizer"]) == want), None)


def base_tokenizer(cfg: ModelConfig, adapted: "PreTrainedTokenizerBase") -> BaseTokenizer:
    """The pre-tokenizer identity (and a GGUF base's BOS setting) of the run's base model.

    The adapted tokenizer must split text as the base's does (the extension adds tokens,
    never a new pre-tokenizer); otherwise the base's identity would not describe it.
    """
    gguf_file = base_gguf_file(cfg)
    if gguf_file is not None:
        base_tok = gguf_tokenizer(gguf_file.parent, gguf_file.name)
        pre = _gguf_field(gguf_file, "tokenizer.ggml.pre", "default")  # llama.cpp's reading of a file without it
        base = BaseTokenizer(
            pre,
            f"the base GGUF file {gguf_file.name}",
            bool(_gguf_field(gguf_file, "tokenizer.ggml.add_bos_token", True)),
        )
    else:
        base_tok = load_tokenizer(resolve_base(cfg), cfg.revision)
        pre_tokenizer = tokenizer_json(base_tok).get("pre_tokenizer")
        found = pre_name(pre_tokenizer) if tokenizer_model(adapted) == "gpt2" else ""
        if found is None:
            names = ", ".join(k["pre"] for k in known_pre_tokenizers())
            raise InputError(
                f"cannot tell which llama.cpp pre-tokenizer the base {cfg.base} uses: its tokenizer.json "
                f"pre-tokenizer {json.dumps(canonical(pre_tokenizer))[:300]} is none of the known ones ({names})",
                hint="export --format merged and convert with llama.cpp's own converter, which knows more tokenizers",
            )
        base = BaseTokenizer(
            found,
            f"the base tokenizer.json's pre-tokenizer (the split llama.cpp calls '{found}')"
            if found
            else "none: SentencePiece-style tokenizers have no pre-tokenizer in llama.cpp",
        )
    base_split = canonical(tokenizer_json(base_tok).get("pre_tokenizer"))
    if canonical(tokenizer_json(adapted).get("pre_tokenizer")) != base_split:
        raise InputError(
            "the adapted tokenizer splits text differently from the base's (its pre-tokenizer changed), "
            "so the base's llama.cpp pre-tokenizer identity does not describe it",
            hint="export --format merged; the GGUF export needs the base's pre-tokenizer",
        )
    return base


def _gguf_field(path: Path, key: str, default: Any) -> Any:
    """A metadata value of a GGUF file, or what llama.cpp assumes when the file lacks it."""
    import gguf

    field = gguf.GGUFReader(path).fields.get(key)
    return field.contents() if field is not None else default


def build_vocab(tok: "PreTrainedTokenizerBase", n_vocab: int, base: BaseTokenizer) -> Vocab:
    """The `tokenizer.ggml.*` content of the tokenizer, padded to the model's `n_vocab` rows."""
    data = tokenizer_json(tok)
    model = data["model"]
    kind = tokenizer_model(tok) or "gpt2"
    by_id: dict[int, tuple[str, int]] = {
        i: (t, BYTE if kind == "llama" and _BYTE_TOKEN.fullmatch(t) else NORMAL) for t, i in model["vocab"].items()
    }
    for added in data.get("added_tokens", []):
        # the HF tokenizer matches added tokens as whole strings before BPE; llama.cpp does the
        # same for CONTROL and USER_DEFINED tokens, whose text is the raw string, not byte-level
        by_id[added["id"]] = (added["content"], CONTROL if added.get("special") else USER_DEFINED)
    if max(by_id) >= n_vocab:
        raise InputError(f"the tokenizer has ids up to {max(by_id)} but the model only {n_vocab} embedding rows")
    tokens, types = [], []
    for i in range(n_vocab):
        text, token_type = by_id.get(i, (f"[PAD{i}]", UNUSED))  # rows no token uses (a vocabulary rounded up)
        tokens.append(text)
        types.append(token_type)
    pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in model.get("merges", [])]
    merges = [" ".join(m) for m in pairs]
    rank: dict[str, int] = {}
    for r, (a, b) in enumerate(pairs):
        rank.setdefault(a + b, r)
    # single characters score below every merged token, as in SentencePiece's own BPE models;
    # special and byte tokens 0 (llama.cpp never looks their scores up while merging)
    last = -float(len(pairs) + 1)
    scores = (
        [-float(rank[t]) if t in rank else (last if k == NORMAL else 0.0) for t, k in zip(tokens, types)]
        if kind == "llama"
        else []
    )
    if kind == "llama" and isinstance(getattr(tok, "unk_token_id", None), int):
        types[tok.unk_token_id] = UNKNOWN
    special = {
        name: getattr(tok, f"{name}_token_id")
        for name in ("bos", "eos", "pad", "unk")
        if isinstance(getattr(tok, f"{name}_token_id", None), int)
    }
    plain, full = tok("a", add_special_tokens=False)["input_ids"], tok("a")["input_ids"]
    add_bos = (len(full) > len(plain) and full[0] == special.get("bos")) if base.add_bos is None else base.add_bos
    add_eos = len(full) > len(plain) and full[-1] == special.get("eos")
    template = tok.chat_template if isinstance(getattr(tok, "chat_template", None), str) else None
    return Vocab(
        kind,
        tokens,
        types,
        merges if kind == "gpt2" else [],
        scores,
        kind == "llama" and _space_prefix(data),
        special,
        add_bos,
        add_eos,
        template,
        base.pre,
        base.source,
    )


def write_vocab(writer: Any, vocab: Vocab) -> None:
    """The tokenizer keys of a GGUF file (`writer` is a gguf.GGUFWriter)."""
    writer.add_tokenizer_model(vocab.model)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.model == "gpt2":
        writer.add_tokenizer_pre(vocab.pre)
        writer.add_token_merges(vocab.merges)
    else:
        writer.add_token_scores(vocab.scores)
        writer.add_add_space_prefix(vocab.add_space_prefix)
    for name, token_id in vocab.special.items():
        getattr(writer, {"pad": "add_pad_token_id", "unk": "add_unk_token_id"}.get(name, f"add_{name}_token_id"))(
            token_id
        )
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


# -- parity ---------------------------------------------------------------------------------


def readers(path: Path) -> tuple[dict[str, Reader], dict[str, str]]:
    """Independent readers of the GGUF file's tokenizer (transformers', and llama.cpp's when installed),
    and why any could not read it. llama.cpp failing to load the file is an error of its own."""
    from transformers import AutoTokenizer

    out: dict[str, Reader] = {}
    unreadable: dict[str, str] = {}
    try:
        if str(_gguf_field(path, "general.architecture", "")).startswith("gemma"):
            raise LookupError(
                "it reads a Gemma file's vocabulary as a Unigram model over the scores, not as llama.cpp's merges"
            )
        if USER_DEFINED in _gguf_field(path, "tokenizer.ggml.token_type", []):
            raise LookupError("it leaves out user-defined (added, non-special) tokens, which llama.cpp matches whole")
        hf = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        out["transformers (GGUF tokenizer)"] = lambda texts: hf(texts, add_special_tokens=False)["input_ids"]
    except Exception as e:  # its converters know fewer files than llama.cpp (e.g. a name with 'mistral' in it)
        unreadable["transformers (GGUF tokenizer)"] = (
            f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        )
    if importlib.util.find_spec("llama_cpp") is not None:
        from llama_cpp import Llama

        try:
            llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        except ValueError as e:  # llama.cpp says why on stderr (an unknown pre-tokenizer name, a bad key)
            raise LangAdaptError(f"llama.cpp cannot load the written GGUF file's vocabulary: {e}", hint=_HINT) from None
        out["llama.cpp (llama-cpp-python)"] = lambda texts: [
            llm.tokenize(t.encode("utf-8"), add_bos=False, special=False) for t in texts
        ]
    if not out:
        raise LangAdaptError(
            f"no reader could read the GGUF file's tokenizer back to check it ({'; '.join(unreadable.values())})",
            hint="install llama-cpp-python (pip install langadapt[gguf]); " + _HINT,
        )
    return out, unreadable


def parity(
    path: Path, tok: "PreTrainedTokenizerBase", sets: dict[str, list[str]], use: dict[str, Reader] | None = None
) -> dict[str, Any]:
    """Token ids of every text under every reader of the GGUF file against the adapted tokenizer's.

    Returns what was compared (readers, texts and tokens per set); raises at the first text
    whose ids differ, naming the reader, the text and both id sequences from the difference on.
    """
    unreadable: dict[str, str] = {}
    if use is None:
        use, unreadable = readers(path)
    report: dict[str, Any] = {"readers": list(use), "unreadable": unreadable, "sets": {}}
    for name, texts in sets.items():
        want = tok(texts, add_special_tokens=False)["input_ids"]
        for reader, read in use.items():
            got = read(texts)
            for i, (a, b) in enumerate(zip(want, got)):
                if list(a) != list(b):
                    raise LangAdaptError(_difference(reader, name, i, texts[i], list(a), list(b), tok), hint=_HINT)
        report["sets"][name] = {"texts": len(texts), "tokens": sum(len(a) for a in want), "identical": True}
    return report


_HINT = "nothing was published; export --format merged gives the transformers model, which is unaffected"


def _difference(reader: str, name: str, i: int, text: str, want: list[int], got: list[int], tok: Any) -> str:
    at = next((k for k, (x, y) in enumerate(zip(want, got)) if x != y), min(len(want), len(got)))
    begin = max(at - 3, 0)
    chars = len(tok.decode(want[:begin]))
    excerpt = text[chars : chars + 80]
    return (
        f"the GGUF file tokenises differently from the adapted tokenizer ({reader}): {name} text {i + 1}, "
        f"token {at + 1} of {len(want)}, at {excerpt!r}\n"
        f"  adapted tokenizer ids from token {begin + 1}: {want[begin : begin + 12]}\n"
        f"  GGUF ({reader}) ids from token {begin + 1}: {got[begin : begin + 12]}"
    )

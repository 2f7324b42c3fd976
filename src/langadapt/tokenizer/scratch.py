"""The scratch-tokenizer stage (`scratch-tokenizer/`): the from-scratch model's tokenizer, trained on the target text.

`target`: a tokenizer of the base's family (normaliser, pre-tokeniser, special tokens) trained on
the target's cleaned training text, exactly as `tokenizer.method: replace` trains one; Goldfish
trains a monolingual tokenizer per language likewise. `bytes`: MonoByte's vocabulary (Abdaoui et
al. 2022): one token per UTF-8 byte value, 256 of them, after the base's special tokens; nothing
to train, no unknown token possible.

A stage of its own, run only when the recipe asks for a from-scratch model (train.method scratch,
eval.reference scratch), so that asking for one leaves the adaptation's own stages (tokenizer,
init, train) and their fingerprints as they were: a reference added to a finished run trains
the reference alone. It writes the tokenizer and `metrics.json` (its size and its metrics on the
target's held-out text, beside the tokenizer stage's).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.config import scratch_requested
from langadapt.documents import languages, read_texts
from langadapt.models.loading import load_tokenizer, resolve_base
from langadapt.rundir import RunDir, StageContext, write_json
from langadapt.stage import run_stage
from langadapt.tokenizer.metrics import tokenizer_metrics
from langadapt.tokenizer.replace import train_replacement

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "scratch-tokenizer"
GOLDFISH_VOCAB = 50_000  # Goldfish's SentencePiece vocabulary per language


def scratch_tokenizer(
    base: "PreTrainedTokenizerBase", texts: list[str], recipe: "Recipe", out: Path
) -> tuple["PreTrainedTokenizerBase", dict[str, Any]]:
    """The tokenizer train.scratch.vocabulary asks for, saved in `out`, and what it is (for metrics.json)."""
    cfg = recipe.train.scratch
    if cfg.vocabulary == "bytes":
        tok = byte_tokenizer(base, out)
        return tok, {"vocabulary": "bytes", "vocab_size": len(tok)}
    size = cfg.vocab_size or GOLDFISH_VOCAB
    tok = train_replacement(base, texts, size, recipe.tokenizer.min_frequency, out)
    return tok, {"vocabulary": "target", "requested_vocab_size": size, "vocab_size": len(tok)}


def _frame(base: "PreTrainedTokenizerBase") -> tuple[list[str], list[str]]:
    """The special tokens the base puts before and after a single text (BERT: [CLS] ... [SEP]; Llama: <s>)."""
    ids = base("a", add_special_tokens=True)["input_ids"]
    bare = base("a", add_special_tokens=False)["input_ids"]
    special = set(base.all_special_ids)
    start = ids.index(bare[0]) if bare and bare[0] in ids else 0
    lead = [base.convert_ids_to_tokens(i) for i in ids[:start] if i in special]
    tail = [base.convert_ids_to_tokens(i) for i in ids[start + len(bare) :] if i in special]
    return lead, tail


def byte_tokenizer(base: "PreTrainedTokenizerBase", out: Path) -> "PreTrainedTokenizerBase":
    """The base's special tokens (ids 0..k-1, in the base's id order), then the 256 byte values.

    Byte-level encoding (GPT-2's byte-to-character map) with no merges: every UTF-8 byte of a
    text is one token. A text is framed with the special tokens the base frames it with.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = sorted(set(base.all_special_tokens), key=base.convert_tokens_to_ids)
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in pre_tokenizers.ByteLevel.alphabet():
        vocab.setdefault(ch, len(vocab))
    if len(vocab) != len(specials) + 256:
        raise ValueError("byte_tokenizer: a special token of the base collides with a byte character")
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(specials)
    lead, tail = _frame(base)
    if lead or tail:
        single = " ".join([*lead, "$A", *tail])
        pair = " ".join([*lead, "$A", *tail, "$B:1", *tail])
        tk.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=[(t, vocab[t]) for t in dict.fromkeys(lead + tail)]
        )
    names = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
    kwargs = {n: getattr(base, n) for n in names if getattr(base, n, None)}
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, **kwargs)
    tok.model_max_length = base.model_max_length
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    log.info("byte-level vocabulary: %d special tokens + 256 bytes", len(specials))
    return PreTrainedTokenizerFast.from_pretrained(out)


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    target, _ = languages(rd)
    base = load_tokenizer(resolve_base(recipe.model), recipe.model.revision)
    tok, about = scratch_tokenizer(base, read_texts(rd, target, "train"), recipe, ctx.out)
    about["heldout"] = {target: tokenizer_metrics(tok, read_texts(rd, target, "heldout"))}
    write_json(ctx.out / "metrics.json", about)


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    s = recipe.train.scratch
    return {
        "corpus": rd.fingerprint_of("corpus"),
        "model": recipe.to_dict()["model"],  # the base's tokenizer family and special tokens
        "config": {"vocabulary": s.vocabulary, "vocab_size": s.vocab_size},
        "min_frequency": recipe.tokenizer.min_frequency if s.vocabulary == "target" else None,
    }


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path:
    """The stage, when the recipe trains a from-scratch model; else nothing is done."""
    if not scratch_requested(recipe):
        log.info("[%s] not needed (no train.method scratch, no eval.reference scratch)", NAME)
        return rd.path(NAME)
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)

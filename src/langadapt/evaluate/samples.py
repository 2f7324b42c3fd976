"""Generation samples: the opening of a few held-out documents, continued by every model, greedily.

Figures say how much adaptation helped; samples show what changed. The prompts are a pure
function of the held-out set and `eval.samples`, so every run and every model sees the same
ones: `count` documents spread evenly over the set (document i * n // count), each cut to
its first `prompt_chars` characters at the last space (for scripts written without spaces:
after the last punctuation mark, else at a character that starts no combining sequence).
The text the document goes on with is kept beside them as the reference.

A decoder reads a prompt as it reads every evaluated document, after the document
separator (`models/separator.py`), and continues it greedily (the argmax at every step, no
sampling, no penalties, none of the model's own generation defaults) for at most
`max_new_tokens` tokens, stopping early at an end-of-text token. The separator that starts
the prompt is context, never a reason to stop; generating it (or the tokenizer's eos, or
an eos of the model's generation config) ends the text. Length is in tokens, so a
tokenizer with longer tokens in a language covers more of it. Prompts are continued together,
padded on the left and masked, one forward per step for all of them.

A masked LM has no next-token distribution to continue a text with: it gets no samples,
and the results say why (its predictions are what pseudo bits per byte scores).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langadapt.models.loading import doc_separator_id, max_sequence_length

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ENCODER_REASON = (
    "a masked LM does not continue text: it predicts tokens hidden inside a text from both sides, and those "
    "predictions are what its pseudo bits per byte score"
)
REFERENCE_FACTOR = 2  # the reference shows up to this many times prompt_chars of the text that follows
BATCH = 16  # prompts continued together


@dataclass(frozen=True)
class Prompt:
    set_name: str
    language: str
    document: int  # index of the document in the evaluated set
    text: str
    reference: str  # how the document goes on

    def record(self) -> dict[str, Any]:
        return {"document": self.document, "prompt": self.text, "reference": self.reference}


@dataclass(frozen=True)
class Continuation:
    text: str
    ids: list[int]  # the generated token ids, the stop token included
    prompt_tokens: int  # the separator included
    new_tokens: int  # generated, the stop token included
    stopped_by: str  # the end-of-text token that ended it, or "" when it reached max_new_tokens

    def record(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "stopped_by": self.stopped_by,
        }


def _joins_previous(ch: str) -> bool:
    """Whether a cut before `ch` would split a character sequence (a combining mark, a joiner, a variation selector)."""
    return unicodedata.category(ch).startswith("M") or ch in "\u200c\u200d" or 0xFE00 <= ord(ch) <= 0xFE0F


def _joins_next(ch: str) -> bool:
    """Whether a cut after `ch` would split a syllable: Thai and Lao vowels written before their consonant, a joiner."""
    return "\u0e40" <= ch <= "\u0e44" or "\u0ec0" <= ch <= "\u0ec4" or ch in "\u200c\u200d"


def opening(text: str, limit: int) -> str:
    """At most `limit` characters from the start of `text`, cut at a boundary found in its second half.

    The boundary is the last space (the prompt then ends with a whole word); where there is
    none (Chinese, Japanese, Thai run words together), the point after the last punctuation
    mark; else `limit` itself, moved back so that no combining mark loses its base character and no
    vowel written before its consonant (Thai, Lao) loses the consonant.
    """
    if len(text) <= limit:
        return text.rstrip()
    floor = limit // 2
    for end in range(limit, floor, -1):
        if text[end].isspace() and not text[end - 1].isspace():
            return text[:end]
    for end in range(limit, floor, -1):
        if unicodedata.category(text[end - 1]).startswith("P") and not _joins_previous(text[end]):
            return text[:end]
    end = limit
    while end > 1 and (_joins_previous(text[end]) or _joins_next(text[end - 1])):
        end -= 1
    return text[:end]


def choose_prompts(set_name: str, language: str, texts: list[str], count: int, prompt_chars: int) -> list[Prompt]:
    """`count` prompts from documents spread evenly over `texts` (fewer when the set has fewer documents)."""
    picked = sorted({i * len(texts) // count for i in range(count)}) if count > 0 and texts else []
    out = []
    for i in picked:
        text = texts[i].lstrip()
        prompt = opening(text, prompt_chars)
        if prompt:
            rest = text[len(prompt) :]
            out.append(Prompt(set_name, language, i, prompt, opening(rest, REFERENCE_FACTOR * prompt_chars)))
    return out


def stop_ids(model: "PreTrainedModel", tok: "PreTrainedTokenizerBase") -> dict[int, str]:
    """Token ids that end a continuation: the document separator, the tokenizer's eos, the generation config's eos."""
    ids = {doc_separator_id(tok)}
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(int(i) for i in (configured if isinstance(configured, (list, tuple)) else [configured]) if i is not None)
    return {i: str(tok.convert_ids_to_tokens(i)) for i in sorted(ids)}


def continue_greedily(
    model: "PreTrainedModel", tok: "PreTrainedTokenizerBase", prompts: list[str], max_new_tokens: int
) -> list[Continuation]:
    """The model's greedy continuation of each prompt (read after the document separator), up to an end-of-text
    token, `BATCH` prompts at a time.

    A batch is padded on the left and masked, so each row is its prompt's own greedy decoding
    (position ids follow the mask); one forward per step for the batch instead of one per
    prompt is what keeps the samples cheap, as a small model's step costs reading its weights.
    """
    out = []
    for s in range(0, len(prompts), BATCH):
        out.extend(_continue_batch(model, tok, prompts[s : s + BATCH], max_new_tokens))
    return out


def _continue_batch(
    model: "PreTrainedModel", tok: "PreTrainedTokenizerBase", prompts: list[str], max_new_tokens: int
) -> list[Continuation]:
    import torch
    from transformers import GenerationConfig

    sep = doc_separator_id(tok)
    bodies = tok(prompts, add_special_tokens=False, verbose=False)["input_ids"]
    width = 1 + max(len(b) for b in bodies)
    ids = torch.full((len(bodies), width), sep, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, b in enumerate(bodies):
        ids[i, width - 1 - len(b) :] = torch.tensor([sep, *b], dtype=torch.long)
        mask[i, width - 1 - len(b) :] = 1
    stops = stop_ids(model, tok)
    budget = min(max_new_tokens, max_sequence_length(model.config) - width)
    if budget < 1:
        return [Continuation("", [], 1 + len(b), 0, "") for b in bodies]
    config = GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=budget, eos_token_id=list(stops), pad_token_id=sep
    )
    with torch.no_grad():
        generated = model.generate(
            ids.to(model.device),
            attention_mask=mask.to(model.device),
            generation_config=config,
            use_model_defaults=False,
        )
    out = []
    for i, b in enumerate(bodies):
        new = generated[i, width:].tolist()
        end = next((k for k, t in enumerate(new) if t in stops), None)  # after it, a finished row is padding
        stopped_by = stops[new[end]] if end is not None else ""
        new = new if end is None else new[: end + 1]
        out.append(
            Continuation(_new_text(tok, b, new[:-1] if stopped_by else new), new, 1 + len(b), len(new), stopped_by)
        )
    return out


def _new_text(tok: "PreTrainedTokenizerBase", prompt: list[int], new: list[int]) -> str:
    """What `new` adds to the prompt's text: decoded together, so a tokenizer that marks word starts
    (SentencePiece's '▁') keeps the space a continuation begins with."""
    kw = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
    before, whole = tok.decode(prompt, **kw), tok.decode(prompt + new, **kw)
    return whole[len(before) :] if whole.startswith(before) else tok.decode(new, **kw)

"""The token that separates documents: it starts every document in packed training rows, in bits per
byte and in the decoders' sentence embeddings, so all three see the same thing.

It is the tokenizer's end-of-text token, and never a chat-template token. A model learns to
predict the separator after every document it trains on; a chat-turn token there (the eos of
an instruct tokenizer is often `<|im_end|>` or `<|eot_id|>`, its bos `<|im_start|>`) would
teach it to open or close a chat turn at every document's end, and would leave its own
end-of-document token untrained. The rule, first match wins:

1. eos, unless it is a chat-template token (base Llama-3 `<|end_of_text|>`, Qwen2 and SmolLM2
   `<|endoftext|>`, Gemma `<eos>`, XLM-R `</s>`);
2. a special token named for the end of a text (`<|endoftext|>`, `<|end_of_text|>`, `<eos>`,
   `</s>`): the base model's document end that its instruct tokenizer still carries
   (Qwen2-Instruct, SmolLM2-Instruct, Llama-3-Instruct);
3. sep, which ends a text in encoder pretraining (BERT's `[SEP]`);
4. bos or cls, a document start, for a tokenizer with no end token at all.

A masked LM (train.objective: mlm) never predicts the separator: special tokens are never
masked, and with `packed_attention: document` each packed document is seen alone. Its
documents start instead with the token the tokenizer itself puts first in a single text
(XLM-R `<s>`, BERT `[CLS]`), which is where the encoder's pretraining put it and how the
evaluation's windows start; then cls, bos, sep, eos. An end token there (`</s>`) would
train the encoder on a text format its pretraining never showed it.

A chat-template token is a special token written out in the tokenizer's chat template, or a
turn marker of the common chat formats (`<|im_start|>`, `<|im_end|>`, `<start_of_turn>`,
`<|eot_id|>`, `[INST]`, ...), so a tokenizer that lost its template is still read right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langadapt.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

END_OF_TEXT = re.compile(r"^[<\[]\|?(end_?of_?text|eos|/s)\|?[>\]]$", re.IGNORECASE)
TURN_MARKER = re.compile(
    r"im_start|im_end|start_of_turn|end_of_turn|eot_id|header_id|^\[/?INST\]$|^<\|(system|user|assistant|end)\|>$",
    re.IGNORECASE,
)
_CACHE = "_langadapt_separator"


@dataclass(frozen=True)
class Separator:
    id: int
    token: str
    chosen_as: str  # which rule picked it: eos | end-of-text token | text start | sep | bos | cls

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "token": self.token, "chosen_as": self.chosen_as}


def chat_tokens(tok: "PreTrainedTokenizerBase") -> set[str]:
    """Special tokens that belong to a chat format: written in the chat template, or named like a turn marker."""
    template = getattr(tok, "chat_template", None) or ""
    if isinstance(template, dict):  # several named templates
        template = "\n".join(str(t) for t in template.values())
    elif isinstance(template, list):
        template = "\n".join(str(t.get("template", "")) if isinstance(t, dict) else str(t) for t in template)
    return {t for t in _special_tokens(tok) if (template and t in template) or TURN_MARKER.search(t)}


def _special_tokens(tok: "PreTrainedTokenizerBase") -> list[str]:
    """Special tokens of the tokenizer in id order: the named ones and every added token marked special."""
    named = set(tok.all_special_tokens)
    added = getattr(tok, "added_tokens_decoder", {}) or {}
    by_id = {i: t.content for i, t in added.items() if getattr(t, "special", False)}
    ids = {tok.convert_tokens_to_ids(t): t for t in named if tok.convert_tokens_to_ids(t) is not None}
    return [t for _, t in sorted({**by_id, **ids}.items())]


def _text_start(tok: "PreTrainedTokenizerBase") -> str | None:
    """The special token the tokenizer puts before a single text (`<s>`, `[CLS]`), or None."""
    plain = tok("a", add_special_tokens=False, verbose=False)["input_ids"]
    framed = tok("a", verbose=False)["input_ids"]
    if len(framed) <= len(plain) or framed[: len(plain)] == plain:
        return None
    first = tok.convert_ids_to_tokens(framed[0])
    return first if first in set(_special_tokens(tok)) else None


def document_separator(tok: "PreTrainedTokenizerBase", masked: bool = False) -> Separator:
    """The token that starts each document by the rules above (`masked`: for a masked LM); raises when there is none."""
    key = (len(tok), str(tok.special_tokens_map), str(getattr(tok, "chat_template", "")), masked)
    cached = getattr(tok, _CACHE, None)
    if cached is not None and cached[0] == key:
        return cached[1]
    chat = chat_tokens(tok)
    if masked:
        candidates = [(_text_start(tok), "text start"), (tok.cls_token, "cls"), (tok.bos_token, "bos")]
        candidates += [(tok.sep_token, "sep"), (tok.eos_token, "eos")]
    else:
        candidates = [(tok.eos_token, "eos")]
        candidates += [(t, "end-of-text token") for t in _special_tokens(tok) if END_OF_TEXT.match(t)]
        candidates += [(tok.sep_token, "sep"), (tok.bos_token, "bos"), (tok.cls_token, "cls")]
    for token, rule in candidates:
        if token is None or token in chat:
            continue
        token_id = tok.convert_tokens_to_ids(token)
        if token_id is None or (
            tok.unk_token_id is not None and token_id == tok.unk_token_id and token != tok.unk_token
        ):
            continue
        found = Separator(int(token_id), str(token), rule)
        setattr(tok, _CACHE, (key, found))
        return found
    raise ModelLoadError(
        "the tokenizer has no end-of-text token outside its chat format (eos, a token such as <|endoftext|>, sep, "
        f"bos or cls; chat tokens {', '.join(sorted(chat)) or 'none'} are never used) to separate documents with",
        hint="give the tokenizer an eos token (tokenizer.eos_token) that is not a chat-turn token",
    )

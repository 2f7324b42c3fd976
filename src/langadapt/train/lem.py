"""Linguistic entity masking (`lem`, encoders): the masked positions are pieces of nouns, verbs and
named entities only.

After LEM (Fernando et al. 2024, "Linguistic Entity Masking to Improve Cross-Lingual
Representation of Multilingual Language Models for Low-Resource Languages"): the words a
model must recover are the ones that carry a sentence's content. Which words those are in the
target language comes from the user, as

- a lexicon (`train.lem_lexicon`): a TSV file of `word<TAB>tag` lines, the words whose tag is
  one of `train.lem_tags` (NOUN, VERB, PROPN and NE by default, Universal Dependencies' tags
  plus NE for a named entity) are entities; a file of one word per line lists entities only;
- or a tagger (`train.lem_tagger`): a spaCy pipeline (a package name or a folder) that tags
  the training text once; every word it tags with one of `train.lem_tags` as its part of
  speech, or marks inside a named entity, joins the lexicon. Words are then masked wherever
  they occur (the lexicon is of word types, not of each occurrence's tag).

Masking is mlm's (`train/mlm.py`: whole words as the tokenizer splits them, 80/10/10, on the
device), restricted to the words of the lexicon: `train.lem_probability` of their tokens in
each row are chosen (rows without one fall back to a single word, as mlm does for a row whose
words are all longer than its budget). Words are matched lower-cased, punctuation trimmed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.errors import ConfigError, MissingDependencyError
from langadapt.train.mlm import MaskingPlan, masked_loss
from langadapt.train.objectives import OBJECTIVES

if TYPE_CHECKING:
    import torch

DEFAULT_TAGS = ("NOUN", "VERB", "PROPN", "NE")
_EDGE = "\"'“”‘’«»()[]{}.,;:!?¡¿"


def read_lexicon(path: str, tags: tuple[str, ...]) -> set[str]:
    """The entity words of a lexicon file (lower-cased)."""
    out = set()
    wanted = {t.upper() for t in tags}
    for line in Path(path).expanduser().read_text(encoding="utf-8").splitlines():
        cols = [c.strip() for c in line.split("\t")]
        if not cols[0]:
            continue
        if len(cols) == 1 or any(tag.upper() in wanted for tag in cols[1].replace(",", " ").split()):
            out.add(cols[0].lower())
    return out


def tag_lexicon(pipeline: str, texts: list[str], tags: tuple[str, ...]) -> set[str]:
    """The words a spaCy pipeline tags as entities in `texts` (lower-cased)."""
    try:
        import spacy
    except ImportError:
        raise MissingDependencyError("spacy", "train.lem_tagger", "pip install spacy") from None
    nlp = spacy.load(pipeline)
    wanted = {t.upper() for t in tags}
    out = set()
    for doc in nlp.pipe(texts, batch_size=64):
        for token in doc:
            if token.pos_ in wanted or ("NE" in wanted and token.ent_type_):
                out.add(token.text.lower())
    return out


class EntityMasking:
    """`lem` with its plan and lexicon bound: what the training loop calls.

    `host_inputs` gives mlm's word boundaries with every word outside the lexicon made unmaskable.
    """

    def __init__(self, plan: MaskingPlan, tok: Any, lexicon: set[str], probability: float) -> None:
        if plan.words is None:
            raise ConfigError(["train.objective lem: masks whole tagged words; set train.mlm_whole_word: true"])
        self.plan, self.tok, self.lexicon = replace(plan, probability=probability), tok, lexicon

    def entity_words(self, ids: "torch.Tensor", words: "torch.Tensor") -> "torch.Tensor":
        """(batch, seq) bool: the positions whose word is in the lexicon."""
        import torch

        out = torch.zeros_like(words, dtype=torch.bool)
        for r in range(ids.shape[0]):
            row, w = ids[r].tolist(), words[r].tolist()
            start = 0
            while start < len(w):
                end = start + 1
                while end < len(w) and w[end] == w[start]:
                    end += 1
                if w[start] >= 0:
                    text = self.tok.decode(row[start:end]).strip().strip(_EDGE).lower()
                    if text in self.lexicon:
                        out[r, start:end] = True
                start = end
        return out

    def host_inputs(self, ids: "torch.Tensor") -> dict[str, Any]:
        host = self.plan.host_inputs(ids)
        words = host["words"].masked_fill(~self.entity_words(ids, host["words"]), -1)
        return {"words": words, "longest_word": host["longest_word"]}

    def __call__(
        self,
        model: Any,
        input_ids: "torch.Tensor",
        position_ids: "torch.Tensor | None" = None,
        words: "torch.Tensor | None" = None,
        longest_word: int | None = None,
        seed: int | None = None,
    ) -> "torch.Tensor":
        return lem_loss(
            model, input_ids, position_ids, entities=self, words=words, longest_word=longest_word, seed=seed
        )


@OBJECTIVES.register(
    "lem",
    help="encoders: linguistic entity masking: mlm whose masked words are nouns, verbs and named entities only "
    "(train.lem_lexicon or train.lem_tagger, train.lem_tags, train.lem_probability)",
)
def lem_loss(
    model: Any,
    input_ids: "torch.Tensor",
    position_ids: "torch.Tensor | None" = None,
    *,
    entities: EntityMasking,
    words: "torch.Tensor | None" = None,
    longest_word: int | None = None,
    seed: int | None = None,
) -> "torch.Tensor":
    """mlm's loss over the entity words' masked pieces, per row: (batch, 1)."""
    from langadapt.models.encoder import document_inputs

    if words is None or longest_word is None:
        host = entities.host_inputs(input_ids.cpu())
        words, longest_word = host["words"].to(input_ids.device), host["longest_word"]
    packed = document_inputs(model, position_ids) if position_ids is not None else {}
    return masked_loss(model, input_ids, entities.plan, words, longest_word, seed, packed)

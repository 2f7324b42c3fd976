"""Language identification: pycld2 offline by default, a GlotLID / OpenLID fastText file when given.

Identifiers answer (ISO 639-3 code, confidence) for a text. Codes are compared with the
recipe's language allowing for macrolanguages (a `swh` corpus is Swahili to an identifier
that says `swa`). A language the identifier does not know is reported at validation and the
documents are then kept by script and the quality filters, never mislabelled.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from langadapt.config import ROLES, sources_of
from langadapt.errors import InputError, MissingDependencyError

if TYPE_CHECKING:
    from langadapt.corpus.config import CorpusConfig

FASTTEXT_MAGIC = 793712314  # first int32 of every fastText .bin / .ftz model
UNKNOWN = "und"
# individual language -> macrolanguage code that identifiers usually answer with
MACRO = {
    "swh": "swa", "zsm": "msa", "arb": "ara", "cmn": "zho", "pes": "fas", "prs": "fas", "ekk": "est",
    "lvs": "lav", "uzn": "uzb", "khk": "mon", "npi": "nep", "plt": "mlg", "gaz": "orm", "azj": "aze",
    "ory": "ori", "quz": "que", "ydd": "yid", "als": "sqi", "nob": "nor", "nno": "nor", "yue": "zho",
}  # fmt: skip


class Identifier(Protocol):
    name: str

    def predict(self, text: str) -> tuple[str, float]: ...

    def supports(self, language: str) -> bool: ...


def same_language(a: str, b: str) -> bool:
    return a == b or MACRO.get(a, a) == MACRO.get(b, b)


@lru_cache(maxsize=1)
def cld2_languages() -> dict[str, str]:
    """pycld2 code -> ISO 639-3 code, for the languages pycld2 detects."""
    text = resources.files("langadapt").joinpath("data/corpus/cld2_languages.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines()[2:]]
    return {code: iso for code, iso, _ in rows if iso}


class Cld2:
    """Google's CLD2 (pycld2): 165 languages, ~90k lines/s per core, no model file."""

    name = "pycld2"

    def __init__(self) -> None:
        import pycld2

        self._detect = pycld2.detect
        self._error = pycld2.error
        self._codes = cld2_languages()
        self._known = set(self._codes.values())

    def predict(self, text: str) -> tuple[str, float]:
        try:
            _, _, details = self._detect(text[:20_000], isPlainText=True)
        except self._error:  # cld2 refuses some control characters; such text is not language
            return UNKNOWN, 0.0
        code, percent = details[0][1], details[0][2]
        lang = self._codes.get(code, UNKNOWN)
        if lang == UNKNOWN:
            return UNKNOWN, 0.0
        # confidence: the share of the text in that language (cld2 scores languages per chunk of text)
        return lang, percent / 100

    def supports(self, language: str) -> bool:
        return any(same_language(language, k) for k in self._known)


class FastText:
    """A fastText LID model file with `__label__<lang>_<Script>` labels (GlotLID, OpenLID) or `__label__<lang>`."""

    name = "fasttext"

    def __init__(self, path: Path) -> None:
        try:
            import fasttext
        except ImportError:
            raise MissingDependencyError(
                "fasttext", "a fastText language-ID model", "pip install 'langadapt[glotlid]'"
            ) from None
        problem = model_file_problem(path)
        if problem:
            raise InputError(f"corpus.lid.model_file: {problem}")
        fasttext.FastText.eprint = lambda *a, **k: None  # silence its load-time deprecation notice
        self._model = fasttext.load_model(str(path))
        self._known = {label.removeprefix("__label__").split("_")[0] for label in self._model.get_labels()}

    def predict(self, text: str) -> tuple[str, float]:
        labels, probs = self._model.predict(" ".join(text[:20_000].split()), k=1)
        if not labels:
            return UNKNOWN, 0.0
        return labels[0].removeprefix("__label__").split("_")[0], float(min(probs[0], 1.0))

    def supports(self, language: str) -> bool:
        return any(same_language(language, k) for k in self._known)


def load_identifier(model_file: str) -> Identifier:
    return FastText(Path(model_file).expanduser()) if model_file else Cld2()


def model_file_problem(path: Path) -> str:
    """Why a LID model file cannot be used ('' when it can): missing, or not a fastText model."""
    if not path.is_file():
        return f"no such file: {path} (download a GlotLID model, e.g. model.bin, and give its path)"
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) < 4 or struct.unpack("<i", head)[0] != FASTTEXT_MAGIC:
        return f"{path} is not a fastText model (a GlotLID / OpenLID .bin file is expected)"
    return ""


# FineWeb2's per-language LID threshold: max(LOW, min(HIGH, median - std)) of the confidences of the
# documents the identifier gives that language; a language the identifier is unsure of gets a lower bar.
FINEWEB2_BOUNDS = (0.3, 0.9)
FALLBACK_CONFIDENCE = 0.5


def confidence_threshold(given: float | None, confidences: list[float], min_documents: int) -> dict[str, object]:
    """{value, how}: the recipe's `lid.min_confidence`, or (when it is empty) derived from the language's own
    confidence distribution as FineWeb2 does."""
    import numpy as np

    if given is not None:
        return {"value": float(given), "how": "set in the recipe"}
    if len(confidences) < min_documents:
        return {"value": FALLBACK_CONFIDENCE, "how": f"{len(confidences)} documents are too few to derive from"}
    x = np.asarray(confidences, dtype=float)
    low, high = FINEWEB2_BOUNDS
    value = float(max(low, min(high, np.median(x) - np.std(x))))
    return {
        "value": value,
        "how": f"FineWeb2: max({low}, min({high}, median {np.median(x):.3f} - std {np.std(x):.3f})) "
        f"over {len(x)} documents",
    }


def is_script_code(code: str) -> bool:
    from langadapt.script import script_codes

    return code in script_codes() or code == "Jpan"


def support_notes(cfg: "CorpusConfig") -> list[str]:
    """Languages of the recipe the default identifier does not know, and what is used instead."""
    if cfg.lid.model_file or "lid" in cfg.disable:
        return []
    known = set(cld2_languages().values())
    notes = []
    for src in {s.language: s for role in ROLES for s in sources_of(cfg, role)}.values():
        if not any(same_language(src.language, k) for k in known):
            notes.append(
                f"corpus: the language identifier (pycld2) does not know '{src.language}'; its documents are "
                "kept by script (corpus.lid.script) and the quality filters instead. "
                "Give a GlotLID model file in corpus.lid.model_file for language identification."
            )
    return notes

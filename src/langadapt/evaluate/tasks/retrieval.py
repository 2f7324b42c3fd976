"""Cross-lingual alignment: bitext retrieval P@1 and a MEXA-style layer-wise score.

Both compare each language with the source (pivot) language on aligned pairs (same id in
both languages), by cosine similarity of pooled sentence vectors.

- retrieval: precision@1 in both directions at `layer`: for each sentence, is its
  translation the nearest of all candidates?
- alignment (MEXA, Kargaran et al. 2024): per layer, the fraction of pairs whose
  similarity beats every other pair in both its row and its column; reported as the
  mean over the transformer layers (the embedding layer excluded) and the best layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langadapt.errors import InputError
from langadapt.evaluate.embed import layer_index
from langadapt.evaluate.tasks.base import TASKS, Kind, Score, TaskContext
from langadapt.evaluate.tasks.data import TaskData

if TYPE_CHECKING:
    from langadapt.evaluate.config import TaskConfig


def pairs(data: TaskData, lang: str, pivot: str, cap: int) -> tuple[list[str], list[str]]:
    """Texts of `lang` and their translations in `pivot`, matched by example id."""
    other = {e.id: e.text for e in data.examples if e.language == pivot}
    matched = [(e.text, other[e.id]) for e in data.examples if e.language == lang and e.id in other]
    if cap:
        matched = matched[:cap]
    return [a for a, _ in matched], [b for _, b in matched]


def cosine(a: Any, b: Any) -> Any:
    import numpy as np

    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return a @ b.T


def precision_at_1(sim: Any) -> float:
    """Rows are queries, columns candidates; the right answer is on the diagonal."""
    import numpy as np

    return float((sim.argmax(1) == np.arange(len(sim))).mean())


def mexa(sim: Any) -> float:
    """Fraction of pairs i whose sim[i, i] is above every other entry of row i and column i."""
    import numpy as np

    n = len(sim)
    if n < 2:
        return 1.0
    off = sim.copy()
    np.fill_diagonal(off, -np.inf)
    diag = np.diag(sim)
    return float(((diag > off.max(1)) & (diag > off.max(0))).mean())


def _languages(ctx: TaskContext, cfg: "TaskConfig", data: TaskData, name: str) -> tuple[str, list[str]]:
    pivot = cfg.source_language or ctx.source
    if not pivot:
        raise InputError(f"task '{name}': needs a pivot language; set source_language or a corpus replay language")
    langs = [lang for lang in ctx.languages if lang != pivot and lang in data.languages()]
    if pivot not in data.languages() or not langs:
        raise InputError(
            f"task '{name}': its data has languages {', '.join(data.languages())}; it needs {pivot} and one of "
            f"{', '.join(lang for lang in ctx.languages if lang != pivot)}"
        )
    return pivot, langs


def run_retrieval(ctx: TaskContext, cfg: "TaskConfig", data: TaskData) -> list[Score]:
    name, rows = cfg.name or cfg.kind, []
    pivot, langs = _languages(ctx, cfg, data, name)
    layer = layer_index(ctx.model, cfg.layer)
    for lang in langs:
        a, b = pairs(data, lang, pivot, cfg.max_pairs)
        sim = cosine(ctx.encoder.sentences(a, cfg.pooling)[:, layer], ctx.encoder.sentences(b, cfg.pooling)[:, layer])
        for setting, s, language in ((f"{lang}→{pivot}", sim, lang), (f"{pivot}→{lang}", sim.T, pivot)):
            rows.append(
                Score(
                    name,
                    cfg.kind,
                    ctx.label,
                    language,
                    setting,
                    "P@1",
                    precision_at_1(s),
                    n_test=len(a),
                    extra={"layer": layer},
                )
            )
    return rows


def run_alignment(ctx: TaskContext, cfg: "TaskConfig", data: TaskData) -> list[Score]:
    import numpy as np

    name, rows = cfg.name or cfg.kind, []
    pivot, langs = _languages(ctx, cfg, data, name)
    for lang in langs:
        a, b = pairs(data, lang, pivot, cfg.max_pairs)
        xa, xb = ctx.encoder.sentences(a, cfg.pooling), ctx.encoder.sentences(b, cfg.pooling)
        per_layer = [mexa(cosine(xa[:, i], xb[:, i])) for i in range(1, xa.shape[1])]
        rows.append(
            Score(
                name,
                cfg.kind,
                ctx.label,
                lang,
                f"{lang}↔{pivot}",
                "MEXA alignment",
                float(np.mean(per_layer)),
                n_test=len(a),
                extra={"by_layer": per_layer, "best": max(per_layer), "best_layer": 1 + int(np.argmax(per_layer))},
            )
        )
    return rows


TASKS.register("retrieval", help="bitext retrieval: P@1 in both directions against the source language, at `layer`")(
    Kind(run_retrieval, token_level=False, builtin_data=("bible-bitext",))
)
TASKS.register(
    "alignment", help="MEXA-style layer-wise alignment with the source language: mean over layers and best layer"
)(Kind(run_alignment, token_level=False, builtin_data=("bible-bitext",)))

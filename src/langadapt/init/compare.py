"""Several init methods side by side, before any training: which one starts closest?

`init.compare` names methods to try beside `init.method`. Each one initialises a fresh
copy of the base model for the same new vocabulary, and every copy (the chosen method's
too) is scored on the same held-out target text at zero training steps: bits per byte
for decoders, pseudo bits per byte for encoders. The table goes into `init_report.json`
(`comparison`) and the report. Only the chosen method's model is kept; the comparison
costs one model load, one initialisation and one evaluation per method.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from langadapt.config import primary

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)


def score(model: Any, tok: Any, texts: list[str], recipe: "Recipe", device: Any = None) -> float:
    """Bits per byte (decoders) or pseudo bits per byte (encoders) with the eval stage's windows and precision,
    the model moved to `device` first (None: where it is)."""
    from langadapt.devices import autocast, resolve_eval_precision
    from langadapt.models.loading import is_encoder
    from langadapt.scoring.bpb import bits_per_byte
    from langadapt.scoring.pppl import score as pseudo_bits_per_byte

    if device is not None:
        model.to(device)
    scorer = pseudo_bits_per_byte if is_encoder(model.config) else bits_per_byte
    with autocast(model.device, resolve_eval_precision(recipe.eval.precision, model.device)):
        return float(scorer(model.eval(), tok, texts, recipe.eval, desc="init comparison")["bits_per_byte"])


def compare(
    recipe: "Recipe",
    chosen: Any,
    new_tok: Any,
    texts: list[str],
    initialise_with: Callable[[str], tuple[Any, dict[str, Any]]],
    chosen_seconds: float,
    device: Any = None,
) -> list[dict[str, Any]]:
    """One row per method: its held-out score at zero steps and its own seconds; the chosen one first.

    Every model is scored on `device` (None: where it is), the chosen one too: it is saved already.
    """
    from langadapt.models.loading import is_encoder

    column = f"{primary(recipe.corpus, 'target').language} held-out {'pseudo ' if is_encoder(chosen.config) else ''}bits/byte"
    rows = [_row(recipe.init.method, score(chosen, new_tok, texts, recipe, device), chosen_seconds, column, True)]
    for method in recipe.init.compare:
        if method == recipe.init.method:
            continue
        model, report = initialise_with(method)
        rows.append(_row(method, score(model, new_tok, texts, recipe, device), report["seconds"], column, False))
        del model
    best = min(r[column] for r in rows)
    for r in rows:
        r["best"] = r[column] == best
    log.info("init comparison (%s): %s", column, ", ".join(f"{r['method']} {r[column]:.4f}" for r in rows))
    return rows


def _row(method: str, value: float, seconds: float, column: str, chosen: bool) -> dict[str, Any]:
    return {
        "method": method,
        column: round(value, 4),
        "init seconds": round(float(seconds), 2),
        "chosen": chosen,
    }

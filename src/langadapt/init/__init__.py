"""Stage 3, init: give every new token an embedding row (and an output row if untied).

Tokens the base vocabulary already has keep their rows (copied by token string, so this
works for extended and for replaced vocabularies). Rows for new tokens come from a
registered method; each method sees the old matrix and, per new token, its decomposition
into old tokens.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.init import basic  # noqa: F401  (registers random, mean, mvn, fvt)
from langadapt.init.methods import INIT_METHODS, InitInputs
from langadapt.models import load_model, load_tokenizer, resolve_base
from langadapt.rundir import RunDir, StageContext, write_json
from langadapt.stage import run_stage

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "init"


def decompose(token: str, base_tok: Any) -> list[int]:
    """Old-token ids of a new token, applying the old model's merges to its own spelling.

    Working on the token string in the tokenizer's alphabet (e.g. 'Ġndipo', '▁ndipo')
    avoids decode/re-encode problems with partial UTF-8 byte tokens.
    """
    model = base_tok.backend_tokenizer.model
    try:
        return [t.id for t in model.tokenize(token)]
    except Exception:  # a token the old model cannot spell (e.g. unseen characters, no byte fallback)
        return []


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    import torch

    tok_dir = rd.require("tokenizer", "tokenizer.json", "metrics.json")
    base_path = resolve_base(recipe.model)
    base_tok = load_tokenizer(base_path, recipe.model.revision)
    new_tok = load_tokenizer(str(tok_dir))
    model = load_model(base_path, "float32", recipe.model.revision)
    method = INIT_METHODS.get(recipe.init.method)

    old_vocab = base_tok.get_vocab()
    new_vocab = new_tok.get_vocab()
    copied = {nid: old_vocab[t] for t, nid in new_vocab.items() if t in old_vocab}
    fresh = sorted((nid, t) for t, nid in new_vocab.items() if t not in old_vocab)
    pieces = [decompose(t, base_tok) for _, t in fresh]

    old_in = model.get_input_embeddings().weight.detach().clone()
    out_layer = model.get_output_embeddings()
    tied = out_layer is not None and out_layer.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    old_out = None if (out_layer is None or tied) else out_layer.weight.detach().clone()

    size = max(new_vocab.values()) + 1
    model.resize_token_embeddings(size, mean_resizing=False)
    generator = torch.Generator().manual_seed(recipe.seed)
    init_std = float(getattr(model.config, "initializer_range", 0.02))

    def fill(matrix: torch.Tensor, old: torch.Tensor) -> None:
        with torch.no_grad():
            src = torch.tensor(list(copied.values()), dtype=torch.long)
            dst = torch.tensor(list(copied.keys()), dtype=torch.long)
            matrix[dst] = old[src]
            if fresh:
                rows = method(InitInputs(old, pieces, generator, init_std))
                matrix[torch.tensor([nid for nid, _ in fresh])] = rows.to(matrix.dtype)

    fill(model.get_input_embeddings().weight, old_in)
    if old_out is not None:
        fill(model.get_output_embeddings().weight, old_out)
    model.config.vocab_size = size
    model.save_pretrained(ctx.out)
    new_tok.save_pretrained(ctx.out)
    lens = [len(p) for p in pieces]
    report = {
        "method": recipe.init.method,
        "vocab_size": size,
        "copied_rows": len(copied),
        "initialised_rows": len(fresh),
        "tied_embeddings": tied,
        "output_head_initialised": old_out is not None,
        "pieces_per_new_token": {
            "mean": sum(lens) / len(lens) if lens else 0.0,
            "max": max(lens, default=0),
            "undecomposable": sum(1 for n in lens if n == 0),
        },
    }
    write_json(ctx.out / "init_report.json", report)
    log.info(
        "init: %d rows copied, %d new rows by %s (tied head: %s)", len(copied), len(fresh), recipe.init.method, tied
    )


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    return {
        "tokenizer": rd.fingerprint_of("tokenizer"),
        "model": recipe.to_dict()["model"],
        "config": recipe.to_dict()["init"],
        "seed": recipe.seed,
    }


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path:
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)

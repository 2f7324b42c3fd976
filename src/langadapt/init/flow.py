"""Stage 3, init: give every new token an embedding row (and an output row if untied).

Tokens the base vocabulary already has keep their rows (copied by token string, so this
works for extended and for replaced vocabularies). Rows for new tokens come from a
registered method (`init.method`), applied to each matrix in its own space: the input
embeddings, an untied output head, and an output bias where the model has one. Works the
same for decoders and for encoders with a masked-LM head, since it only touches
`get_input_embeddings()` / `get_output_embeddings()`.

When the tokenizer stage wrote `token_sources.json` (a transliteration merge: each new
token names the old ids it stands for), those ids are the token's pieces, and its row
is their min, mean or max, whatever the method.

`init_report.json` says, per new token, which method produced its row and from which old
tokens, and warns when new rows fall outside the norm range of the old ones.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.documents import languages, leading_documents, read_texts
from langadapt.errors import InputError
from langadapt.init import basic, clp, focus, ofa, omp, wechsel  # noqa: F401  (register the methods)
from langadapt.init.methods import INIT_METHODS, InitContext, InitInputs, InitRows, decompose
from langadapt.models.loading import load_model, load_tokenizer, resolve_base
from langadapt.rundir import RunDir, StageContext, read_json, write_json
from langadapt.stage import run_stage

if TYPE_CHECKING:
    import torch

    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "init"
TOKEN_SOURCES = "token_sources.json"
COMBINE = ("min", "mean", "max")


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    tok_dir = rd.require("tokenizer", "tokenizer.json", "metrics.json")
    base_path = resolve_base(recipe.model)
    base_tok = load_tokenizer(base_path, recipe.model.revision)
    new_tok = load_tokenizer(str(tok_dir))
    model = load_model(base_path, "float32", recipe.model.revision)
    target, replay = languages(rd)
    device = init_device(recipe.init.device)
    context = InitContext(
        config=recipe.init,
        seed=recipe.seed,
        old_tokenizer=base_tok,
        new_tokenizer=new_tok,
        cache=rd.root / "cache" / "init",
        target_texts=lambda: read_texts(rd, target, "train"),
        source_texts=lambda: read_texts(rd, replay, "train") if replay else [],
        source_language=replay or "",
        target_language=target,
        device=device,
    )
    sources_file = tok_dir / TOKEN_SOURCES
    token_sources = read_json(sources_file) if sources_file.is_file() else None
    done = initialise(model, context, recipe.init.method, token_sources)
    report = done.report
    model.save_pretrained(ctx.out)
    new_tok.save_pretrained(ctx.out)
    save_factors(model, context, done.factors, ctx.out, report, trained=recipe.train.factorised_embeddings)
    if recipe.init.compare:
        report["comparison"] = _compare(recipe, rd, context, model, new_tok, token_sources, report["seconds"])
    write_json(ctx.out / "init_report.json", report)


def _compare(
    recipe: "Recipe",
    rd: RunDir,
    context: InitContext,
    chosen: Any,
    new_tok: Any,
    token_sources: dict[str, Any] | None,
    chosen_seconds: float,
) -> list[dict[str, Any]]:
    """`init.compare`: every listed method on a fresh copy of the base, scored at zero steps beside the chosen one."""
    import dataclasses

    from langadapt.init.compare import compare

    texts = leading_documents(read_texts(rd, context.target_language, "heldout"), recipe.init.compare_chars)
    if not texts:
        raise InputError(
            f"init.compare: the corpus holds out no {context.target_language} text to score the methods on; "
            "set corpus.heldout_groups or a larger corpus.heldout_fraction, or remove init.compare"
        )
    base_path = resolve_base(recipe.model)

    def initialise_with(method: str) -> tuple[Any, dict[str, Any]]:
        model = load_model(base_path, "float32", recipe.model.revision)
        # shared work (fastText vectors) is cached on disk; a fresh memo keeps each method's run its own
        return model, initialise(model, dataclasses.replace(context, memo={}), method, token_sources).report

    return compare(recipe, chosen, new_tok, texts, initialise_with, chosen_seconds, context.device)


def init_device(name: str) -> "torch.device":
    """The device of `init.device` (auto: a CUDA GPU when present, else the CPU; never an Apple GPU, which has no
    float64). The model is initialised on the CPU either way: resizing and copying rows is light."""
    import torch

    from langadapt.devices import resolve_device

    if name == "auto":
        return resolve_device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    return resolve_device(name)


@dataclass
class Initialised:
    """What `initialise` did: the report (init_report.json) and factors to save beside the model."""

    report: dict[str, Any]
    factors: dict[str, "torch.Tensor"] = field(default_factory=dict)  # per matrix: a method's shared projection


def initialise(
    model: Any, context: InitContext, method: str, token_sources: dict[str, Any] | None = None
) -> Initialised:
    """Resize `model` to the new vocabulary and fill every new row."""
    import torch

    old_vocab = context.old_tokenizer.get_vocab()
    new_vocab = context.new_tokenizer.get_vocab()
    copied = {nid: old_vocab[t] for t, nid in new_vocab.items() if t in old_vocab}
    fresh = sorted((nid, t) for t, nid in new_vocab.items() if t not in old_vocab)
    tokens = [t for _, t in fresh]
    translit, hint = _token_sources(token_sources, tokens, old_vocab, context.config.translit_mode)
    pieces = [translit.get(t) or decompose(t, context.old_tokenizer, old_vocab) for t in tokens]

    matrices = _old_matrices(model)
    size = max(new_vocab.values()) + 1
    model.resize_token_embeddings(size, mean_resizing=False)
    model.config.vocab_size = size
    init_std = float(getattr(model.config, "initializer_range", 0.02))
    fn = INIT_METHODS.get(method)
    new_ids = torch.tensor([nid for nid, _ in fresh], dtype=torch.long)
    src = torch.tensor(list(copied.values()), dtype=torch.long)
    dst = torch.tensor(list(copied.keys()), dtype=torch.long)
    results: dict[str, InitRows] = {}
    started = time.perf_counter()
    for space, old in matrices.items():
        target = _current(model, space)
        with torch.no_grad():
            target[dst] = old[src].to(target.dtype)
            if not fresh:
                continue
            generator = torch.Generator().manual_seed(context.seed + len(results))
            first = next(iter(results.values()), None)  # later matrices combine the same old tokens
            mixture = first.mixture if first is not None else None
            x = InitInputs(old, pieces, generator, init_std, tokens, space, context, mixture)
            rows = fn(x)
            if tuple(rows.rows.shape) != (len(fresh), old.shape[1]):
                raise RuntimeError(f"init method {method} returned {tuple(rows.rows.shape)} rows for {space}")
            rows = _apply_translit(rows, x, translit, hint)
            target[new_ids] = rows.rows.to(target.dtype)
            results[space] = rows
    report = _report(model, context, method, copied, fresh, results, matrices, translit, hint, pieces)
    report["seconds"] = round(time.perf_counter() - started, 2)  # the method's work, model loading excluded
    factors = {space: r.factors for space, r in results.items() if r.factors is not None}
    return Initialised(report, factors)


def _old_matrices(model: Any) -> dict[str, "torch.Tensor"]:
    """Copies of the rows to extend: input embeddings, untied output head, output bias."""
    inp = model.get_input_embeddings().weight
    out = {"input": inp.detach().clone()}
    head = model.get_output_embeddings()
    if head is not None and head.weight.data_ptr() != inp.data_ptr():
        out["output"] = head.weight.detach().clone()
    bias = getattr(head, "bias", None) if head is not None else None
    if bias is not None and bias.shape[0] == inp.shape[0]:
        out["output-bias"] = bias.detach().clone().unsqueeze(1)
    return out


def _current(model: Any, space: str) -> "torch.Tensor":
    if space == "input":
        return model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    return head.weight if space == "output" else head.bias.unsqueeze(1)


def _token_sources(
    data: dict[str, Any] | None, tokens: list[str], old_vocab: dict[str, int], mode: str
) -> tuple[dict[str, list[int]], str]:
    """Pieces named by the tokenizer stage (transliteration merge), checked against the old vocabulary."""
    if not data:
        return {}, mode or "mean"
    hint = mode or str(data.get("init_hint", "mean"))
    if hint not in COMBINE:
        raise InputError(f"tokenizer/{TOKEN_SOURCES}: init_hint '{hint}' is not one of {', '.join(COMBINE)}")
    n_old = max(old_vocab.values()) + 1
    wanted = set(tokens)
    out: dict[str, list[int]] = {}
    for token, ids in data.items():
        if token == "init_hint" or token not in wanted:
            continue
        if not isinstance(ids, list) or not all(isinstance(i, int) and 0 <= i < n_old for i in ids):
            raise InputError(f"tokenizer/{TOKEN_SOURCES}: '{token}' must list old token ids below {n_old}")
        if ids:
            out[token] = ids
    return out, hint


def _apply_translit(rows: InitRows, x: InitInputs, translit: dict[str, list[int]], hint: str) -> InitRows:
    """Rows of transliteration-merged tokens: min, mean or max of their source rows (TransMI)."""
    if not translit:
        return rows
    for i, token in enumerate(x.tokens):
        ids = translit.get(token)
        if ids:
            src = x.old[ids]
            rows.rows[i] = {"min": src.min(0).values, "max": src.max(0).values, "mean": src.mean(0)}[hint]
            rows.how[i] = f"translit-{hint}"
    return rows


def _norm_check(old: "torch.Tensor", new: "torch.Tensor") -> dict[str, Any]:
    """Where new rows' norms fall against the range of the old rows' norms."""
    old_n, new_n = old.norm(dim=1), new.norm(dim=1)
    low, high = float(old_n.min()), float(old_n.max())
    return {
        "old_min": round(low, 4),
        "old_max": round(high, 4),
        "old_mean": round(float(old_n.mean()), 4),
        "new_min": round(float(new_n.min()), 4) if len(new_n) else None,
        "new_max": round(float(new_n.max()), 4) if len(new_n) else None,
        "new_mean": round(float(new_n.mean()), 4) if len(new_n) else None,
        "below_range": int((new_n < low).sum()),
        "above_range": int((new_n > high).sum()),
    }


def _report(
    model: Any,
    context: InitContext,
    method: str,
    copied: dict[int, int],
    fresh: list[tuple[int, str]],
    results: dict[str, InitRows],
    matrices: dict[str, "torch.Tensor"],
    translit: dict[str, list[int]],
    hint: str,
    pieces: list[list[int]],
) -> dict[str, Any]:
    old_tokens = {i: t for t, i in context.old_tokenizer.get_vocab().items()}
    first = results.get("input")
    how = first.how if first else []
    per_token = []
    for i, (nid, token) in enumerate(fresh):
        entry: dict[str, Any] = {"id": nid, "token": token, "method": how[i]}
        if token in translit:
            entry["sources"] = [[old_tokens.get(j, str(j)), None] for j in translit[token]]
        elif first is not None and first.mixture is not None:
            entry["sources"] = [[old_tokens.get(j, str(j)), round(w, 4)] for j, w in first.mixture.sources(i)]
            entry["combined"] = int(first.mixture.sizes()[i])  # sources lists the largest 32 of these
        per_token.append(entry)
    norms = {}
    for space, rows in results.items():
        if space == "output-bias":
            continue
        norms[space] = _norm_check(matrices[space], rows.rows)
        check = norms[space]
        if check["below_range"] or check["above_range"]:
            log.warning(
                "init: %d new %s rows have a norm below and %d above the old rows' range [%.3f, %.3f]",
                check["below_range"],
                space,
                check["above_range"],
                check["old_min"],
                check["old_max"],
            )
    lens = [len(p) for p in pieces]
    report: dict[str, Any] = {
        "method": method,
        "vocab_size": model.config.vocab_size,
        "copied_rows": len(copied),
        "initialised_rows": len(fresh),
        "tied_embeddings": "output" not in matrices and model.get_output_embeddings() is not None,
        "output_head_initialised": "output" in matrices,
        "output_bias_initialised": "output-bias" in matrices,
        "rows_by_method": dict(Counter(how)),
        "pieces_per_new_token": {
            "mean": sum(lens) / len(lens) if lens else 0.0,
            "max": max(lens, default=0),
            "undecomposable": sum(1 for n in lens if n == 0),
        },
        "transliteration": {"tokens": len(translit), "combine": hint} if translit else None,
        "norm_check": norms,
    }
    told = next((r.report for r in results.values() if r.report is not None), None)
    if told is not None:
        report[method] = told  # what the method itself reports (e.g. wechsel's dictionary)
    report["tokens"] = per_token
    log.info("init: %d rows copied, %d new rows by %s %s", len(copied), len(fresh), method, report["rows_by_method"])
    return report


def save_factors(
    model: Any,
    context: InitContext,
    primitives: dict[str, Any],
    out: Path,
    report: dict[str, Any],
    trained: bool = False,
) -> None:
    """OFA: save every matrix's coordinates and primitives (the method's factors, by matrix) beside the model
    (`trained`: train.factorised_embeddings)."""
    from safetensors.torch import save_file

    from langadapt.init.ofa import factor_report, factors, principal_directions

    if context.config.method != "ofa":
        return
    primitives = dict(primitives)
    for space, matrix in _old_matrices(model).items():  # a vocabulary without new tokens: the old matrices
        if space != "output-bias" and space not in primitives:
            primitives[space] = principal_directions(matrix, context.config.ofa_rank)
    tensors, sizes = {}, {}
    for space, prim in primitives.items():
        pair = factors(_current(model, space).detach(), prim)
        tensors.update({f"{space}.{name}": t for name, t in pair.items()})
        sizes[space] = factor_report(pair, trained)
    save_file(tensors, str(out / "ofa_factors.safetensors"))
    report["ofa"] = {
        "factors": "ofa_factors.safetensors",
        "trained_factorised": trained,
        "matrices": sizes,
        "note": "training holds A and P instead of each matrix; the saving measured on the trained modules is in "
        "train/summary.json (factorised_embeddings)"
        if trained
        else "the model trains at full size (train.factorised_embeddings is off), so the factors save no parameters",
    }


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    from langadapt.sources.reading import source_identity

    c = recipe.init
    files: dict[str, Any] = {}
    if c.dictionary and Path(c.dictionary).expanduser().is_file():
        from langadapt.init.align import dictionary_file_identity

        files["dictionary"] = dictionary_file_identity(c.dictionary)
    for key, src in (("parallel_source", c.parallel_source), ("parallel_target", c.parallel_target)):
        if src is not None:
            files[key] = source_identity(src)
    # the init report states OFA's parameter saving only when training uses the factors
    trained = {"factorised_training": True} if c.method == "ofa" and recipe.train.factorised_embeddings else {}
    return {
        **trained,
        "tokenizer": rd.fingerprint_of("tokenizer"),
        "corpus": rd.fingerprint_of("corpus"),
        "model": recipe.to_dict()["model"],
        # where it ran does not change what it computes (beyond float64 rounding)
        "config": {k: v for k, v in recipe.to_dict()["init"].items() if k != "device"},
        "files": files,
        "seed": recipe.seed,
    }


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path:
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)

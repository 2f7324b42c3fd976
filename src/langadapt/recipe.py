"""Recipes: YAML mapped 1:1 onto frozen dataclasses, validated before any work.

Every problem in a recipe (unknown key, wrong type, unknown registered name, missing
file) is collected and reported at once in one `ConfigError`. Field help strings are the
documentation: `langadapt validate --explain` and the README are generated from them.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from langadapt.errors import ConfigError


def opt(default: Any, help: str) -> Any:
    """A dataclass field with a default and a help string."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults; recipes are frozen")
    return field(default=default, metadata={"help": help})


def req(help: str) -> Any:
    """A required dataclass field with a help string."""
    return field(metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    base: str = opt(
        "builtin:smollm2-135m",
        "base model: a hub id (e.g. HuggingFaceTB/SmolLM2-135M), a local HF folder, or builtin:NAME "
        "(see `langadapt list models`)",
    )
    gguf_file: str = opt("", "GGUF file name inside `base` to import (dequantised to float32 once, then cached)")
    revision: str = opt("", "hub revision (branch, tag or commit) for hub ids")
    dtype: str = opt("float32", "weights dtype for training and evaluation: float32, bfloat16 or float16")


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    path: str = req(
        "where the text is: a file, glob or folder (.txt, .jsonl, .csv, .parquet, optionally .gz), "
        "builtin:NAME for a bundled offline corpus (see `langadapt list sources`), or hf:NAME for a hub data set"
    )
    language: str = req("ISO 639-3 code of the text, e.g. nya, eng, mlt")
    name: str = opt(
        "", "eval.extra_sets: the set's label in reports (required there); corpus sets are labelled <language>-heldout"
    )
    format: str = opt("auto", "auto (from the file extension), txt, jsonl, csv or parquet")
    text_field: str = opt("text", "column or JSON key that holds the text (jsonl, csv, parquet, hf)")
    group_field: str = opt(
        "",
        "column or key naming the document's group (book, site, author); held-out text is split by whole "
        "groups. Empty: txt files group consecutive documents (see corpus.docs_per_group)",
    )
    split_by: str = opt(
        "line", "txt only: one document per line, per blank-line paragraph, or per file (line|paragraph|file)"
    )
    split: str = opt("train", "hf: data set split to read")
    subset: str = opt("", "hf: data set configuration, e.g. nya_Latn for HuggingFaceFW/fineweb-2")
    max_documents: int = opt(0, "read at most this many documents (0: all); the rest are counted as not read")


@dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    target: SourceConfig = req("the target-language text to adapt to")
    replay: SourceConfig | None = opt(None, "source-language text replayed during training against forgetting")
    normalization: str = opt("NFC", "Unicode normalisation: NFC, NFKC or none")
    min_chars: int = opt(20, "drop documents shorter than this many characters (reason: too_short)")
    max_chars: int = opt(200_000, "drop documents longer than this many characters (reason: too_long)")
    heldout_groups: tuple[str, ...] = opt(
        (), "groups held out for evaluation (never trained on), in every language; empty: use heldout_fraction"
    )
    heldout_fraction: float = opt(
        0.02, "fraction of groups (chosen by a stable hash) held out when heldout_groups is empty"
    )
    docs_per_group: int = opt(
        100, "txt sources without groups: consecutive documents per group, so held-out text is contiguous"
    )


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    method: str = opt(
        "extend", "extend: add the most useful target-language tokens to the base tokenizer; keep: unchanged"
    )
    new_tokens: int = opt(2000, "extend: number of new tokens to add")
    target_vocab_size: int = opt(8000, "size of the target-language BPE trained to propose new tokens")
    min_frequency: int = opt(2, "a proposed token must occur at least this often in the training text")


@dataclass(frozen=True, kw_only=True)
class InitConfig:
    method: str = opt("fvt", "how rows for new tokens are initialised (see `langadapt list init-methods`)")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    method: str = opt(
        "lora",
        "lora: LoRA on the transformer + trainable new-token rows; full: all weights (see `langadapt list train-methods`)",
    )
    objective: str = opt("clm", "training objective (see `langadapt list objectives`)")
    lora_rank: int = opt(16, "LoRA rank")
    lora_alpha: int = opt(32, "LoRA scaling numerator (scale = alpha / rank)")
    lora_dropout: float = opt(0.0, "dropout on the LoRA path")
    lora_targets: tuple[str, ...] = opt(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "module names that receive LoRA; names absent from the model are an error",
    )
    train_new_embeddings: bool = opt(True, "also train the embedding (and untied output) rows of new tokens")
    replay_ratio: float = opt(0.25, "fraction of training sequences drawn from the replay language")
    seq_len: int = opt(256, "tokens per training sequence (documents are packed)")
    batch_size: int = opt(8, "sequences per optimizer step")
    max_steps: int = opt(40, "optimizer steps")
    lr: float = opt(1e-3, "peak learning rate")
    embedding_lr: float = opt(0.0, "learning rate for new embedding rows (0: same as lr)")
    warmup_steps: int = opt(4, "linear warmup steps")
    min_lr_ratio: float = opt(0.1, "cosine decay floor as a fraction of the peak learning rate")
    weight_decay: float = opt(0.0, "AdamW weight decay (never applied to embedding rows)")
    grad_clip: float = opt(1.0, "gradient norm clipping (0: off)")
    save_every: int = opt(10, "write a resumable checkpoint every this many steps (0: only at the end)")
    keep_checkpoints: int = opt(2, "how many recent checkpoints to keep")
    threads: int = opt(0, "CPU threads for torch (0: torch's default)")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    max_chars: int = opt(
        30_000, "evaluate at most this many characters per set (whole documents; the rest is counted as skipped)"
    )
    context_length: int = opt(512, "tokens per evaluation window; longer documents are scored with a sliding window")
    stride: int = opt(256, "new tokens scored per window after the first (the rest is context)")
    extra_sets: tuple[SourceConfig, ...] = opt(
        (), "additional evaluation-only sets, e.g. out-of-domain text in the source language"
    )


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    title: str = opt("", "page title; defaults to the recipe name")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    name: str = req("run name; the run directory defaults to runs/<name>")
    model: ModelConfig = opt(ModelConfig(), "the base model")
    corpus: CorpusConfig = req("text to adapt to and to replay")
    tokenizer: TokenizerConfig = opt(TokenizerConfig(), "tokenizer adaptation")
    init: InitConfig = opt(InitConfig(), "initialisation of new token rows")
    train: TrainConfig = opt(TrainConfig(), "continued pretraining")
    eval: EvalConfig = opt(EvalConfig(), "evaluation of base vs adapted model")
    report: ReportConfig = opt(ReportConfig(), "the HTML report")
    seed: int = opt(0, "seed for every random choice (data order, init noise, LoRA init)")
    run_dir: str = opt("", "where the run's outputs go (default runs/<name>, relative to the current directory)")

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> "Recipe":
        path = Path(path)
        if not path.is_file():
            raise ConfigError([f"recipe file not found: {path}"], source=str(path))
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError([f"not valid YAML: {e}"], source=str(path)) from None
        if not isinstance(data, dict):
            raise ConfigError(["a recipe must be a YAML mapping at the top level"], source=str(path))
        return cls.from_dict(data, overrides=overrides, base_dir=path.parent, source=str(path))

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        overrides: list[str] | tuple[str, ...] = (),
        base_dir: str | Path | None = None,
        source: str = "recipe",
    ) -> "Recipe":
        """Build and validate a recipe; raises one ConfigError listing every problem."""
        problems: list[str] = []
        data = apply_overrides(data, overrides, problems)
        recipe = _build(cls, data, "", problems)
        if recipe is not None and base_dir is not None:
            recipe = _resolve_paths(recipe, Path(base_dir))
        if recipe is not None:
            from langadapt.validation import semantic_problems

            reported = {p.split(":", 1)[0] for p in problems}
            problems.extend(p for p in semantic_problems(recipe) if p.split(":", 1)[0] not in reported)
        if problems:
            raise ConfigError(problems, source=source)
        assert recipe is not None
        return recipe

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @property
    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


# -- overrides ----------------------------------------------------------------------


def apply_overrides(
    data: dict[str, Any], overrides: list[str] | tuple[str, ...], problems: list[str]
) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a copy of `data`."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            problems.append(f"--set {item!r}: expected key=value, e.g. train.max_steps=200")
            continue
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"--set {key}: '{part}' is not a section")
                break
            node = child
        else:
            node[parts[-1]] = value
    return data


# -- building dataclasses from plain data, collecting every problem --------------------


def _build(cls: type, data: Any, where: str, problems: list[str]) -> Any:
    label = where or "recipe"
    if not isinstance(data, dict):
        problems.append(f"{label}: expected a mapping, got {type(data).__name__} {data!r}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            maybe = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{_join(where, key)}: unknown key{maybe}; valid keys: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    ok = True
    for name, f in fields.items():
        path = _join(where, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{path}: required ({f.metadata.get('help', '')})")
                ok = False
            continue
        value = _convert(hints[name], data[name], path, problems)
        if value is not _INVALID:
            kwargs[name] = value
        elif f.default is dataclasses.MISSING:
            ok = False
        # else: the problem is recorded; the default stands in so later checks still run
    return cls(**kwargs) if ok else None


_INVALID = object()


def _convert(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, path, problems)
    if dataclasses.is_dataclass(tp):
        built = _build(tp, value, path, problems)
        return _INVALID if built is None else built
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, (str, dict)) or not isinstance(value, (list, tuple)):
            problems.append(f"{path}: expected a list, got {type(value).__name__} {value!r}")
            return _INVALID
        items = [_convert(item_tp, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return _INVALID if any(i is _INVALID for i in items) else tuple(items)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 2e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    problems.append(f"{path}: expected {getattr(tp, '__name__', tp)}, got {type(value).__name__} {value!r}")
    return _INVALID


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _resolve_paths(recipe: Recipe, base_dir: Path) -> Recipe:
    """Make relative file paths in sources relative to the recipe file, if they exist there."""

    def fix(src: SourceConfig | None) -> SourceConfig | None:
        if src is None or ":" in src.path.split("/")[0] or Path(src.path).is_absolute():
            return src
        candidate = base_dir / src.path
        if not Path(src.path).exists() and (candidate.exists() or list(base_dir.glob(src.path))):
            return dataclasses.replace(src, path=str(candidate))
        return src

    corpus = dataclasses.replace(recipe.corpus, target=fix(recipe.corpus.target), replay=fix(recipe.corpus.replay))
    extra = tuple(fix(s) for s in recipe.eval.extra_sets)
    return dataclasses.replace(recipe, corpus=corpus, eval=dataclasses.replace(recipe.eval, extra_sets=extra))


def field_help(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every field, recursively; used by `validate --explain`."""
    rows: list[tuple[str, str, str]] = []
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            rows.append((key, "", f.metadata.get("help", "")))
            rows.extend(field_help(tp, key))
            continue
        default = "required" if f.default is dataclasses.MISSING else repr(f.default)
        rows.append((key, default, f.metadata.get("help", "")))
    return rows


# -- shipped recipes ----------------------------------------------------------------------


def shipped_recipes() -> dict[str, Path]:
    from importlib import resources

    folder = Path(str(resources.files("langadapt").joinpath("recipes")))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def find_recipe(name_or_path: str) -> Path:
    """A recipe file path, or the name of a recipe shipped with langadapt."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = shipped_recipes()
    if name_or_path in shipped:
        return shipped[name_or_path]
    raise ConfigError(
        [f"no recipe file '{name_or_path}', and no shipped recipe of that name; shipped: {', '.join(shipped)}"],
        source="recipe",
    )

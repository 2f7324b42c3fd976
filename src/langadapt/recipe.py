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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from langadapt.config import ModelConfig, SourceConfig, opt, req
from langadapt.corpus.config import CorpusConfig
from langadapt.distill.config import DistillConfig
from langadapt.errors import ConfigError
from langadapt.evaluate.config import EvalConfig
from langadapt.init.config import InitConfig
from langadapt.report.config import ReportConfig
from langadapt.tokenizer.config import TokenizerConfig
from langadapt.train.config import TrainConfig

__all__ = [
    "CorpusConfig",
    "DistillConfig",
    "EvalConfig",
    "InitConfig",
    "ModelConfig",
    "Recipe",
    "ReportConfig",
    "SourceConfig",
    "TokenizerConfig",
    "TrainConfig",
]


@dataclass(frozen=True, kw_only=True)
class Recipe:
    name: str = req("run name; the run directory defaults to runs/<name>")
    model: ModelConfig = opt(ModelConfig(), "the base model")
    corpus: CorpusConfig = req("text to adapt to and to replay")
    tokenizer: TokenizerConfig = opt(TokenizerConfig(), "tokenizer adaptation")
    init: InitConfig = opt(InitConfig(), "initialisation of new token rows")
    train: TrainConfig = opt(TrainConfig(), "continued pretraining")
    eval: EvalConfig = opt(EvalConfig(), "evaluation of base vs adapted model")
    distill: DistillConfig = opt(
        DistillConfig(), "distillation of the adapted model into a small student (langadapt distill RUN --to DIR)"
    )
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
            from langadapt.train.checks import resolve_objective
            from langadapt.validation import semantic_problems

            recipe = resolve_objective(recipe)  # `auto` follows the base model, when its config can be read offline

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
        # a field that takes one thing or a list of them (corpus.target) or a number or a word
        # (train.replay_ratio: auto): the alternative the value's own YAML type fits
        fits = [a for a in args if _fits(a, value)]
        return _convert(fits[0] if fits else args[0], value, path, problems)
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


def _fits(tp: Any, value: Any) -> bool:
    """Whether a plain YAML value has the shape of type `tp` (its contents are checked when converted)."""
    if typing.get_origin(tp) is tuple:
        return isinstance(value, (list, tuple))
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else False


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _resolve_paths(recipe: Recipe, base_dir: Path) -> Recipe:
    """Make relative file paths in sources relative to the recipe file, if they exist there."""

    def fix(src: Any) -> Any:
        if isinstance(src, tuple):  # a list of sources
            return tuple(fix(s) for s in src)
        if src is None or ":" in src.path.split("/")[0] or Path(src.path).is_absolute():
            return src
        candidate = base_dir / src.path
        if not Path(src.path).exists() and (candidate.exists() or list(base_dir.glob(src.path))):
            return dataclasses.replace(src, path=str(candidate))
        return src

    corpus = dataclasses.replace(recipe.corpus, target=fix(recipe.corpus.target), replay=fix(recipe.corpus.replay))
    extra = tuple(fix(s) for s in recipe.eval.extra_sets)
    train = recipe.train
    if train.parallel is not None:  # the parallel files, likewise
        files = {}
        for key in ("path", "second_path"):
            value = getattr(train.parallel, key)
            if value and ":" not in value.split("/")[0] and not Path(value).is_absolute():
                if not Path(value).exists() and (base_dir / value).exists():
                    files[key] = str(base_dir / value)
        train = dataclasses.replace(train, parallel=dataclasses.replace(train.parallel, **files))
    return dataclasses.replace(
        recipe, corpus=corpus, eval=dataclasses.replace(recipe.eval, extra_sets=extra), train=train
    )


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
        listed = _one_or_list(tp)
        if listed is not None:  # one source or a list of them: the list item's fields, which include the one's
            default = "required" if f.default is dataclasses.MISSING else repr(f.default)
            rows.append((key, default, f.metadata.get("help", "")))
            rows.extend(field_help(listed, key))
            continue
        default = "required" if f.default is dataclasses.MISSING else repr(f.default)
        rows.append((key, default, f.metadata.get("help", "")))
    return rows


def _one_or_list(tp: Any) -> Any:
    """The item dataclass of a field typed `X | tuple[Y, ...]` (Y a dataclass), else None."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return None
    args = typing.get_args(tp)
    if not any(dataclasses.is_dataclass(a) for a in args):
        return None
    items = [typing.get_args(a)[0] for a in args if typing.get_origin(a) is tuple]
    return items[0] if items and dataclasses.is_dataclass(items[0]) else None


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

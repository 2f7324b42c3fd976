"""End to end through the CLI on a tiny model: the whole pipeline, re-runs that skip
finished stages, and one clear error (no traceback) for each kind of bad input."""

from __future__ import annotations

import pytest
from conftest import tiny_recipe_dict, write_recipe
from typer.testing import CliRunner

from langadapt.cli import app
from langadapt.rundir import read_json

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    return result.exit_code, text


def test_whole_pipeline_then_rerun_skips_everything(corpus_files, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "tiny.yaml", tiny_recipe_dict(corpus_files, tiny_model, run_dir))
    code, out = invoke("run", str(recipe))
    assert code == 0, out
    results = read_json(run_dir / "eval" / "results.json")
    assert set(results["bits_per_byte"]) == {"nya-heldout", "eng-heldout", "eng-ood"}
    _check_bits_per_byte(recipe, results["bits_per_byte"])
    page = (run_dir / "report" / "index.html").read_text()
    assert "nya-heldout" in page and "data:image/png;base64," in page
    assert (run_dir / "recipe.yaml").is_file()
    for folder in ("corpus", "tokenizer", "model-init", "train", "eval", "report"):
        assert (run_dir / folder / ".complete.json").is_file()
    assert not list(run_dir.glob("*.partial"))

    before = read_json(run_dir / "manifest.json")["stages"]
    code, out = invoke("run", str(recipe))
    assert code == 0, out
    after = read_json(run_dir / "manifest.json")["stages"]
    for stage, entry in after.items():
        assert "last_skipped" in entry and entry["started"] == before[stage]["started"], stage

    # a training change re-runs training and what follows, nothing before it
    code, out = invoke("run", str(recipe), "--set", "train.lr=0.002")
    assert code == 0, out
    again = read_json(run_dir / "manifest.json")["stages"]
    for stage in ("corpus", "tokenizer", "init"):
        assert again[stage]["started"] == before[stage]["started"]
    for stage in ("train", "eval", "report"):
        assert (
            again[stage]["started"] != before[stage]["started"]
            or again[stage]["fingerprint"] != before[stage]["fingerprint"]
        )


def _check_bits_per_byte(recipe_file, table) -> None:  # type: ignore[no-untyped-def]
    """The base figures are the base model's own on the sets' texts; the extended tokenizer
    encodes held-out nya in fewer tokens and English in exactly as many as before."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langadapt.evaluate.flow import eval_sets
    from langadapt.recipe import Recipe
    from langadapt.rundir import RunDir
    from langadapt.scoring.bpb import bits_per_byte

    recipe = Recipe.from_yaml(recipe_file)
    base = AutoModelForCausalLM.from_pretrained(recipe.model.base)
    tok = AutoTokenizer.from_pretrained(recipe.model.base)
    for s in eval_sets(recipe, RunDir(recipe.resolved_run_dir)):
        r = table[s.name]
        assert r["bytes"] == sum(len(t.encode()) for t in s.texts) > 0
        assert r["base"] == pytest.approx(bits_per_byte(base, tok, s.texts, recipe.eval)["bits_per_byte"], rel=1e-6)
        assert r["relative_change"] == pytest.approx(r["adapted"] / r["base"] - 1) and r["adapted"] != r["base"]
        if s.language == "nya":
            assert r["adapted_tokens"] < r["base_tokens"]
        else:
            assert r["adapted_tokens"] == r["base_tokens"]


def test_single_stage_commands_name_the_missing_stage(corpus_files, tiny_model, tmp_path):
    recipe = write_recipe(tmp_path / "tiny.yaml", tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run"))
    code, out = invoke("train", str(recipe))
    assert code == 1 and "stage 'init' has not finished" in out and "langadapt init" in out
    code, out = invoke("corpus", str(recipe))
    assert code == 0, out
    stats = read_json(tmp_path / "run" / "corpus" / "stats.json")["languages"]
    assert set(stats) == {"nya", "eng"} and all(s["kept"] > 0 for s in stats.values())
    assert not (tmp_path / "run" / "tokenizer").exists()  # one stage, nothing after it


def _bad(corpus_files, tiny_model, tmp_path, mutate):
    data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run")
    mutate(data)
    return write_recipe(tmp_path / "bad.yaml", data)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d["train"].update(max_stpes=5), "train.max_stpes: unknown key (did you mean 'max_steps'?)"),
        (lambda d: d["init"].update(method="wechsel2"), "unknown init-methods 'wechsel2'"),
        (lambda d: d["corpus"]["target"].update(path="/nonexistent/nya.txt"), "no file matches '/nonexistent/nya.txt'"),
        (lambda d: d["model"].update(base="/nonexistent/model"), "model.base: folder not found: /nonexistent/model"),
    ],
    ids=["misspelt-key", "unknown-method", "missing-corpus", "missing-model"],
)
def test_bad_recipes_fail_before_work_with_one_clear_error(corpus_files, tiny_model, tmp_path, mutate, message):
    recipe = _bad(corpus_files, tiny_model, tmp_path, mutate)
    for command in ("validate", "run"):
        code, out = invoke(command, str(recipe))
        assert code == 1 and message in out and "Traceback" not in out
    assert not (tmp_path / "run").exists()  # nothing was started


def test_empty_corpus_fails_with_counts(corpus_files, tiny_model, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    recipe = _bad(
        corpus_files, tiny_model, tmp_path, lambda d: d["corpus"]["target"].update(path=str(empty), group_field="")
    )
    code, out = invoke("run", str(recipe))
    assert code == 1 and "no nya documents left" in out and "blank" in out and "Traceback" not in out
    assert not (tmp_path / "run" / "corpus").exists()


def test_unreachable_hub_model_fails_before_corpus_work(corpus_files, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = _bad(corpus_files, tiny_model, tmp_path, lambda d: d["model"].update(base="no-such-org/no-such-model"))
    code, out = invoke("run", str(recipe))
    assert code == 1 and "cannot load a tokenizer from 'no-such-org/no-such-model'" in out and "Traceback" not in out
    assert not (tmp_path / "run" / "corpus").exists()


def test_install_hints_print_as_written(corpus_files, tiny_model, tmp_path, monkeypatch):
    """Rich markup would read '[adapters]' as a style tag and print "pip install 'langadapt'"."""
    from langadapt.errors import MissingDependencyError
    from langadapt.train import adapters

    monkeypatch.setattr(adapters, "adapters_installed", lambda: False)
    recipe = _bad(corpus_files, tiny_model, tmp_path, lambda d: d["train"].update(method="seq-bn"))
    code, out = invoke("validate", str(recipe))
    assert code == 1 and "train.method seq-bn: needs the adapters library: pip install 'langadapt[adapters]'" in out

    def missing(*args, **kwargs):
        raise MissingDependencyError("adapters", "this train method", "pip install 'langadapt[adapters]'")

    monkeypatch.setattr("langadapt.recipe.find_recipe", missing)
    code, out = invoke("validate", "any-recipe")
    assert code == 1 and "hint: install it with: pip install 'langadapt[adapters]'" in out
    # field help in --explain prints as written too (the help of train.sharding names an extra)
    monkeypatch.undo()
    ok = write_recipe(tmp_path / "ok.yaml", tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "ok"))
    code, out = invoke("validate", str(ok), "--explain")
    assert code == 0 and "langadapt[deepspeed]" in out


@pytest.mark.parametrize(
    "registry",
    [
        "init-methods",
        "tokenizer-methods",
        "train-methods",
        "objectives",
        "filters",
        "sources",
        "models",
        "recipes",
        "tasks",
    ],
)
def test_list(registry):
    import re

    from langadapt.catalog import registries
    from langadapt.recipe import shipped_recipes

    code, out = invoke("list", registry)
    names = sorted(shipped_recipes()) if registry == "recipes" else registries()[registry].names()
    listed = re.findall(r"^(\S+)  ", out, flags=re.M)  # each entry: its name, two spaces, its help or path
    assert code == 0 and sorted(listed) == sorted(names) and names, out


def test_list_unknown_registry():
    code, out = invoke("list", "widgets")
    assert code == 1 and "valid: recipes" in out and "init-methods" in out


@pytest.mark.parametrize(
    "command", ["demo", "run", "validate", "list", "corpus", "tokenizer", "init", "train", "eval", "report", "export"]
)
def test_help(command):
    code, out = invoke(command, "--help")
    assert code == 0 and "Usage" in out


def test_validate_explain_documents_every_key(corpus_files, tiny_model, tmp_path):
    recipe = write_recipe(tmp_path / "tiny.yaml", tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run"))
    code, out = invoke("validate", str(recipe), "--explain")
    assert code == 0 and "train.replay_ratio" in out and "corpus.heldout_groups" in out


def test_word_level_base_cannot_be_extended_and_says_so_before_work(corpus_files, tmp_path):
    from conftest import english_lines, save_tiny_llama
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(
        english_lines(200), trainers.WordLevelTrainer(vocab_size=120, special_tokens=["<s>", "</s>", "<unk>"])
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    folder = save_tiny_llama(tmp_path / "word-level-model", tok)
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe_dict(corpus_files, folder, tmp_path / "run"))
    code, out = invoke("run", str(recipe))
    assert code == 1 and "the base tokenizer's model is WordLevel" in out and "Traceback" not in out
    assert not (tmp_path / "run" / "corpus").exists()

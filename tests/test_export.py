"""Export: a run becomes a folder that loads with plain transformers (or peft) in a fresh
process and scores the same bits per byte as the eval stage; the model card says what was
done and what it cost; pushing is tested up to the network call."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from langadapt.cli import app
from langadapt.rundir import read_json

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_run_with_tasks_writes_scores_for_every_model_language_and_setting(finished_run):
    run_dir, _, out = finished_run
    results = read_json(run_dir / "eval" / "results.json")
    rows = results["tasks"]
    keys = {(r["task"], r["model"], r["language"], r["setting"]) for r in rows}
    for model in ("base", "adapted"):
        for lang in ("nya", "eng"):
            assert ("topic", model, lang, "in-language") in keys and ("ner", model, lang, "in-language") in keys
        assert ("topic", model, "nya", "from eng") in keys and ("bitext", model, "nya", "nya→eng") in keys
        assert ("mexa", model, "nya", "nya↔eng") in keys
    topic = [r for r in rows if r["task"] == "topic"]
    assert all(len(r["seeds"]) == 3 for r in topic)
    assert results["task_data"]["topic"]["examples"]["nya/test"] == 6 and results["seconds"]
    page = (run_dir / "report" / "index.html").read_text()
    assert "In short." in page and "held-out nya text (nya-heldout; " in page and " characters): bits per byte" in page
    # each figure says what it rests on: held-out documents and characters, test examples and seeds
    sets = results["sets"]["nya-heldout"]
    assert f"{sets['documents']} documents, {sets['characters']:,} characters" in page
    assert "3 seeds, 6 test examples" in page or "within the spread over seeds; 3 seeds" in page
    assert "topic accuracy in nya" in page and "<h3>ner (tag)</h3>" in page and "±" in page
    assert "topic (classify" in out  # the CLI prints the task tables


def test_merged_export_loads_in_a_fresh_process_with_the_same_bits_per_byte(finished_run, tmp_path):
    run_dir, _, _ = finished_run
    code, out = invoke("export", str(run_dir), "--to", str(tmp_path / "model"))
    assert code == 0, out
    folder = tmp_path / "model"
    assert (folder / "config.json").is_file() and (folder / "langadapt_recipe.yaml").is_file()
    assert not (tmp_path / "model.partial").exists()
    results = read_json(run_dir / "eval" / "results.json")
    recipe = read_json_yaml(run_dir / "recipe.yaml")
    script = f"""
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
from langadapt.documents import read_docs
from langadapt.scoring.bpb import bits_per_byte
from langadapt.recipe import EvalConfig
model = AutoModelForCausalLM.from_pretrained({str(folder)!r}); tok = AutoTokenizer.from_pretrained({str(folder)!r})
texts = [d.text for d in read_docs(__import__('pathlib').Path({str(run_dir / "corpus" / "nya" / "heldout.parquet")!r}))]
kept, size = [], 0
for t in texts:
    if kept and size + len(t) > {recipe["eval"]["max_chars"]}: break
    kept.append(t); size += len(t)
cfg = EvalConfig(context_length={recipe["eval"]["context_length"]}, stride={recipe["eval"]["stride"]})
print(json.dumps(bits_per_byte(model, tok, kept, cfg)))
"""
    got = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert got["bits_per_byte"] == pytest.approx(results["bits_per_byte"]["nya-heldout"]["adapted"], rel=1e-5)


def read_json_yaml(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_model_card_says_what_was_done_and_what_it_cost(finished_run, tmp_path):
    run_dir, _, _ = finished_run
    from langadapt.export import export

    card = (export(run_dir, tmp_path / "m") / "README.md").read_text()
    assert card.startswith("---\nlicense:") and "- nya\n- eng" in card
    for heading in (
        "## In short",
        "## Method",
        "## Data and licences",
        "## Evaluation",
        "## Known forgetting",
        "## Use",
        "## Reproduce",
    ):
        assert heading in card, heading
    assert "| nya-heldout | nya |" in card and "**topic** (classify" in card
    assert "langadapt run langadapt_recipe.yaml" in card and "state its licence here" in card
    import yaml

    assert yaml.safe_load((tmp_path / "m" / "langadapt_recipe.yaml").read_text())["run_dir"] == ""
    code, out = invoke("export", str(run_dir), "--to", str(tmp_path / "m"))
    assert code == 1 and "exists and is not empty" in out  # never overwritten by accident


def test_adapter_export_loads_with_peft_and_matches_the_merged_model(finished_run, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir, _, _ = finished_run
    code, out = invoke("export", str(run_dir), "--to", str(tmp_path / "a"), "--format", "adapter")
    assert code == 0, out
    folder = tmp_path / "a"
    assert (folder / "adapter_config.json").is_file() and (folder / "base" / "config.json").is_file()
    assert read_json(folder / "adapter_config.json")["base_model_name_or_path"] == "base"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder / "base"), folder).eval()
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "train" / "final").eval()
    ids = torch.tensor([[1, 5, 9, 30, 2]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, merged(ids).logits, rtol=1e-4, atol=1e-4)
    assert "PeftModel.from_pretrained" in (folder / "README.md").read_text()


def test_push_to_hub_goes_up_to_the_network_call(finished_run, tmp_path, monkeypatch):
    import huggingface_hub

    run_dir, _, _ = finished_run
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw))
            return f"https://example.invalid/{repo_id}"

        def upload_folder(self, **kw):
            calls.append(
                (
                    "upload",
                    kw["repo_id"],
                    sorted(p.name for p in __import__("pathlib").Path(kw["folder_path"]).iterdir()),
                )
            )

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    code, out = invoke("export", str(run_dir), "--to", str(tmp_path / "p"), "--push-to-hub", "me/tiny-nya", "--private")
    assert code == 0, out
    assert calls[0] == ("create", "me/tiny-nya", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls[1][0] == "upload" and "README.md" in calls[1][2] and "model.safetensors" in calls[1][2]

    class Offline(FakeApi):
        def create_repo(self, repo_id, **kw):
            raise OSError("Cannot reach the hub: offline")

    monkeypatch.setattr(huggingface_hub, "HfApi", Offline)
    code, out = invoke("export", str(run_dir), "--to", str(tmp_path / "q"), "--push-to-hub", "me/x")
    assert code == 1 and "cannot push" in out and "huggingface-cli login" in out and "Traceback" not in out
    assert (tmp_path / "q" / "README.md").is_file()  # the export itself stands


def test_export_of_an_unfinished_run_names_the_missing_stage(tmp_path):
    code, out = invoke("export", str(tmp_path), "--to", str(tmp_path / "out"))
    assert code == 1 and "not a langadapt run directory" in out


def test_eval_compares_more_than_two_models(finished_run, tiny_untied_model):
    """Last in this file: it leaves a third model in the run's results."""
    run_dir, recipe, _ = finished_run
    code, out = invoke("eval", str(recipe), "--model", str(tiny_untied_model))
    assert code == 0, out
    results = read_json(run_dir / "eval" / "results.json")
    label = tiny_untied_model.name
    assert list(results["models"]) == ["base", "adapted", label]
    assert all(label in r["models"] for r in results["bits_per_byte"].values())
    assert {r["model"] for r in results["tasks"]} == {"base", "adapted", label} and label in out
    code, out = invoke("validate", str(recipe), "--set", "eval.compare=[/nonexistent/model]")
    assert code == 1 and "eval.compare[0]: folder not found: /nonexistent/model" in out and "Traceback" not in out


def test_encoder_with_bottleneck_adapters_exports_as_an_adapterhub_folder(corpus_files, tiny_encoder, tmp_path):
    """Bottleneck adapters cannot be merged: `merged` says so; `adapter` gives an AdapterHub folder
    that a fresh process loads with plain transformers + adapters, computing what langadapt computes."""
    from conftest import tiny_recipe_dict, write_recipe

    from langadapt.models.loading import load_model

    train = {"objective": "mlm", "method": "seq-bn", "max_steps": 2, "seq_len": 32, "batch_size": 4}
    data = tiny_recipe_dict(corpus_files, tiny_encoder, tmp_path / "run", tokenizer={"method": "keep"}, train=train)
    recipe = write_recipe(tmp_path / "enc.yaml", data)
    for stage in ("corpus", "tokenizer", "init", "train"):
        code, out = invoke(stage, str(recipe))
        assert code == 0, out
    run_dir = tmp_path / "run"
    code, out = invoke("export", str(run_dir), "--to", str(tmp_path / "merged"))
    assert code == 1 and "cannot be merged" in out and "--format adapter" in out
    assert not (tmp_path / "merged").exists() and not (tmp_path / "merged.partial").exists()
    code, out = invoke("export", str(run_dir), "--to", str(tmp_path / "g"), "--format", "gguf")
    assert code == 1 and "which a GGUF file cannot hold" in out and not (tmp_path / "g.partial").exists()

    code, out = invoke("export", str(run_dir), "--to", str(tmp_path / "a"), "--format", "adapter")
    assert code == 0, out
    folder = tmp_path / "a"
    assert (folder / "adapter_config.json").is_file() and (folder / "base" / "config.json").is_file()
    assert "AutoModelForMaskedLM" in (folder / "README.md").read_text()
    script = f"""
import json, torch, adapters
from transformers import AutoModelForMaskedLM
model = AutoModelForMaskedLM.from_pretrained({str(folder / "base")!r})
adapters.init(model)
model.set_active_adapters(model.load_adapter({str(folder)!r}))
with torch.no_grad():
    print(json.dumps(model.eval()(input_ids=torch.tensor([[0, 5, 17, 33, 60, 2]])).logits[0, :, :8].tolist()))
"""
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    import torch

    got = torch.tensor(json.loads(fresh.stdout.strip().splitlines()[-1]))
    with torch.no_grad():
        want = load_model(str(run_dir / "train" / "final")).eval()(input_ids=torch.tensor([[0, 5, 17, 33, 60, 2]]))
    torch.testing.assert_close(got, want.logits[0, :, :8], rtol=1e-4, atol=1e-5)


def test_known_forgetting_says_when_a_fall_is_within_the_spread_over_seeds():
    from test_report import row

    from langadapt.export import _forgetting_lines

    results = {
        "sets": {},
        "bits_per_byte": {},
        "tasks": [
            row("base", "eng", "in-language", 0.245, 0.019, seeds=3),
            row("adapted", "eng", "in-language", 0.193, 0.045, seeds=3),
            row("base", "eng", "from nya", 0.50, 0.01, seeds=3),
            row("adapted", "eng", "from nya", 0.40, 0.01, seeds=3),
        ],
    }
    lines = _forgetting_lines(results, "eng")
    assert (
        "- topic accuracy eng in-language: 0.245 → 0.193 (within the spread over seeds: no measurable change)" in lines
    )
    assert "- topic accuracy eng from nya: 0.500 → 0.400" in lines


def test_the_card_of_a_phased_run_describes_each_phase_as_the_report_does(tmp_path):
    """The e5 demo trains a head warm-up, then LoRA with every embedding row: not 'lora, 40 steps, lr 0.001'."""
    from test_report import E5_PHASES_SUMMARY

    from langadapt.export import model_card
    from langadapt.recipe import Recipe, shipped_recipes
    from langadapt.report.training import phase_table
    from langadapt.rundir import RunDir, write_json

    recipe = Recipe.from_yaml(shipped_recipes()["demo-nya-e5"], [f"run_dir={tmp_path / 'run'}"])
    rd = RunDir(tmp_path / "run")
    (rd.path("train")).mkdir(parents=True)
    write_json(rd.path("train") / "summary.json", E5_PHASES_SUMMARY)
    card = model_card(recipe, rd, {}, "merged", "model = ...")
    training = next(line for line in card.splitlines() if line.startswith("- training:"))
    assert training.startswith(
        "- training: 2 phases, 195 steps: head-warmup (head, 45 of 60 steps (stopped early), lr 0.002), "
        "then lora (lora, 150 steps, lr 0.003); objective `mlm`"
    )
    assert "40 steps" not in card and "lr 0.001" not in card
    header, rows = phase_table(recipe.train, E5_PHASES_SUMMARY)
    assert "| " + " | ".join(header) + " |" in card
    for row in rows:  # the report's rows, word for word
        assert "| " + " | ".join(row) + " |" in card


def test_an_encoders_card_and_cli_say_pseudo_bits_per_byte(tmp_path, capsys):
    from test_report import E5_PHASES_SUMMARY, encoder_results

    from langadapt.cli import _print_results
    from langadapt.export import model_card
    from langadapt.recipe import Recipe, shipped_recipes
    from langadapt.rundir import RunDir, write_json

    results = encoder_results()
    results["bits_per_byte"]["eng-heldout"]["models"] = {"base": 1.0, "adapted": 1.005}
    results["bits_per_byte"]["nya-heldout"]["models"] = {"base": 3.0, "adapted": 2.19}
    recipe = Recipe.from_yaml(shipped_recipes()["demo-nya-e5"], [f"run_dir={tmp_path / 'run'}"])
    rd = RunDir(tmp_path / "run")
    rd.path("train").mkdir(parents=True)
    write_json(rd.path("train") / "summary.json", E5_PHASES_SUMMARY)
    rd.path("corpus").mkdir(parents=True)
    write_json(rd.path("corpus") / "stats.json", {"target": "nya", "replay": "eng"})
    card = model_card(recipe, rd, results, "merged", "model = ...")
    assert "Pseudo bits per byte on held-out text (lower is better):" in card
    assert "- eng-heldout: pseudo bits per byte +0.5%" in card  # known forgetting
    assert "characters): pseudo bits per byte fell 27.0%" in card  # the summary sentence
    assert "Bits per byte on held-out" not in card
    _print_results({**results, "tasks": []})
    printed = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "pseudo bits per byte on held-out text" in printed and "pseudo bits per byte fell 27.0%" in printed


def test_options_of_one_format_given_to_another_are_refused_before_any_work(finished_run, tmp_path):
    """--quant is the GGUF file's, the graft writes a merged folder: each mix-up is one error, nothing written."""
    run_dir, _, _ = finished_run
    code, out = invoke("export", str(run_dir), "--to", str(tmp_path / "q"), "--quant", "q8_0")
    assert code == 1 and "--quant applies to --format gguf only (not merged)" in out
    code, out = invoke(
        "export", str(run_dir), "--to", str(tmp_path / "g"), "--format", "gguf",
        "--graft-instruct", str(tmp_path / "i"), "--graft-base", str(tmp_path / "b"),
    )  # fmt: skip
    assert code == 1 and "the instruction graft writes a merged model, not --format gguf" in out
    assert not any(tmp_path.iterdir())

"""The from-scratch model (train.method scratch, eval.reference scratch): Goldfish's size table and the byte
premium, the byte-level vocabulary, a tiny training run that learns, resume of the reference stage, the
report's row and sentence, and the recipe errors."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from langadapt.errors import ConfigError
from langadapt.report.compare import model_rows, training_flops
from langadapt.report.summary import reference_sentence, summary_sentences
from langadapt.rundir import RunDir, read_json
from langadapt.train import loop, reference, scratch
from langadapt.train.config import ScratchConfig

MB = 1_000_000


@pytest.mark.parametrize(
    ("scaled_mb", "tier", "layers", "hidden", "batch"),
    [
        (0.5, "5mb", 4, 512, 4),  # below Goldfish's smallest tier: its 5mb recipe
        (9.999, "5mb", 4, 512, 4),
        (10.0, "10mb", 4, 512, 8),
        (99.9, "10mb", 4, 512, 8),
        (100.0, "100mb", 12, 768, 32),
        (999.0, "100mb", 12, 768, 32),
        (1000.0, "1000mb", 12, 768, 64),
    ],
)
def test_the_size_follows_goldfish_table_at_its_boundaries(scaled_mb, tier, layers, hidden, batch):
    size = scratch.choose_size(scaled_mb, ScratchConfig())
    assert (size.tier, size.layers, size.hidden, size.batch_size) == (tier, layers, hidden, batch)
    assert ("note" in size.record()) == (scaled_mb < 5)


def test_the_byte_premium_scales_the_corpus_before_the_size_is_chosen():
    # 150 MB of text: the 100mb tier for a language as compact as English, the 10mb tier at a premium of 2
    assert scratch.choose_size(scratch.scaled_megabytes(150 * MB, 1.0), ScratchConfig()).layers == 12
    halved = scratch.choose_size(scratch.scaled_megabytes(150 * MB, 2.0), ScratchConfig())
    assert (halved.tier, halved.layers, halved.hidden, halved.scaled_mb) == ("10mb", 4, 512, 75.0)
    # measured on parallel documents paired by id; a document without its translation does not count
    doc = lambda i, t: SimpleNamespace(id=i, text=t)  # noqa: E731
    target = [doc("a", "ŵaŵa"), doc("b", "xyz"), doc("only-here", "ignored text")]
    english = [doc("a", "ab"), doc("b", "abcd"), doc("only-there", "x")]
    measured = scratch.measure_byte_premium(target, english)
    assert measured["pairs"] == 2 and measured["byte_premium"] == pytest.approx((6 + 3) / (2 + 4), abs=1e-4)


def test_a_size_of_your_own_replaces_the_table():
    size = scratch.choose_size(3.0, ScratchConfig(layers=2, hidden=128, batch_size=16))
    assert (size.layers, size.hidden, size.batch_size, size.overridden) == (
        2,
        128,
        16,
        ("layers", "hidden", "batch_size"),
    )


def test_the_scratch_model_is_the_base_family_at_the_chosen_size(tiny_model):
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    base, tok = AutoConfig.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    size = scratch.choose_size(1.0, ScratchConfig(layers=3, hidden=128))
    config = scratch.scratch_config(base, tok, size)
    assert type(config) is type(base) and config.tie_word_embeddings == base.tie_word_embeddings
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (3, 128, 2)
    assert config.num_key_value_heads == 2 and config.vocab_size == len(tok)
    assert config.intermediate_size == 256  # the tiny base's 2:1 feed-forward ratio
    model = scratch.build_model(config, seed=0)
    assert isinstance(model, LlamaForCausalLM) and len(model.model.layers) == 3


def test_the_byte_vocabulary_is_the_special_tokens_then_256_bytes(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from langadapt.tokenizer.scratch import byte_tokenizer

    base = AutoTokenizer.from_pretrained(tiny_model)
    tok = byte_tokenizer(base, tmp_path / "bytes")
    specials = len(set(base.all_special_tokens))
    assert len(tok) == specials + 256
    assert sorted(tok.convert_tokens_to_ids(t) for t in base.all_special_tokens) == list(range(specials))
    text = "Moni, ŵanthu! 日本"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8")) and min(ids) >= specials
    assert tok.decode(ids) == text
    assert tok.eos_token == base.eos_token


# -- the reference stage on a finished tiny run ---------------------------------------------------------


def _reference_run(finished_run, tmp_path, name, **scratch_cfg):
    """The finished tiny run's corpus, tokenizer and init copied, its recipe with a tiny reference model."""
    import yaml

    from langadapt.recipe import Recipe
    from langadapt.tokenizer import scratch as scratch_tokenizer

    run_dir, recipe_file, _ = finished_run
    root = tmp_path / name
    for folder in ("corpus", "tokenizer", "model-init"):
        shutil.copytree(run_dir / folder, root / folder)
    data = yaml.safe_load(recipe_file.read_text())
    cfg = {"layers": 1, "hidden": 64, "byte_premium": 1.0, "vocab_size": 300, "lr": 3e-3, "batch_size": 4}
    data["train"] = {**data["train"], "save_every": 2, "scratch": {**cfg, "seq_len": 64, **scratch_cfg}}
    data["eval"] = {**data["eval"], "reference": "scratch"}
    data["run_dir"] = str(root)
    recipe = Recipe.from_dict(data)
    rd = RunDir(root)
    scratch_tokenizer.run(recipe, rd)  # the stage before the reference: its own tokenizer
    return recipe, rd


def _heldout_bpb(model, tok, rd):
    from langadapt.documents import languages, read_texts
    from langadapt.evaluate.config import EvalConfig
    from langadapt.scoring.bpb import bits_per_byte

    target, _ = languages(rd)
    return bits_per_byte(model, tok, read_texts(rd, target, "heldout"), EvalConfig(context_length=64, stride=32))[
        "bits_per_byte"
    ]


def test_a_tiny_scratch_model_learns_the_heldout_target_text(finished_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe, rd = _reference_run(finished_run, tmp_path, "learns", max_steps=40)
    reference.run(recipe, rd)
    final = rd.path("reference") / "final"
    tok = AutoTokenizer.from_pretrained(final)
    trained = AutoModelForCausalLM.from_pretrained(final)
    untrained = scratch.build_model(trained.config, recipe.seed)  # the same initialisation, no training
    before, after = _heldout_bpb(untrained, tok, rd), _heldout_bpb(trained, tok, rd)
    assert after < 0.7 * before, (before, after)
    summary = read_json(rd.path("reference") / "summary.json")
    assert summary["steps"] == 40 and summary["scratch"]["schedule"]["capped"] is True
    assert summary["scratch"]["architecture"]["layers"] == 1 and summary["parameters"] == scratch.parameters(trained)
    assert summary["training_flops"] == summary["model_flops_per_token"] * 40 * 4 * 64


def test_an_interrupted_reference_stage_resumes_from_its_checkpoint(finished_run, tmp_path, monkeypatch):
    recipe, rd = _reference_run(finished_run, tmp_path, "resume", max_steps=4)
    real_save = loop.save_checkpoint

    def save_then_die(out, step, *args, **kwargs):
        real_save(out, step, *args, **kwargs)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        reference.run(recipe, rd)
    assert not rd.is_complete("reference") and (rd.partial("reference") / "checkpoints" / "step-000002").is_dir()
    assert rd.manifest()["stages"]["reference"]["status"] == "interrupted"
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    reference.run(recipe, rd)
    summary = read_json(rd.path("reference") / "summary.json")
    assert summary["resumed_from_step"] == 2 and summary["steps"] == 4
    started = rd.manifest()["stages"]["reference"]["started"]
    reference.run(recipe, rd)  # finished with the same inputs: skipped
    assert rd.manifest()["stages"]["reference"]["started"] == started


# -- the report -----------------------------------------------------------------------------------------


def _results(adapted: float, scratch_bpb: float) -> dict:
    return {
        "sets": {"nya-heldout": {"language": "nya", "kind": "target-heldout", "documents": 3, "characters": 900}},
        "bits_per_byte": {
            "nya-heldout": {
                "base": 3.0,
                "adapted": adapted,
                "relative_change": (adapted - 3.0) / 3.0,
                "models": {"base": 3.0, "adapted": adapted, "scratch": scratch_bpb},
            }
        },
        "parameters": {"base": 135_000_000, "adapted": 137_000_000, "scratch": 17_000_000},
    }


def test_the_summary_says_whether_adapting_beat_the_scratch_model():
    won = reference_sentence(_results(2.2, 2.9))
    assert won.startswith("adapting beat the model trained from scratch") and "2.200 adapted against 2.900" in won
    assert "137M parameters against 17M parameters" in won
    assert reference_sentence(_results(2.2, 2.1)).startswith("adapting did not beat")
    assert summary_sentences(_results(2.2, 2.9), "nya", "eng")[1] == won  # right after the target's own figure
    no_reference = _results(2.2, 2.9)
    del no_reference["bits_per_byte"]["nya-heldout"]["models"]["scratch"]
    assert reference_sentence(no_reference) == ""


def test_the_models_table_gives_parameters_and_training_compute():
    train = {
        "method": "lora",
        "trainable_parameters": 6_000_000,
        "model_flops_per_token": 600.0,
        "tokens": {"nya": 90, "eng": 10},
    }
    ref = {
        "model_flops_per_token": 100.0,
        "tokens": {"nya": 1000},
        "scratch": {"architecture": {"layers": 4, "hidden": 512, "vocabulary": "target"}, "epochs_trained": 0.1},
    }
    assert training_flops(train) == 600.0 * 100 and training_flops(ref) == 100.0 * 1000
    phased = {
        "phases": [
            {"model_flops_per_token": 2.0, "tokens": {"nya": 5}},
            {"model_flops_per_token": 3.0, "tokens": {"nya": 7}},
        ]
    }
    assert training_flops(phased) == 2.0 * 5 + 3.0 * 7
    header, rows = model_rows(_results(2.2, 2.9), train, ref)
    assert header[-1] == "nya-heldout" and [r[0] for r in rows] == ["base", "adapted", "from scratch (eval.reference)"]
    assert rows[1][1:5] == ["137M", "yes (lora, 6M trainable)", "100", "60k"]
    assert rows[2][1] == "17M" and rows[2][4] == "100k" and rows[2][-1] == "2.9000"


# -- recipe errors --------------------------------------------------------------------------------------


def test_scratch_recipes_that_make_no_sense_are_refused_at_validation(tiny_recipe):
    with pytest.raises(ConfigError) as e:
        tiny_recipe(train={"method": "scratch", "scratch": {"layers": 4}}, eval={"reference": "scratch"})
    text = str(e.value)
    assert "eval.reference: scratch trains a from-scratch model beside an adapted one" in text
    assert "tokenizer.method: extend adapts a tokenizer that train.method scratch does not use" in text
    assert "train.scratch.layers and train.scratch.hidden: give both" in text
    # the tiny corpus has no English translation to measure a byte premium on
    assert "train.scratch.byte_premium: the from-scratch model is sized by English-equivalent bytes" in text

    with pytest.raises(ConfigError) as e:
        tiny_recipe(
            train={
                "scratch": {"layers": 2, "hidden": 100, "byte_premium": 1.0, "epochs": 0},
                "phases": [{"method": "new-rows", "max_steps": 1}, {"method": "scratch", "max_steps": 1}],
            },
            eval={"reference": "scratch"},
        )
    text = str(e.value)
    assert "train.phases[1].method: scratch trains a fresh model whole and cannot be a phase" in text
    assert "train.scratch.hidden: 100 is not a multiple of 64" in text and "e.g. 128" in text
    assert "train.scratch.epochs: must be > 0" in text

    with pytest.raises(ConfigError, match="eval.reference: 'goldfish' is not one of"):
        tiny_recipe(eval={"reference": "goldfish"})


def test_a_run_without_a_scratch_model_keeps_its_fingerprints(tiny_recipe):
    """The from-scratch options enter none of the adaptation's own stages: asking for a reference leaves the
    tokenizer's and the training's inputs (so their fingerprints) as they were."""
    from langadapt.tokenizer import flow as tokenizer_flow
    from langadapt.train import flow as train_flow

    plain = tiny_recipe()
    with_ref = tiny_recipe(
        train={"scratch": {"byte_premium": 1.0, "layers": 2, "hidden": 64}}, eval={"reference": "scratch"}
    )
    rd = RunDir(plain.resolved_run_dir)
    for stage in ("corpus", "init"):  # the inputs read the upstream fingerprints (and init's tokenizer) only
        rd.path(stage).mkdir(parents=True)
        (rd.path(stage) / ".complete.json").write_text(f'{{"fingerprint": "{stage}"}}')
    shutil.copytree(plain.model.base, rd.path("init"), dirs_exist_ok=True)
    assert tokenizer_flow.inputs(plain, rd) == tokenizer_flow.inputs(with_ref, rd)
    assert train_flow.inputs(plain, rd) == train_flow.inputs(with_ref, rd)
    assert "scratch" not in train_flow.inputs(plain, rd)["config"]
    # and a run that asks for no from-scratch model runs neither of its stages
    from langadapt.tokenizer import scratch as scratch_tokenizer

    scratch_tokenizer.run(plain, rd)
    reference.run(plain, rd)
    assert not rd.path("scratch-tokenizer").exists() and not rd.path("reference").exists()

"""Distillation into a small student: its layer and vocabulary mapping, the losses against hand-computed
values, resume in the middle, and every bad choice refused before any work."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from langadapt.distill.config import DistillConfig
from langadapt.distill.flow import run as distill_run
from langadapt.distill.flow import trim_vocabulary
from langadapt.distill.losses import Distillation, attention_kl, hidden_distance, logit_kl
from langadapt.distill.student import build_student, layer_list, parameter_count, projected_parameters, student_layers
from langadapt.errors import ConfigError
from langadapt.models.loading import load_tokenizer
from langadapt.rundir import RunDir


def tiny_teacher(tie: bool = True, layers: int = 4, vocab: int = 97):  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(config).eval()


# -- the student's shape ------------------------------------------------------------------------------


def test_every_kth_layer_keeps_the_top_one_and_explicit_layers_are_checked():
    assert student_layers(DistillConfig(layers_every=3), 30) == (2, 5, 8, 11, 14, 17, 20, 23, 26, 29)
    assert student_layers(DistillConfig(layers_every=2), 5) == (1, 3)
    assert student_layers(DistillConfig(layers=(0, 2)), 4) == (0, 2)
    with pytest.raises(ConfigError, match="has no layer 4"):
        student_layers(DistillConfig(layers=(0, 4)), 4)
    with pytest.raises(ConfigError, match="increasing"):
        student_layers(DistillConfig(layers=(2, 1)), 4)


@pytest.mark.parametrize("tie", [True, False])
def test_the_student_is_the_teachers_layers_and_rows(tie):
    teacher = tiny_teacher(tie)
    kept, layers = [0, 3, 5, 40, 96], (1, 3)
    student = build_student(teacher, kept, layers)
    assert student.config.num_hidden_layers == 2 and student.config.vocab_size == 5
    assert teacher.config.num_hidden_layers == 4 and teacher.config.vocab_size == 97  # the teacher is untouched
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight[kept])
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight[kept])
    assert (student.lm_head.weight is student.model.embed_tokens.weight) == tie
    for i, j in enumerate(layers):
        mine, theirs = student.model.layers[i].state_dict(), teacher.model.layers[j].state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert not torch.equal(student.model.layers[0].mlp.up_proj.weight, teacher.model.layers[0].mlp.up_proj.weight)
    assert torch.equal(student.model.norm.weight, teacher.model.norm.weight)
    assert parameter_count(student) == projected_parameters(teacher, layers, len(kept)) < parameter_count(teacher)


def test_a_student_with_every_layer_computes_the_teachers_logits_on_its_tokens():
    teacher = tiny_teacher(tie=False)
    kept = [0, 2, 7, 11, 50, 60, 96]
    student = build_student(teacher, kept, (0, 1, 2, 3))
    ids = torch.tensor([[1, 4, 2, 6, 0, 3]])
    with torch.no_grad():
        mine = student(input_ids=ids).logits
        theirs = teacher(input_ids=torch.tensor(kept)[ids]).logits[..., kept]
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_the_trimmed_vocabulary_keeps_the_used_tokens_and_maps_them_to_the_teachers_ids(tiny_model, tmp_path):
    tok = load_tokenizer(str(tiny_model))
    texts = {"nya": ["moni bambo, muli bwanji?"] * 3, "eng": ["the king said hello"]}
    student_tok, kept, record = trim_vocabulary(tok, texts, 0, 1, tmp_path / "student")
    assert len(student_tok) == len(kept) == record["student_tokens"] < len(tok)
    teacher_vocab = tok.get_vocab()
    for token, i in student_tok.get_vocab().items():
        assert teacher_vocab[token] == kept[i]
    for text in ("moni bambo, muli bwanji?", "the king said hello"):  # every used token kept: the same segmentation
        mine = student_tok(text, add_special_tokens=False)["input_ids"]
        assert [kept[i] for i in mine] == tok(text, add_special_tokens=False)["input_ids"]


# -- the losses -------------------------------------------------------------------------------------


def test_logit_kl_against_a_hand_computed_value():
    # T = 2: the teacher's logits (2 ln 3, 0) give (3/4, 1/4), the student's (0, 0) give (1/2, 1/2)
    teacher = torch.tensor([[2 * math.log(3), 0.0]])
    student = torch.tensor([[0.0, 0.0]])
    expected = 4 * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert logit_kl(student, teacher, 2.0).item() == pytest.approx(expected, rel=1e-6)
    assert logit_kl(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_hidden_and_attention_losses_against_hand_computed_values():
    s, t = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])
    assert hidden_distance(s, t, "mse").item() == pytest.approx(((2**2 + 2**2) / 2) / ((9 + 16) / 2))
    assert hidden_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), "cosine").item() == pytest.approx(
        1 - 1 / math.sqrt(2)
    )
    # (batch, heads, query, key): one query over three keys, the third masked (0 in both); two heads averaged
    teacher = torch.tensor([[[[0.5, 0.5, 0.0]], [[1.0, 0.0, 0.0]]]])
    student = torch.tensor([[[[0.25, 0.75, 0.0]], [[0.5, 0.5, 0.0]]]])
    head0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    head1 = 1.0 * math.log(1.0 / 0.5)
    assert attention_kl(student, teacher).item() == pytest.approx((head0 + head1) / 2, rel=1e-6)


def test_the_objective_is_zero_for_a_student_that_is_its_teacher_restricted_to_its_tokens():
    """The teacher's logits at the kept tokens, renormalised: a full-depth student of a trimmed vocabulary
    matches them exactly; dropping layers does not."""
    teacher = tiny_teacher()
    kept = [0, 2, 7, 11, 50, 60, 96]
    ids = torch.tensor([[1, 4, 2, 6, 0, 3, 5, 1]])

    def loss(layers):  # type: ignore[no-untyped-def]
        student = build_student(teacher, kept, layers)
        objective = Distillation(
            teacher,
            layer_list(teacher)[1],
            layer_list(student)[1],
            torch.tensor(kept),
            list(enumerate(layers)),
            DistillConfig(temperature=2.0),
        )
        return objective(student, ids)

    full = loss((0, 1, 2, 3))
    assert full.shape == ids.shape
    assert full.abs().max().item() < 1e-5
    assert loss((1, 3)).mean().item() > 1e-3


# -- resume and bad input on a run directory ------------------------------------------------------


def _trained_run(root, model_dir, tiny_recipe, **distill):  # type: ignore[no-untyped-def]
    """A run directory whose train stage holds `model_dir` as its final model (no corpus work)."""
    rd = RunDir(root)
    with rd.stage("train", "fp", {}) as ctx:
        shutil.copytree(model_dir, ctx.out / "final")
    return rd, tiny_recipe(run_dir=str(root), distill={"enabled": True, **distill})


@pytest.mark.parametrize(
    "distill, message",
    [
        ({"layers": [0, 7]}, "the teacher has 2 layers (0..1); it has no layer 7"),
        ({"layers_every": 3}, "not a layer step of a teacher with 2 layers"),
        ({"vocab_size": 100_000, "layers_every": 2}, "is more than the teacher's"),
        ({"layers_every": 1}, "would not be smaller than its teacher"),
    ],
)
def test_a_layer_the_teacher_lacks_or_a_student_not_smaller_is_refused_before_any_work(
    tiny_recipe, tiny_model, tmp_path, distill, message
):
    rd, recipe = _trained_run(tmp_path / "run", tiny_model, tiny_recipe, **distill)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        distill_run(recipe, rd)
    assert not rd.partial("distill").exists() and "distill" not in rd.manifest()["stages"]


def test_distilling_a_run_without_a_trained_model_is_refused_before_any_work(tiny_recipe, tmp_path):
    rd = RunDir(tmp_path / "run")
    recipe = tiny_recipe(run_dir=str(rd.root), distill={"enabled": True})
    with pytest.raises(ConfigError, match="no trained model"):
        distill_run(recipe, rd)
    assert not rd.partial("distill").exists()


def test_a_bad_distill_section_is_a_recipe_error(tiny_recipe):
    with pytest.raises(ConfigError) as e:
        tiny_recipe(distill={"hidden_loss": "l1", "temperature": 0})
    assert any("distill.hidden_loss" in p for p in e.value.problems)
    assert any("distill.temperature" in p for p in e.value.problems)


def test_distillation_resumed_in_the_middle_ends_where_a_straight_run_ends(tiny_recipe, tmp_path):
    """Four steps straight; then the same four from the straight run's step-2 checkpoint, in a fresh process
    state (new student, new streams): the same weights at the end."""
    from langadapt.train.data import TokenStream
    from langadapt.train.loop import train_loop

    recipe = tiny_recipe(train={"max_steps": 4, "save_every": 2, "batch_size": 4, "seq_len": 16, "replay_ratio": 0.25})
    tok = load_tokenizer(str(recipe.model.base))
    teacher = tiny_teacher(vocab=len(tok))
    kept, layers = list(range(len(tok))), (1, 3)  # the vocabulary mapping is tested above; here the loop
    texts = {"nya": [f"moni bambo {i} muli bwanji lero" for i in range(20)], "eng": ["the king said hello"] * 10}

    def distil(out):  # type: ignore[no-untyped-def]
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        student = build_student(teacher, kept, layers)
        streams = {
            lang: TokenStream(list(docs), tok, 0, 16, recipe.seed + n) for n, (lang, docs) in enumerate(texts.items())
        }
        objective = Distillation(
            teacher,
            layer_list(teacher)[1],
            layer_list(student)[1],
            torch.tensor(kept),
            list(enumerate(layers)),
            DistillConfig(),
        )
        summary = train_loop(student, streams, "nya", "eng", recipe, out, objective=objective)
        return student, summary

    straight, done = distil(tmp_path / "straight")
    assert done["steps"] == 4 and done["resumed_from_step"] == 0
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step-000002", resumed_dir / "checkpoints" / "step-000002")
    resumed, again = distil(resumed_dir)
    assert again["resumed_from_step"] == 2 and again["steps"] == 4
    first, second = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["model.norm.weight"], build_student(teacher, kept, layers).model.norm.weight)


def test_an_encoder_student_of_every_layer_matches_its_teacher_and_a_shallower_one_does_not(tiny_encoder):
    """Masked input (train's plan), KL at the masked positions, hidden states and MiniLM's attention KL:
    zero for the teacher itself restricted to its tokens, positive for a student with one layer."""
    from langadapt.models.encoder import document_inputs
    from langadapt.models.loading import load_model
    from langadapt.train.config import TrainConfig
    from langadapt.train.mlm import MaskingPlan

    teacher = load_model(str(tiny_encoder), attn_implementation="eager").eval()
    with torch.no_grad():  # a random tiny model attends almost uniformly everywhere: sharpen its attention
        for layer in layer_list(teacher)[1]:
            layer.attention.self.query.weight.mul_(30)
            layer.attention.self.key.weight.mul_(30)
    tok = load_tokenizer(str(tiny_encoder))
    kept = list(range(len(tok)))
    ids = torch.tensor([tok("the king said hello to the river and the sea")["input_ids"]] * 2)
    plan = MaskingPlan.from_tokenizer(tok, TrainConfig(mlm_probability=0.3))

    def loss(layers, **weights):  # type: ignore[no-untyped-def]
        student = build_student(teacher, kept, layers).eval()  # dropout off: the comparison is exact
        student.config._attn_implementation = "eager"
        objective = Distillation(
            teacher,
            layer_list(teacher)[1],
            layer_list(student)[1],
            torch.tensor(kept),
            list(enumerate(layers)),
            DistillConfig(**weights),
            plan=plan,
            packed_inputs=document_inputs,
        )
        assert objective.host_inputs is not None  # the loop computes the words on the host
        return objective(student, ids, seed=7)

    same = loss((0, 1))
    assert same.shape == (2, 1) and same.abs().max().item() < 1e-5
    assert loss((1,), kl_weight=0.0, hidden_weight=0.0, attention_weight=1.0).min().item() > 1e-4  # attention alone
    assert loss((1,)).min().item() > 1e-3


@pytest.mark.slow
def test_a_recipe_distils_after_eval_and_the_report_and_model_cards_show_the_student(
    corpus_files, tiny_model, tmp_path
):
    """The whole pipeline with `distill.enabled` on a tiny Llama, then `langadapt export` and `langadapt distill --to`."""
    from conftest import tiny_recipe_dict, write_recipe
    from typer.testing import CliRunner

    from langadapt.cli import app
    from langadapt.rundir import read_json

    data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run")
    data["distill"] = {"enabled": True, "layers": [1], "max_steps": 3, "save_every": 2}
    recipe = write_recipe(tmp_path / "tiny.yaml", data)
    done = CliRunner().invoke(app, ["run", str(recipe)])
    assert done.exit_code == 0, done.output
    summary = read_json(tmp_path / "run" / "distill" / "summary.json")
    assert summary["student_layers"] == [1] and summary["training"]["steps"] == 3
    assert summary["student_parameters"] < summary["teacher_parameters"]
    assert set(summary["bits_per_byte"]) == {"nya-heldout", "eng-heldout"}
    assert summary["inference"]["student"]["tokens_per_s"] > 0
    page = (tmp_path / "run" / "report" / "index.html").read_text()
    assert "Distilled student" in page and f"{summary['student_parameters']:,}" in page
    exported = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--to", str(tmp_path / "merged")])
    assert exported.exit_code == 0, exported.output
    assert "## Distilled student" in (tmp_path / "merged" / "README.md").read_text()
    student = CliRunner().invoke(app, ["distill", str(tmp_path / "run"), "--to", str(tmp_path / "student")])
    assert student.exit_code == 0, student.output
    assert (tmp_path / "student" / "config.json").is_file() and (tmp_path / "student" / "tokenizer.json").is_file()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    assert model.config.num_hidden_layers == 1 and model.config.vocab_size == summary["vocabulary"]["student_tokens"]
    assert "| parameters |" in (tmp_path / "student" / "README.md").read_text()

"""OFA's factorised embeddings: trained as coordinates times primitives, exported at full size.

The factorised model computes what the folded one computes (tied and untied heads, decoders
and encoders); training in that form moves both factors; the final folder is a plain
transformers model whose embedding is A P; a resumed run ends where an uninterrupted one
does; the saving reported is measured on the modules and equals rank x (vocab + hidden)
against vocab x hidden.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_recipe_dict

import langadapt.catalog  # noqa: F401  (every registry whole, as recipe validation needs them)
from langadapt.errors import ConfigError
from langadapt.init.ofa import factors, principal_directions
from langadapt.recipe import Recipe, TrainConfig
from langadapt.rundir import read_json
from langadapt.train import factorised, objectives
from langadapt.train.adapters import merge
from langadapt.train.methods import TRAIN_METHODS

RANK = 8
INIT = {"method": "ofa", "ofa_rank": RANK, "vector_epochs": 1, "vector_dim": 16}


def _tiny(kind: str, tie: bool = True):  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig, LlamaForCausalLM, XLMRobertaConfig, XLMRobertaForMaskedLM

    torch.manual_seed(0)
    size = dict(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(tie_word_embeddings=tie, num_key_value_heads=2, **size)).eval()
    return XLMRobertaForMaskedLM(XLMRobertaConfig(pad_token_id=1, **size)).eval()


def _factorised(model, folder: Path):  # type: ignore[no-untyped-def]
    """The model in factorised form, from factors computed as the init stage computes them."""
    from safetensors.torch import save_file

    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    spaces = {"input": emb} | ({} if head is emb else {"output": head})
    tensors = {}
    for space, w in spaces.items():
        pair = factors(w.detach(), principal_directions(w.detach(), RANK))
        tensors.update({f"{space}.{name}": t for name, t in pair.items()})
    save_file(tensors, str(folder / factorised.FACTORS_FILE))
    return factorised.factorise(model, folder / factorised.FACTORS_FILE)


SHAPES = [("llama", True), ("llama", False), ("xlm-roberta", True)]


@pytest.mark.parametrize("kind,tie", SHAPES, ids=["decoder-tied", "decoder-untied", "encoder"])
def test_the_factorised_model_computes_what_its_full_size_folder_computes(kind, tie, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    model = _tiny(kind, tie)
    record = _factorised(model, tmp_path)
    assert record["tied"] is tie and set(record["matrices"]) == ({"input"} if tie else {"input", "output"})
    emb, head = factorised.embedding_of(model), factorised.head_of(model)
    assert head.tied is tie and (head.source is emb) is tie
    with torch.no_grad():  # factors away from their initial values, so equality means something
        for m in factorised.factor_modules(model):
            m.coordinates.add_(torch.randn_like(m.coordinates) * 0.3)
            m.primitives.add_(torch.randn_like(m.primitives) * 0.3)
    ids = torch.tensor([[0, 5, 17, 33, 60, 61, 2, 119]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        expected_in = emb.matrix().clone()
        expected_out = head.source.matrix().clone()
    factorised.fold(model, record)
    assert type(model.get_input_embeddings()) is torch.nn.Embedding
    assert type(model.get_output_embeddings()) is torch.nn.Linear
    assert torch.allclose(model.get_input_embeddings().weight, expected_in, atol=1e-6)
    assert torch.allclose(model.get_output_embeddings().weight, expected_out, atol=1e-6)
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) is tie
    model.save_pretrained(tmp_path / "final")
    auto = AutoModelForCausalLM if kind == "llama" else AutoModelForMaskedLM
    loaded = auto.from_pretrained(tmp_path / "final").eval()  # a plain transformers folder: no custom code
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, logits, atol=1e-5)
    assert "auto_map" not in read_json(tmp_path / "final" / "config.json")


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_the_fused_loss_reads_the_factorised_head_exactly(tie, tmp_path):
    model = _tiny("llama", tie)
    _factorised(model, tmp_path)
    for p in model.parameters():
        p.requires_grad_(True)
    ids = torch.randint(0, 120, (2, 12))
    grads = []
    for loss_fn in (objectives.clm_loss, objectives.plain_clm_loss):
        model.zero_grad()
        loss = loss_fn(model, ids)
        loss.mean().backward()
        grads.append((loss.detach(), [m.coordinates.grad.clone() for m in factorised.factor_modules(model)]))
    (fused, fused_grads), (plain, plain_grads) = grads
    assert objectives.output_head(model) is not None  # the fused path, not the fallback to full logits
    assert torch.allclose(fused, plain, atol=1e-5)
    for a, b in zip(fused_grads, plain_grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_new_rows_train_only_the_new_tokens_coordinates(tmp_path):
    model = _tiny("llama", tie=True)
    _factorised(model, tmp_path)
    new_ids = list(range(110, 120))
    model = TRAIN_METHODS.get("new-rows")(model, TrainConfig(), new_ids)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert list(trainable) == ["model.embed_tokens.new_coordinates"]
    assert factorised.trainable_record(model) == {"factorised": 10 * RANK, "full_size": 10 * 32}
    emb = factorised.embedding_of(model)
    before = emb.matrix().detach().clone()
    opt = torch.optim.SGD(trainable.values(), lr=1.0)
    objectives.clm_loss(model, torch.tensor([[3, 110, 111, 7, 115, 119, 2]])).mean().backward()
    opt.step()
    after = emb.matrix().detach()
    assert torch.equal(after[:110], before[:110]) and not torch.equal(after[110:], before[110:])
    model = merge(model)  # between phases: written back into A, everything frozen for the next method
    assert emb.new_coordinates is None and torch.allclose(emb.matrix(), after)
    model = TRAIN_METHODS.get("full")(model, TrainConfig(), new_ids)
    assert factorised.trainable_record(model) == {"factorised": 120 * RANK + RANK * 32, "full_size": 120 * 32}


def test_an_untied_factorised_head_trains_with_the_head_method(tmp_path):
    model = _tiny("llama", tie=False)
    _factorised(model, tmp_path)
    model = TRAIN_METHODS.get("head")(model, TrainConfig(), [118, 119])
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == [
        "lm_head.factors.coordinates",
        "lm_head.factors.primitives",
        "model.embed_tokens.new_coordinates",
    ]


def test_the_saving_is_rank_times_vocab_plus_hidden_and_the_help_figure_holds():
    """XLM-R's 250,002 x 768 matrix at OFA's rank 100: the figure in the option's help and README."""
    emb = factorised.FactorisedEmbedding(torch.empty(250_002, 100, device="meta"), torch.empty(100, 768, device="meta"))
    full = torch.nn.Embedding(250_002, 768, device="meta")
    held = sum(p.numel() for p in emb.parameters())
    assert held == 100 * (250_002 + 768) and full.weight.numel() == 250_002 * 768
    saving = round(100 * (1 - held / full.weight.numel()))
    help_text = TrainConfig.__dataclass_fields__["factorised_embeddings"].metadata["help"]
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert saving == 87 and "87% fewer for a 250k x 768 matrix at rank 100" in help_text
    assert "87% fewer for a 250k x 768 matrix at rank 100" in readme


def test_factorised_embeddings_are_refused_where_they_cannot_train(corpus_files, tiny_model, tmp_path):
    def problems(**sections):  # type: ignore[no-untyped-def]
        with pytest.raises(ConfigError) as e:
            Recipe.from_dict(tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run", **sections))
        return str(e.value)

    text = problems(train={"factorised_embeddings": True})  # init.method fvt
    assert "train.factorised_embeddings: trains OFA's factors" in text and "set init.method: ofa" in text
    text = problems(init=INIT, train={"factorised_embeddings": True, "method": "qlora"})
    assert "train.method: qlora cannot train factorised embeddings" in text
    text = problems(init=INIT, train={"factorised_embeddings": True, "sharding": "full"})
    assert "train.sharding full: factorised embeddings (train.factorised_embeddings) train in one process" in text
    Recipe.from_dict(
        tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run", init=INIT, train={"factorised_embeddings": True})
    )


def test_the_option_is_explained_by_validate(corpus_files, tiny_model, tmp_path):
    from conftest import write_recipe
    from typer.testing import CliRunner

    from langadapt.cli import app

    data = tiny_recipe_dict(
        corpus_files, tiny_model, tmp_path / "run", init=INIT, train={"factorised_embeddings": True}
    )
    result = CliRunner().invoke(app, ["validate", str(write_recipe(tmp_path / "r.yaml", data)), "--explain"])
    assert result.exit_code == 0, result.output
    assert (
        "train.factorised_embeddings = False" in result.output
        and "init.method ofa: train the embeddings" in result.output
    )


# -- end to end: the train stage ---------------------------------------------------------------------------

TRAIN = {"factorised_embeddings": True, "method": "full", "max_steps": 4, "save_every": 2, "lr": 1e-2}
ENCODER_TOKENIZER = {"method": "extend", "new_tokens": 40, "target_vocab_size": 400}


def _recipe(corpus_files, model_dir: Path, run_dir: Path, encoder: bool = False, **train):  # type: ignore[no-untyped-def]
    sections = {"init": INIT, "train": {**TRAIN, **({"objective": "mlm"} if encoder else {}), **train}}
    if encoder:
        sections["tokenizer"] = ENCODER_TOKENIZER
    return Recipe.from_dict(tiny_recipe_dict(corpus_files, model_dir, run_dir, **sections))


@pytest.fixture(scope="module")
def prepared(corpus_files, tmp_path_factory):  # type: ignore[no-untyped-def]
    """corpus, tokenizer and init once per model shape; each test trains in a copy."""
    from conftest import build_tiny_encoder, build_tiny_model

    from langadapt.pipeline import run

    done = {}

    def prepare(shape: str) -> tuple[Path, Path]:
        if shape not in done:
            root = tmp_path_factory.mktemp(shape)
            model_dir = (
                build_tiny_encoder(root / "model")
                if shape == "encoder"
                else build_tiny_model(root / "model", tie=shape == "decoder-tied")
            )
            run(_recipe(corpus_files, model_dir, root / "run", shape == "encoder"), ("corpus", "tokenizer", "init"))
            done[shape] = (model_dir, root / "run")
        return done[shape]

    return prepare


def _train(prepared, corpus_files, shape: str, folder: Path, **train):  # type: ignore[no-untyped-def]
    from langadapt.pipeline import run

    model_dir, run_dir = prepared(shape)
    shutil.copytree(run_dir, folder)
    run(_recipe(corpus_files, model_dir, folder, shape == "encoder", **train), ("train",))
    return folder


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize("shape", ["decoder-tied", "decoder-untied", "encoder"])
def test_training_in_factorised_form_moves_both_factors_and_exports_a_at_full_size(
    prepared, corpus_files, shape, tmp_path
):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    run_dir = _train(prepared, corpus_files, shape, tmp_path / "run")
    init = _tensors(run_dir / "model-init" / factorised.FACTORS_FILE)
    ckpt = _tensors(run_dir / "train" / "checkpoints" / "step-000004" / "trainable.safetensors")
    final = _tensors(run_dir / "train" / "final" / "model.safetensors")
    spaces = {"input": ""} if shape != "decoder-untied" else {"input": "", "output": ""}
    for space in spaces:
        name = next(n for n in ckpt if n.endswith(".coordinates") and ("lm_head" in n) == (space == "output"))
        coords, prims = ckpt[name], ckpt[name.replace(".coordinates", ".primitives")]
        assert not torch.allclose(coords, init[f"{space}.coordinates"])  # both factors trained
        assert not torch.allclose(prims, init[f"{space}.primitives"])
        weight = next(
            w
            for n, w in final.items()
            if n.endswith("weight")
            and w.shape == (coords.shape[0], prims.shape[1])
            and (("lm_head" in n or "decoder" in n) == (space == "output"))
        )
        assert torch.allclose(weight, coords @ prims, atol=1e-5)  # the exported matrix is A P

    summary = read_json(run_dir / "train" / "summary.json")
    record = summary["factorised_embeddings"]
    expected_factorised = sum(init[f"{s}.coordinates"].numel() + init[f"{s}.primitives"].numel() for s in spaces)
    expected_full = sum(init[f"{s}.coordinates"].shape[0] * init[f"{s}.primitives"].shape[1] for s in spaces)
    assert record["embedding_parameters"] == {
        "factorised": expected_factorised,
        "full_size": expected_full,
        "saving": round(1 - expected_factorised / expected_full, 4),
    }
    model_params = record["model_parameters"]
    assert model_params["full_size"] - model_params["factorised"] == expected_full - expected_factorised
    assert summary["trainable_parameters"] == model_params["factorised"]  # full: every weight, in factorised form
    assert summary["trainable_embedding_parameters"] == {"factorised": expected_factorised, "full_size": expected_full}
    report = read_json(run_dir / "model-init" / "init_report.json")["ofa"]
    assert report["trained_factorised"] is True
    assert report["matrices"]["input"]["saving"] == round(
        1 - report["matrices"]["input"]["factorised_parameters"] / report["matrices"]["input"]["full_parameters"], 4
    )

    from langadapt.export import export

    folder = export(run_dir, tmp_path / "exported")
    auto = AutoModelForMaskedLM if shape == "encoder" else AutoModelForCausalLM
    model = auto.from_pretrained(folder)  # plain transformers, full size
    assert model.num_parameters() == model_params["full_size"] and not list(folder.glob("ofa_*"))
    card = (folder / "README.md").read_text(encoding="utf-8")
    saving = round(100 * record["embedding_parameters"]["saving"])
    assert f"factorised form (OFA: coordinates times primitives, rank {RANK})" in card and f"({saving}% fewer)" in card


def test_factorised_training_resumes_exactly(prepared, corpus_files, tmp_path, monkeypatch):
    from langadapt.train import loop

    reference = _train(prepared, corpus_files, "decoder-tied", tmp_path / "ref", method="lora", embeddings="all")
    real_save = loop.save_checkpoint

    def save_then_die(out, step, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_save(out, step, *args, **kwargs)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _train(prepared, corpus_files, "decoder-tied", tmp_path / "cut", method="lora", embeddings="all")
    saved = _tensors(tmp_path / "cut" / "train.partial" / "checkpoints" / "step-000002" / "trainable.safetensors")
    assert any(n.endswith("embed_tokens.coordinates") for n in saved)
    assert any(n.endswith("embed_tokens.primitives") for n in saved)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    from langadapt.pipeline import run

    model_dir, _ = prepared("decoder-tied")
    run(_recipe(corpus_files, model_dir, tmp_path / "cut", method="lora", embeddings="all"), ("train",))
    assert read_json(tmp_path / "cut" / "train" / "summary.json")["resumed_from_step"] == 2
    ref = _tensors(reference / "train" / "final" / "model.safetensors")
    got = _tensors(tmp_path / "cut" / "train" / "final" / "model.safetensors")
    for key in ref:
        assert torch.allclose(ref[key], got[key], atol=1e-6), key

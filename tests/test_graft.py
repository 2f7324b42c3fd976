"""The instruction graft on tiny Llamas built here: a base, an "instruct" made by perturbing it
and adding chat tokens with a template, and adapted runs with extended or trimmed vocabularies.

Every expectation is computed by hand from the three models' tensors, through token strings.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_llama, tiny_recipe_dict, write_recipe
from typer.testing import CliRunner

import langadapt.graft as graft_module
from langadapt.cli import app
from langadapt.errors import ConfigError, InputError
from langadapt.export import export
from langadapt.graft import GraftSpec
from langadapt.rundir import MARKER, write_json
from langadapt.train.adapters import finalize, save_final

CHAT = ["<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
NEW = ["zqxa", "zqxb", "zqxc"]  # strings the base vocabulary lacks


def build_base(folder: Path, tie: bool, chat_tokens: bool = False) -> Path:
    """A 2-layer Llama with a byte-level BPE of the 256 byte symbols and a few merges (built, not trained)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate(["<|endoftext|>", "<s>", *sorted(alphabet)])}
    merges = [("t", "h"), ("th", "e"), ("Ġ", "the"), ("i", "n"), ("Ġ", "k"), ("Ġk", "in"), ("Ġkin", "g"), ("Ġ", "c")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tk = Tokenizer(models.BPE(vocab, merges))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="<|endoftext|>")
    if chat_tokens:  # as SmolLM2's and Qwen2's base tokenizers: the chat tokens exist before instruction tuning
        tok.add_special_tokens({"additional_special_tokens": CHAT})
    return save_tiny_llama(folder, tok, tie)


def _load(folder: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), AutoTokenizer.from_pretrained(folder)


def _nudge(model, seed: int, scale: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def make_instruct(base: Path, folder: Path, **config_changes) -> Path:  # type: ignore[no-untyped-def]
    """The base, perturbed, with two chat special tokens, a chat template and an eos of its own."""
    from transformers import GenerationConfig, LlamaForCausalLM

    model, tok = _load(base)
    tok.add_special_tokens({"additional_special_tokens": CHAT})
    tok.chat_template, tok.eos_token = TEMPLATE, "<|im_end|>"
    if config_changes:
        config = model.config
        for k, v in config_changes.items():
            setattr(config, k, v)
        torch.manual_seed(1)
        model = LlamaForCausalLM(config)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    _nudge(model, seed=11)
    model.generation_config = GenerationConfig(eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def pair(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("graft-pair")
    base = build_base(d / "base", tie=request.param)
    return base, make_instruct(base, d / "instruct")


@pytest.fixture(scope="module")
def tied_pair(tmp_path_factory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("graft-tied")
    base = build_base(d / "base", tie=True)
    return base, make_instruct(base, d / "instruct")


def make_run(corpus_files, base: Path, run: Path, tok=None, init_from: Path | None = None, lora: bool = False) -> Path:  # type: ignore[no-untyped-def]
    """A finished run: model-init (the base's rows copied by token string, new rows random), then
    train/final (init moved by 'training'; with `lora`, a peft LoRA merged the way the train stage does)."""
    from transformers import AutoTokenizer

    base_model, base_tok = _load(init_from or base)
    base_tok = AutoTokenizer.from_pretrained(base)
    if tok is None:
        tok = AutoTokenizer.from_pretrained(base)
        tok.add_tokens(NEW)
    write_recipe(run.parent / f"{run.name}.yaml", tiny_recipe_dict(corpus_files, base, run))
    for sub in ("tokenizer", "train"):
        (run / sub).mkdir(parents=True)
    (run / "recipe.yaml").write_text((run.parent / f"{run.name}.yaml").read_text())
    write_json(run / "tokenizer" / "metrics.json", {"method": "extend", "base_vocab_size": len(base_tok)})
    config = base_model.config
    config.vocab_size = len(tok)
    init = type(base_model)(config)
    old = base_tok.get_vocab()
    with torch.no_grad():
        for name, p in init.named_parameters():
            src = dict(base_model.named_parameters())[name]
            if p.shape == src.shape:
                p.copy_(src)
            else:  # a vocabulary matrix: old rows by token string, new rows random
                for token, i in tok.get_vocab().items():
                    if token in old:
                        p[i] = src[old[token]]
    init.save_pretrained(run / "model-init")
    tok.save_pretrained(run / "model-init")
    final = run / "train" / "final"
    if lora:
        from peft import LoraConfig, get_peft_model

        peft_model = get_peft_model(init, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.5)
        save_final(finalize(peft_model, run / "train"), tok, final)
    else:
        _nudge(init, seed=5, scale=0.02)
        save_final(init, tok, final)
    write_json(run / "train" / MARKER, {"fingerprint": "test"})
    return run


def _params(folder: Path) -> dict[str, torch.Tensor]:
    model, _ = _load(folder)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _rows(tok) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return tok.get_vocab()


def test_graft_is_adapted_plus_residual_on_shared_tensors_and_old_rows_new_rows_kept_chat_rows_instruct(
    pair, corpus_files, tmp_path
):
    base, instruct = pair
    run = make_run(corpus_files, base, tmp_path / "run")
    out = export(run, tmp_path / "out", graft=GraftSpec(str(instruct), str(base)))
    A, B, I, G = (_params(f) for f in (run / "train" / "final", base, instruct, out))
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()
    model, tok = _load(out)  # AutoModelForCausalLM, from the safetensors file
    _, a_tok = _load(run / "train" / "final")
    _, b_tok = _load(base)
    _, i_tok = _load(instruct)
    tied = model.config.tie_word_embeddings
    vocab = {"model.embed_tokens.weight"} | (set() if tied else {"lm_head.weight"})
    assert set(G) == set(A) and ("lm_head.weight" in G) == (not tied)
    if tied:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied stays tied
    for name in set(A) - vocab:
        assert torch.equal(G[name], A[name] + (I[name] - B[name])), name
    # one element by hand, so the direction of the residual is pinned
    a, b, i = (float(x["model.layers.0.mlp.down_proj.weight"][3, 5]) for x in (A, B, I))
    assert float(G["model.layers.0.mlp.down_proj.weight"][3, 5]) == pytest.approx(a + (i - b), abs=1e-7)
    g_vocab, a_vocab, b_vocab, i_vocab = _rows(tok), _rows(a_tok), _rows(b_tok), _rows(i_tok)
    assert all(g_vocab[t] == a_vocab[t] for t in a_vocab) and len(g_vocab) == len(a_vocab) + len(CHAT)
    expected = {n: A[n] + (I[n] - B[n]) for n in set(A) - vocab}
    for name in vocab:  # row by row through token strings
        rows = torch.full_like(G[name], float("nan"))
        for t, g in g_vocab.items():
            if t in CHAT:  # absent from the adapted vocabulary: added, with the instruct model's rows
                rows[g] = I[name][i_vocab[t]]
            elif t in b_vocab:  # old: the residual of that token's rows
                rows[g] = A[name][a_vocab[t]] + (I[name][i_vocab[t]] - B[name][b_vocab[t]])
            else:  # new: as trained
                rows[g] = A[name][a_vocab[t]]
        expected[name] = rows
        old = [g_vocab[t] for t in b_vocab]
        assert not torch.equal(G[name][old], A[name][[a_vocab[t] for t in b_vocab]])  # the old rows did move
        assert torch.equal(G[name][[g_vocab[t] for t in NEW]], A[name][[a_vocab[t] for t in NEW]])
    for name in G:
        assert torch.equal(G[name], expected[name]), name
    assert tok.chat_template == TEMPLATE and tok.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == g_vocab["<|im_end|>"]
    card = (out / "README.md").read_text()
    head_rows = "" if tied else "`lm_head.weight` (head)"
    assert "## Instruction graft" in card and f"{len(b_vocab)} rows of old tokens got the residual" in card
    assert f"{len(NEW)} rows of new tokens kept their trained values" in card and head_rows in card
    report = json.loads((out / "langadapt_graft.json").read_text())
    assert report["shared_tensors"] == len(set(A) - vocab) and report["added_tokens"] == CHAT
    assert report["origin"]["from_instruct"] is False

    # the grafted model's greedy reply to a chat prompt is what the hand-computed weights give
    hand = type(model)(model.config)
    hand.load_state_dict(expected, strict=False)
    hand.tie_weights()
    hand.generation_config = model.generation_config
    messages = [{"role": "user", "content": "the king went to the city"}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    assert prompt[0].tolist().count(g_vocab["<|im_start|>"]) == 2  # each chat token is one token
    reply = model.generate(prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(reply, hand.generate(prompt, max_new_tokens=6, do_sample=False))


def test_a_trimmed_vocabulary_maps_rows_by_token_string(tied_pair, corpus_files, tmp_path):
    from transformers import AutoTokenizer

    from langadapt.tokenizer.state import tokenizer_from_state, tokenizer_state, vocab_of
    from langadapt.tokenizer.trim import restrict

    base, instruct = tied_pair
    b_tok = AutoTokenizer.from_pretrained(base)
    state = tokenizer_state(b_tok)
    merged = {x for a, b in state["model"]["merges"] for x in (a, b, a + b)} if state["model"]["merges"] else set()
    dropped = [t for t, i in sorted(vocab_of(state).items(), key=lambda x: x[1]) if i > 1 and t not in merged][:20]
    trimmed = tokenizer_from_state(b_tok, restrict(state, set(vocab_of(state)) - set(dropped)), tmp_path / "trim")
    run = make_run(corpus_files, base, tmp_path / "run", tok=trimmed)
    out = export(run, tmp_path / "out", graft=GraftSpec(str(instruct), str(base)))
    A, B, I, G = (_params(f) for f in (run / "train" / "final", base, instruct, out))
    _, g_tok = _load(out)
    a_vocab, b_vocab, i_vocab, g_vocab = (
        trimmed.get_vocab(),
        b_tok.get_vocab(),
        _load(instruct)[1].get_vocab(),
        g_tok.get_vocab(),
    )
    name = "model.embed_tokens.weight"
    moved = [t for t in a_vocab if a_vocab[t] != b_vocab[t]]
    assert len(moved) > 200 and len(a_vocab) == len(b_vocab) - 20  # ids were renumbered
    for t in a_vocab:
        assert torch.equal(G[name][g_vocab[t]], A[name][a_vocab[t]] + (I[name][i_vocab[t]] - B[name][b_vocab[t]])), t
    report = json.loads((out / "langadapt_graft.json").read_text())
    assert report["matrices"][0]["residual"] == len(a_vocab) and report["matrices"][0]["new_kept"] == 0


def test_lora_is_merged_before_the_residual_is_added(tied_pair, corpus_files, tmp_path):
    from safetensors.torch import load_file

    base, instruct = tied_pair
    run = make_run(corpus_files, base, tmp_path / "run", lora=True)
    out = export(run, tmp_path / "out", graft=GraftSpec(str(instruct), str(base)))
    W, B, I, G = (_params(f) for f in (run / "model-init", base, instruct, out))
    lora = load_file(run / "train" / "adapter" / "adapter_model.safetensors")
    name = "model.layers.1.self_attn.q_proj.weight"
    key = "base_model.model." + name.replace(".weight", "")
    delta = 2.0 * lora[f"{key}.lora_B.weight"] @ lora[f"{key}.lora_A.weight"]  # lora_alpha / r = 4 / 2
    assert delta.abs().max() > 0.01
    torch.testing.assert_close(G[name], W[name] + delta + (I[name] - B[name]), rtol=0, atol=1e-5)
    assert not torch.allclose(G[name], W[name] + (I[name] - B[name]), atol=1e-3)  # the LoRA update was not lost
    other = "model.layers.1.self_attn.k_proj.weight"  # no LoRA there: exactly init + residual
    assert torch.equal(G[other], W[other] + (I[other] - B[other]))


runner = CliRunner()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_mismatched_or_missing_models_get_one_clear_error_and_no_output(tied_pair, corpus_files, tmp_path, monkeypatch):
    base, instruct = tied_pair
    run = make_run(corpus_files, base, tmp_path / "run")
    narrow = make_instruct(base, tmp_path / "narrow", intermediate_size=48)
    biased = make_instruct(base, tmp_path / "biased", attention_bias=True)
    to = tmp_path / "out"
    code, out = invoke("graft", str(run), "--instruct", str(narrow), "--base", str(base), "--to", str(to))
    assert code == 1 and "Traceback" not in out
    assert f"--instruct {narrow}: config intermediate_size is 48, the run's model has 64" in out
    code, out = invoke("graft", str(run), "--instruct", str(biased), "--base", str(base), "--to", str(to))
    assert code == 1 and "Traceback" not in out
    assert "has a tensor model.layers.0.self_attn.q_proj.bias (32,) the run's model lacks" in out
    with pytest.raises(ConfigError, match="model.layers.1.self_attn.k_proj.bias"):
        export(run, to, graft=GraftSpec(str(biased), str(base)))
    code, out = invoke("graft", str(run), "--instruct", str(tmp_path / "nowhere"), "--base", str(base), "--to", str(to))
    assert code == 1 and f"--instruct {tmp_path / 'nowhere'}: model folder not found" in out
    code, out = invoke("graft", str(run), "--instruct", "someone/not-cached", "--base", str(base), "--to", str(to))
    assert code == 1 and "--instruct: cannot read the model config of 'someone/not-cached'" in out  # offline
    assert "be online for a hub id" in out and "Traceback" not in out
    same = tmp_path / "same"  # the base's weights with the instruct tokenizer: nothing to add
    shutil.copytree(base, same)
    _load(instruct)[1].save_pretrained(same)
    with pytest.raises(ConfigError, match="have the same weights: the residual is zero"):
        export(run, to, graft=GraftSpec(str(same), str(base)))
    assert not to.exists() and not to.with_name("out.partial").exists()

    def half_written(graft, out):  # type: ignore[no-untyped-def]
        (out / "config.json").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setattr(graft_module, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        export(run, to, graft=GraftSpec(str(instruct), str(base)))
    assert not to.exists() and not to.with_name("out.partial").exists()  # nothing half-written stays


def test_a_run_that_started_from_the_instruct_model_is_refused_unless_allowed(tied_pair, corpus_files, tmp_path):
    base, instruct = tied_pair
    run = make_run(corpus_files, base, tmp_path / "run", init_from=instruct)
    with pytest.raises(InputError) as e:
        export(run, tmp_path / "out", graft=GraftSpec(str(instruct), str(base)))
    message = str(e.value)
    assert "the run started from an instruct model" in message and "0.000 from --instruct" in message
    assert "a second time" in message and "keep the rows of 3 new tokens" in message
    assert "--allow-double-residual" in message
    code, out = invoke("export", str(run), "--to", str(tmp_path / "out"), "--graft-instruct", str(instruct))
    assert code == 1 and "--graft-instruct and --graft-base go together" in out
    code, out = invoke(
        "export", str(run), "--to", str(tmp_path / "out"), "--graft-instruct", str(instruct), "--graft-base", str(base)
    )
    assert code == 1 and "started from an instruct model" in out and not (tmp_path / "out").exists()
    code, out = invoke("graft", str(run), "--instruct", str(instruct), "--base", str(base), "--allow-double-residual")
    assert code == 0, out
    card = (tmp_path / "run-instruct" / "README.md").read_text()
    assert "this model carries it twice" in card and "1.000 from --base and 0.000 from --instruct" in card
    assert f"--base {base} --allow-double-residual" in card  # the command that reproduces it says so


def test_chat_tokens_the_base_already_has_take_the_instruct_rows_not_the_residual(corpus_files, tmp_path):
    base = build_base(tmp_path / "base", tie=True, chat_tokens=True)
    instruct = make_instruct(base, tmp_path / "instruct")
    run = make_run(corpus_files, base, tmp_path / "run")
    out = export(run, tmp_path / "out", graft=GraftSpec(str(instruct), str(base)))
    A, B, I, G = (_params(f) for f in (run / "train" / "final", base, instruct, out))
    name = "model.embed_tokens.weight"
    g_tok, a_tok = _load(out)[1], _load(run / "train" / "final")[1]
    assert g_tok.get_vocab() == a_tok.get_vocab()  # nothing added: the adapted vocabulary has them
    for t in CHAT:
        i = a_tok.convert_tokens_to_ids(t)
        assert torch.equal(G[name][i], I[name][i])
        assert not torch.equal(G[name][i], A[name][i] + (I[name][i] - B[name][i]))
    report = json.loads((out / "langadapt_graft.json").read_text())
    assert report["added_tokens"] == [] and report["matrices"][0]["chat_from_instruct"] == len(CHAT)
    assert report["matrices"][0]["residual"] == len(B[name]) - len(CHAT)


@pytest.mark.parametrize(
    "base, instruct",
    [
        ("builtin:smollm2-135m", True),  # its file is SmolLM2-135M-Instruct.Q4_1.gguf
        ("Qwen/Qwen2.5-0.5B-Instruct", True),
        ("google/gemma-2-2b-it", True),
        ("meta-llama/Llama-3.2-1B", False),
        ("HuggingFaceTB/SmolLM2-135M", False),
    ],
)
def test_without_model_init_the_base_models_name_decides_where_the_run_started(tmp_path, base, instruct):
    from types import SimpleNamespace

    from langadapt.rundir import RunDir

    recipe = SimpleNamespace(model=SimpleNamespace(base=base, gguf_file=""))
    origin = graft_module._origin(RunDir(tmp_path), recipe, {}, {}, (), 1.0)
    assert origin.from_instruct is instruct and "model-init/ is gone" in origin.evidence

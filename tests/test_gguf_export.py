"""GGUF export: the file holds the adapted model and its extended tokenizer, read back by
independent readers (the gguf library, transformers, llama.cpp when installed) to the same
token ids and logits; a parity failure or an architecture GGUF cannot hold publishes nothing."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from typer.testing import CliRunner

from langadapt import gguf_export
from langadapt.cli import app
from langadapt.errors import ConfigError, InputError, LangAdaptError
from langadapt.export import export
from langadapt.rundir import read_json

runner = CliRunner()


def _field(reader, key):
    return reader.fields[key].contents()


def test_gguf_file_holds_the_extended_vocabulary_and_every_tensor(finished_run, tiny_model, tmp_path):
    import gguf
    from transformers import AutoTokenizer

    run_dir, _, _ = finished_run
    result = runner.invoke(
        app, ["export", str(run_dir), "--to", str(tmp_path / "g"), "--format", "gguf", "--quant", "q8_0"]
    )
    out = result.output
    assert result.exit_code == 0, out
    assert "token-id parity with the adapted tokenizer: identical on nya-heldout" in " ".join(out.split())
    folder = tmp_path / "g"
    assert not (tmp_path / "g.partial").exists()
    final = run_dir / "train" / "final"
    tok, base_tok = AutoTokenizer.from_pretrained(final), AutoTokenizer.from_pretrained(tiny_model)
    config = read_json(final / "config.json")
    assert config["vocab_size"] == len(tok) > len(base_tok)  # the run extended the vocabulary

    r = gguf.GGUFReader(folder / "tiny.q8_0.gguf")
    assert _field(r, "general.architecture") == "llama" and _field(r, "tokenizer.ggml.model") == "gpt2"
    assert _field(r, "tokenizer.ggml.pre") == "gpt-2"  # the base's ByteLevel split, named as llama.cpp names it
    tokens, types = _field(r, "tokenizer.ggml.tokens"), _field(r, "tokenizer.ggml.token_type")
    assert len(tokens) == config["vocab_size"] == _field(r, "llama.vocab_size")
    new = range(len(base_tok), len(tok))
    assert [tokens[i] for i in new] == tok.convert_ids_to_tokens(list(new))
    assert all(types[i] == 1 for i in new)  # new tokens are merges (NORMAL), not whole-string user tokens
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    assert len(_field(r, "tokenizer.ggml.merges")) == len(merges)
    assert _field(r, "tokenizer.ggml.eos_token_id") == tok.eos_token_id
    shapes = {t.name: (t.shape.tolist(), t.tensor_type.name) for t in r.tensors}
    assert shapes["token_embd.weight"] == ([32, len(tok)], "Q8_0")
    assert shapes["blk.1.attn_k.weight"] == ([32, 16], "Q8_0") and shapes["blk.0.attn_norm.weight"] == ([32], "F32")
    assert "output.weight" not in shapes and len(shapes) == 2 + 2 * 9  # tied head: not stored twice
    assert (folder / "Modelfile").read_text().startswith("FROM ./tiny.q8_0.gguf\n")
    card = (folder / "README.md").read_text()
    assert "library_name: gguf" in card and "ollama create tiny -f Modelfile" in card
    assert "--format gguf --quant q8_0" in card
    record = read_json(folder / "gguf_export.json")
    assert record["parity"]["readers"][0] == "transformers (GGUF tokenizer)"
    assert record["parity"]["sets"]["nya-heldout"]["identical"] and record["parity"]["sets"]["eng-heldout"]["texts"] > 0


def test_gguf_weights_load_back_to_the_adapted_models_logits(finished_run, tmp_path):
    """transformers' GGUF loader undoes llama.cpp's rotary layout: equal logits prove names and layout."""
    import torch
    from transformers import AutoModelForCausalLM

    run_dir, _, _ = finished_run
    folder = export(run_dir, tmp_path / "g", "gguf", quant="f32")
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file="tiny.f32.gguf").eval()
    adapted = AutoModelForCausalLM.from_pretrained(run_dir / "train" / "final").eval()
    ids = torch.tensor([[1, 5, 9, 30, 2, len(adapted.get_input_embeddings().weight) - 1]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, adapted(ids).logits, rtol=1e-5, atol=1e-5)


def test_a_parity_failure_refuses_and_publishes_nothing(finished_run, tmp_path, monkeypatch):
    run_dir, _, _ = finished_run
    real = gguf_export.build_vocab

    def without_new_merges(*args, **kwargs):  # the file would lack the merges that build the new tokens
        vocab = real(*args, **kwargs)
        return vocab.__class__(**{**vocab.__dict__, "merges": vocab.merges[:-30]})

    monkeypatch.setattr(gguf_export, "build_vocab", without_new_merges)
    with pytest.raises(LangAdaptError) as e:
        export(run_dir, tmp_path / "g", "gguf")
    message = str(e.value)
    assert (
        "tokenises differently from the adapted tokenizer (transformers (GGUF tokenizer)): nya-heldout text 1"
        in message
    )
    assert "adapted tokenizer ids from token" in message and "GGUF (transformers (GGUF tokenizer)) ids" in message
    assert "nothing was published" in message
    assert not (tmp_path / "g").exists() and not (tmp_path / "g.partial").exists()


def test_what_gguf_cannot_hold_is_refused_before_any_work(finished_run, tmp_path, monkeypatch):
    run_dir, _, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "report", "eval"))
    config_file = copy / "train" / "final" / "config.json"
    config = read_json(config_file)
    config_file.write_text(json.dumps({**config, "model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    monkeypatch.setattr(gguf_export, "write", lambda *a: pytest.fail("the export started work"))
    with pytest.raises(ConfigError) as e:
        export(copy, tmp_path / "g", "gguf", quant="q3_k")
    assert len(e.value.problems) == 2
    assert "model type 'bert' (BertForMaskedLM) cannot be written as GGUF here" in e.value.problems[0]
    assert "--quant q3_k: unknown; valid: f16, f32" in e.value.problems[1]
    assert not (tmp_path / "g").exists() and not (tmp_path / "g.partial").exists()
    with pytest.raises(InputError, match="--quant applies to --format gguf only"):
        export(copy, tmp_path / "g", "merged", quant="q8_0")


def test_a_stale_tokenizer_model_beside_tokenizer_json_is_not_used(finished_run, tmp_path):
    run_dir, _, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "report"))
    (copy / "train" / "final" / "tokenizer.model").write_bytes(
        b"a base SentencePiece model, not the adapted vocabulary"
    )
    folder = export(copy, tmp_path / "g", "gguf")
    assert read_json(folder / "gguf_export.json")["parity"]["sets"]["nya-heldout"]["identical"]


def test_the_pre_tokenizer_is_named_from_the_base(tmp_path):
    import gguf
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from langadapt.config import ModelConfig
    from langadapt.gguf_vocab import _gguf_field, base_tokenizer, pre_name

    assert (
        pre_name({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}) == "gpt-2"
    )
    smollm = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        ],
    }
    assert pre_name(smollm) == "smollm"
    assert pre_name({"type": "ByteLevel", "add_prefix_space": True, "use_regex": True}) is None

    writer = gguf.GGUFWriter(str(tmp_path / "base.gguf"), "llama")  # a base GGUF file names its own
    writer.add_tokenizer_pre("smollm")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert _gguf_field(tmp_path / "base.gguf", "tokenizer.ggml.pre", "default") == "smollm"

    tk = Tokenizer(models.BPE(vocab={"a": 0, "Ġ": 1}, merges=[]))
    # a split llama.cpp has no name for: punctuation apart, then GPT-2's
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Punctuation(), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    base = tmp_path / "punctuation"
    PreTrainedTokenizerFast(tokenizer_object=tk).save_pretrained(base)
    with pytest.raises(InputError, match="cannot tell which llama.cpp pre-tokenizer the base"):
        base_tokenizer(ModelConfig(base=str(base)), PreTrainedTokenizerFast(tokenizer_object=tk))


def spm_tokenizer(prefix: bool = True):
    """A SentencePiece-style BPE ('▁' for spaces, <0xNN> byte fallback), trained here: as Llama 2 and Mistral
    ship it (a '▁' before the text), or without the prefix, spaces replaced by a normalizer (Gemma's)."""
    from conftest import english_lines, target_docs
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    meta = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    spaces = normalizers.Replace(" ", "▁")

    def split(tk):
        if prefix:
            tk.pre_tokenizer = meta
        else:
            tk.normalizer = spaces

    tk = Tokenizer(models.BPE())
    split(tk)
    texts = english_lines(200, seed=3) + [d["text"] for d in target_docs(seed=9)[:30]]
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=specials))
    data = json.loads(tk.to_str())
    vocab = data["model"]["vocab"]
    order = (
        specials + [f"<0x{b:02X}>" for b in range(256)] + [t for t in sorted(vocab, key=vocab.get) if t not in specials]
    )
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(order)}, merges=merges, unk_token="<unk>", byte_fallback=True)
    tk = Tokenizer(bpe)
    split(tk)
    tk.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        + ([decoders.Strip(" ", 1, 0)] if prefix else [])
    )
    tk.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _tiny(folder, kind, tok):
    """A 2-layer decoder of `kind` sized to `tok`, saved with it (Qwen2: q/k/v biases and an untied head)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        kind,
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=kind != "qwen2",
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **({"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 64} if kind == "gemma2" else {}),
    )
    model = AutoModelForCausalLM.from_config(config)
    if kind == "gemma2":
        with torch.no_grad():  # Gemma's norms scale by 1 + w: nonzero w, so a missing offset shows
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.normal_()
    if kind == "qwen2":
        with torch.no_grad():  # nonzero biases, so a misplaced one shows in the logits
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


@pytest.mark.parametrize(
    "kind, tokenizer",
    [
        ("mistral", "sentencepiece"),
        pytest.param(
            "qwen2",
            "byte-level",
            marks=pytest.mark.skipif(not LLAMA_CPP, reason="only llama.cpp reads added (user-defined) tokens"),
        ),
        pytest.param(
            "gemma2",
            "sentencepiece-no-prefix",
            marks=pytest.mark.skipif(
                not LLAMA_CPP, reason="only llama.cpp reads a Gemma GGUF vocabulary as it is meant"
            ),
        ),
    ],
)
def test_mistral_qwen2_and_gemma2_with_their_tokenizer_families_read_back_identically(
    kind, tokenizer, tiny_model, tmp_path
):
    """Written straight from a model folder: the same logits through transformers' GGUF loader, the same ids
    through every GGUF tokenizer reader (llama.cpp's too when installed), SentencePiece merges as scores."""
    import gguf
    import torch
    from conftest import english_lines, target_docs
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langadapt.config import ModelConfig
    from langadapt.gguf_vocab import BYTE, USER_DEFINED, build_vocab, parity

    if tokenizer == "byte-level":
        tok = AutoTokenizer.from_pretrained(tiny_model)
        tok.add_tokens(["ndiluwe"])  # an added (not merged) token: HF and llama.cpp both match it whole
    else:
        tok = spm_tokenizer(prefix=tokenizer == "sentencepiece")
    folder = _tiny(tmp_path / kind, kind, tok)
    plan = gguf_export.plan(folder, ModelConfig(base=str(folder)), "f32", "tiny")
    vocab = build_vocab(plan.tokenizer, len(tok), plan.base)
    path = tmp_path / f"{kind}.gguf"
    gguf_export.write_gguf(plan, vocab, path)
    texts = [d["text"] for d in target_docs(seed=5)[:8]] + english_lines(8, seed=11) + ["Ŋanga 12 ☃ café  two  spaces"]
    checked = parity(path, tok, {"texts": texts})
    assert checked["sets"]["texts"]["identical"]
    # transformers' reader neither reads Gemma vocabularies as llama.cpp does nor keeps added tokens
    assert list(checked["unreadable"]) == ([] if kind == "mistral" else ["transformers (GGUF tokenizer)"])

    r = gguf.GGUFReader(path)
    assert _field(r, "general.architecture") == {"mistral": "llama"}.get(kind, kind)
    if tokenizer.startswith("sentencepiece"):
        assert _field(r, "tokenizer.ggml.model") == "llama"
        assert _field(r, "tokenizer.ggml.add_space_prefix") is (tokenizer == "sentencepiece")
        types, scores = _field(r, "tokenizer.ggml.token_type"), _field(r, "tokenizer.ggml.scores")
        assert types[3] == types[258] == BYTE and types[0] == 2  # <0x00>, <0xFF>, <unk>
        merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
        first, last = ("".join(m if isinstance(m, list) else m.split(" ")) for m in (merges[0], merges[-1]))
        ids = tok.convert_tokens_to_ids([first, last, "K"])
        # earlier merges score higher (llama.cpp applies them first); single characters lowest
        assert scores[ids[0]] > scores[ids[1]] > scores[ids[2]]
    else:
        assert _field(r, "tokenizer.ggml.model") == "gpt2" and "blk.0.attn_q.bias" in {t.name for t in r.tensors}
        added = tok.convert_tokens_to_ids("ndiluwe")
        assert _field(r, "tokenizer.ggml.token_type")[added] == USER_DEFINED and added in sum(
            tok(texts)["input_ids"], []
        )
    original = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ids = tok(texts[0], add_special_tokens=False)["input_ids"][:40]
    with torch.no_grad():
        want = original(torch.tensor([ids])).logits
    if kind == "gemma2":  # transformers' GGUF loader does not know Gemma 2's attention scale: llama.cpp runs it
        import numpy as np
        from llama_cpp import Llama

        llm = Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False)
        llm.eval(ids)
        got = torch.from_numpy(np.asarray(llm.scores[: len(ids)]))[None]
        torch.testing.assert_close(got, want, rtol=0, atol=2e-3 * float(want.abs().max()))
    else:
        model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(torch.tensor([ids])).logits, want, rtol=1e-5, atol=1e-5)


CHATML = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are Tiny.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.mark.parametrize(
    "template, expect",
    [
        (CHATML, ['TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}', 'SYSTEM """You are Tiny."""']),
        (
            "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}",
            ["# the chat template is not ChatML"],
        ),
        (None, ["# no chat template"]),
    ],
)
def test_the_modelfile_carries_the_chat_template_and_stop_tokens(template, expect):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from langadapt.gguf_vocab import BaseTokenizer, build_vocab

    tk = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"]
    )
    tok.chat_template = template
    text = gguf_export.modelfile("m.gguf", tok, build_vocab(tok, len(tok), BaseTokenizer("gpt-2", "a test")))
    assert text.startswith("FROM ./m.gguf\n") and 'PARAMETER stop "<|im_end|>"' in text
    for line in expect:
        assert line in text, text
    assert ("TEMPLATE" in text) == (template == CHATML)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (pip install langadapt[gguf])",
)
def test_llama_cpp_runs_the_export_with_the_adapted_ids_logits_and_bits_per_byte(finished_run, tmp_path):
    import numpy as np
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langadapt.documents import leading_documents, read_texts
    from langadapt.recipe import Recipe
    from langadapt.rundir import RunDir
    from langadapt.scoring.bpb import bits_per_byte_llama_cpp

    run_dir, _, _ = finished_run
    final = run_dir / "train" / "final"
    tok, adapted = AutoTokenizer.from_pretrained(final), AutoModelForCausalLM.from_pretrained(final).eval()
    recipe = Recipe.from_yaml(run_dir / "recipe.yaml")
    texts = leading_documents(read_texts(RunDir(run_dir), "nya", "heldout"), recipe.eval.max_chars)
    results = read_json(run_dir / "eval" / "results.json")["bits_per_byte"]["nya-heldout"]
    for quant, tolerance in (("f32", 1e-4), ("f16", 5e-3)):
        folder = export(run_dir, tmp_path / quant, "gguf", quant=quant)
        path = str(folder / f"tiny.{quant}.gguf")
        assert "llama.cpp (llama-cpp-python)" in read_json(folder / "gguf_export.json")["parity"]["readers"]
        llm = Llama(model_path=path, n_ctx=128, logits_all=True, verbose=False)
        ids = tok(texts[0], add_special_tokens=False)["input_ids"][:60]
        assert llm.tokenize(texts[0].encode(), add_bos=False, special=False)[:60] == ids
        llm.eval(ids)
        with torch.no_grad():
            want = adapted(torch.tensor([ids])).logits[0].numpy()
        got = np.asarray(llm.scores[: len(ids)])
        assert np.abs(got - want).max() <= tolerance * 20 * np.abs(want).max()
        bpb = bits_per_byte_llama_cpp(path, tok, texts, recipe.eval)
        assert bpb["tokens"] == results["adapted_tokens"]
        assert bpb["bits_per_byte"] == pytest.approx(results["adapted"], rel=tolerance)

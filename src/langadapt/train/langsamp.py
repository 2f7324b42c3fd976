"""LangSAMP (Liu et al. 2024, "LangSAMP: Language-Script Aware Multilingual Pretraining"): language and
script embeddings added to the token representations during training only.

Two small tables, one row per language of the run (the target, the replay language, the
languages of train.parallel) and one per writing system of the vocabulary (each token's
dominant script, `script.dominant_script`; tokens of no script, digits and punctuation, share
`Zyyy`), are added to the transformer's output at every position before the LM head, as
LangSAMP adds them: the head sees what language and script a token is in, so the
representations the body passes it need not carry that, which the paper finds makes them more
language-neutral and helps cross-lingual transfer. The tables start at zero (the first step
computes what the base computes) and train with the embedding rows' learning rate.

They exist only during training: a forward pre-hook on the head's first module adds them
during each training forward pass (put on the head as the train method has wrapped it, and
taken off after), and the flow removes the tables before the final model is saved, so the exported
model has exactly the base's modules and shapes (and computes without them). The held-out
figures during training (`train.eval_every`) are the model without them, as it is exported.
Checkpoints carry the tables, so a resumed run continues with them.

Each position's language comes with its row (`languages`, drawn in the data thread): the row's
language, and per side for a pair. The head of a decoder then runs as the plain loss (full
logits), since the fused head + loss reads the body's output directly.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from langadapt.errors import ConfigError

if TYPE_CHECKING:
    import torch

ATTRIBUTE = "langsamp"  # the tables' module on the innermost model while training
NO_SCRIPT = "Zyyy"


def token_scripts(tok: Any, vocab_rows: int) -> tuple["torch.Tensor", list[str]]:
    """Each token id's script index (rows beyond the tokenizer: NO_SCRIPT) and the scripts by index."""
    import torch

    from langadapt.script import dominant_script

    names = [NO_SCRIPT]
    index = {NO_SCRIPT: 0}
    out = torch.zeros(vocab_rows, dtype=torch.long)
    special = set(tok.all_special_ids)
    for i in range(min(len(tok), vocab_rows)):
        if i in special:
            continue
        text = tok.decode([i])
        script = (dominant_script(text)[0] if text.strip() else "") or NO_SCRIPT
        if script not in index:
            index[script] = len(names)
            names.append(script)
        out[i] = index[script]
    return out, names


def head_module(model: Any) -> Any:
    """The module whose input is the transformer's output at every position: an encoder's MLM head entry,
    a decoder's output head; ConfigError for an architecture without one."""
    from langadapt.models.encoder import _head_entry

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if type(inner).__name__.endswith("ForCausalLM"):
        head = inner.get_output_embeddings()
        if head is not None:
            return head
    elif type(inner).__name__.endswith("ForMaskedLM"):
        return _head_entry(inner)
    raise ConfigError(
        [
            f"train.langsamp: adds language and script embeddings before the LM head, and {type(inner).__name__} "
            "has no head that reads the transformer's output (a ForMaskedLM or ForCausalLM class); set train.langsamp: false"
        ]
    )


def attach(model: Any, languages: list[str], scripts: "torch.Tensor", script_names: list[str]) -> Any:
    """Adds the tables to the innermost model (trainable, zero) and the hook on its head; returns the tables."""
    import torch

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = int(inner.config.hidden_size)
    tables = torch.nn.Module()
    tables.language = torch.nn.Embedding(len(languages), hidden)
    tables.script = torch.nn.Embedding(len(script_names), hidden)
    torch.nn.init.zeros_(tables.language.weight)
    torch.nn.init.zeros_(tables.script.weight)
    tables.register_buffer("token_script", scripts, persistent=False)
    tables.languages, tables.script_names, tables.current = list(languages), list(script_names), None
    device = next(inner.parameters()).device
    tables.to(device)
    inner.add_module(ATTRIBUTE, tables)
    # what a decoder's loss runs as: the plain loss (`objectives.prepare_loss` sees the tables)

    inner.__dict__["_langadapt_fused_loss"] = "LangSAMP adds its embeddings to the head's input"
    return tables


def _add(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The pre-hook on the head: the current rows' language and script embeddings added to its input."""
    tables = module.__dict__["_langadapt_langsamp"]
    if tables.current is None:
        return args
    ids, langs = tables.current
    extra = tables.language(langs) + tables.script(tables.token_script[ids.clamp(max=len(tables.token_script) - 1)])
    return (args[0] + extra.to(args[0].dtype),) + args[1:]


def tables_of(model: Any) -> Any:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, ATTRIBUTE, None)


def enable(model: Any) -> None:
    """Lets the tables train after a method wrapped the model (peft freezes what is not its own)."""
    tables = tables_of(model)
    if tables is not None:
        for p in tables.parameters():
            p.requires_grad_(True)


def detach(model: Any) -> dict[str, Any] | None:
    """Removes the hook and the tables (before the final model is saved); returns what they were."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    tables = getattr(inner, ATTRIBUTE, None)
    if tables is None:
        return None
    delattr(inner, ATTRIBUTE)
    inner.__dict__.pop("_langadapt_fused_loss", None)
    return {
        "languages": tables.languages,
        "scripts": tables.script_names,
        "parameters_trained": sum(p.numel() for p in tables.parameters()),
        "language_row_norms": [round(float(x), 4) for x in tables.language.weight.detach().norm(dim=1)],
    }


class WithLanguages:
    """An objective with LangSAMP's per-position ids set on the tables around each call.

    Takes what the objective takes plus `languages` (batch, seq); keeps its other attributes
    (host_inputs, target_stream, target_share) for the loop.
    """

    def __init__(self, inner: Any, language_index: dict[str, int]) -> None:
        self.inner, self.language_index = inner, language_index
        sig = inspect.signature(inner)
        params = list(sig.parameters.values())
        extra = inspect.Parameter("languages", inspect.Parameter.KEYWORD_ONLY, default=None)
        keyword = [p for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY]
        positional = [p for p in params if p.kind != inspect.Parameter.KEYWORD_ONLY]
        self.__signature__ = sig.replace(parameters=positional + keyword + [extra])
        for name in ("host_inputs", "target_stream", "target_share"):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))

    def __call__(self, model: Any, input_ids: "torch.Tensor", *args: Any, languages: Any = None, **kw: Any) -> Any:
        """The objective with the hook on the head for this call: the head found now, as the method has
        wrapped it (peft's trainable-token rows wrap a decoder's head), and removed after."""
        tables = tables_of(model)
        if tables is None or languages is None:
            return self.inner(model, input_ids, *args, **kw)
        head = head_module(model)
        head.__dict__["_langadapt_langsamp"] = tables
        handle = head.register_forward_pre_hook(_add)
        tables.current = (input_ids, languages)
        try:
            return self.inner(model, input_ids, *args, **kw)
        finally:
            tables.current = None
            handle.remove()
            head.__dict__.pop("_langadapt_langsamp", None)

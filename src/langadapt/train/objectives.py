"""Training objectives: (model, input_ids, position_ids=None) -> per-token loss, registered by name.

The loss has shape (batch, seq_len - 1): one value per predicted position, so the loop can
report it per language and average it as it likes. `position_ids` (optional) restart at 0
at every document start of a packed row; models that support it then keep attention
inside each document (see `data.document_positions`).

The causal loss never materialises the (tokens x vocabulary) logits: the output head and
the cross-entropy run together over chunks of tokens (`linear_cross_entropy`), which is
what keeps a 250k vocabulary affordable and removes the largest allocations of a step.
It is used only where it computes what the model computes: `prepare_loss` checks it against
the model's own logits on a probe batch before training (a head that scales or caps its
logits, as Granite's `logits_scaling` does, or any head the fused path does not know, fails
the check) and otherwise the plain loss runs; the choice and its reason go into the summary.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable

from langadapt.registry import Registry
from langadapt.train import factorised
from langadapt.train.precision import frozen_dtype

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

Objective = Callable[..., "torch.Tensor"]
OBJECTIVES: Registry[Objective] = Registry("objectives")

# objectives by the kind of model they train: masked (encoders) and causal (decoders)
MASKED_OBJECTIVES = ("mlm", "tlm", "codeswitch", "lem")
CAUSAL_OBJECTIVES = ("clm", "translation-clm", "codeswitch-restore", "meco")
# objectives that train on pairs of train.parallel, and on code-switched text (train.codeswitch_*)
PAIR_OBJECTIVES = ("tlm", "translation-clm")
CODESWITCH_OBJECTIVES = ("codeswitch", "codeswitch-restore")


def is_masked(objective: str) -> bool:
    """Whether `objective` trains an encoder (masked positions, the text-start separator)."""
    return objective in MASKED_OBJECTIVES


CHUNK_TOKENS = 1024  # tokens per chunk of the fused head + loss: 1024 x 250k fp32 logits (and softmax) = 1 GB each


@OBJECTIVES.register("clm", help="causal language modelling: predict each next token (fused chunked head + loss)")
def clm_loss(
    model: "PreTrainedModel", input_ids: "torch.Tensor", position_ids: "torch.Tensor | None" = None
) -> "torch.Tensor":

    if not _fused_for(model):  # a model whose logits are more than the linear map the fused path computes
        return plain_clm_loss(model, input_ids, position_ids)
    return fused_clm_loss(model, input_ids, position_ids)


def fused_clm_loss(
    model: "PreTrainedModel", input_ids: "torch.Tensor", position_ids: "torch.Tensor | None" = None
) -> "torch.Tensor":
    """The causal loss through the chunked head (`output_head` must recognise the model's head)."""
    import torch

    targets = torch.full_like(input_ids, -100)
    targets[:, :-1] = input_ids[:, 1:]
    head = output_head(model)
    assert head is not None, head_problem(model)
    body, weight, bias, rows, delta = head
    hidden = body(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
    flat = hidden.reshape(-1, hidden.shape[-1])
    loss = linear_cross_entropy(flat, weight, targets.view(-1), bias, rows, delta, chunk=CHUNK_TOKENS)
    return loss.view(input_ids.shape)[:, :-1]


def plain_clm_loss(
    model: "PreTrainedModel", input_ids: "torch.Tensor", position_ids: "torch.Tensor | None" = None
) -> "torch.Tensor":
    """The textbook loss: full logits, then cross-entropy (the reference the fused loss is tested against)."""
    import torch
    import torch.nn.functional as F

    logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
    if logits.dtype != torch.float32:
        logits = logits.float()
    # shift the targets, not the logits: slicing (batch, seq, vocab) logits would copy them
    targets = torch.full_like(input_ids, -100)
    targets[:, :-1] = input_ids[:, 1:]
    loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), reduction="none", ignore_index=-100)
    return loss.view(input_ids.shape)[:, :-1]


def output_head(model: Any) -> tuple[Any, "torch.Tensor", "torch.Tensor | None", Any, Any] | None:
    """(decoder body, head weight, head bias, trainable row ids, trainable rows) of a causal LM, or None.

    Understands a plain linear head, peft's trainable-token rows on a (tied) head and OFA's
    factorised head (`train/factorised.py`); any other head returns None (`head_problem` says
    why). Whether the model's logits are that linear map of the body's output and nothing more
    is for `prepare_loss` to check.
    """
    return _read_head(model)[0]


def head_problem(model: Any) -> str | None:
    """Why `output_head` does not recognise the model's head (None: it does)."""
    return _read_head(model)[1]


def _read_head(model: Any) -> tuple[tuple[Any, "torch.Tensor", "torch.Tensor | None", Any, Any] | None, str | None]:
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None:
        return None, "the model has no config"
    for key in ("final_logit_softcapping", "logit_scale"):
        if getattr(config, key, None):
            return None, f"config.{key} changes the logits after the head"
    if not hasattr(base, "get_decoder") or not hasattr(base, "get_output_embeddings"):
        return None, f"{type(base).__name__} does not expose its decoder body and output head"
    body, head = base.get_decoder(), base.get_output_embeddings()
    if body is None or head is None or body is base:
        return None, f"{type(base).__name__} does not expose its decoder body and output head"
    if isinstance(head, torch.nn.Linear):
        return (body, head.weight, head.bias, None, None), None
    factors = factorised.head_of(base)
    if factors is not None:  # OFA's (h P^T) A^T: the hidden states down-projected, then a linear head of rank k
        return (factorised.DownProjected(body, factors), factors.source.table(), factors.bias, None, None), None
    layer = getattr(head, "token_adapter", head)  # peft: a TrainableTokensWrapper, or the layer itself
    if hasattr(layer, "trainable_tokens_delta") and isinstance(getattr(layer, "base_layer", None), torch.nn.Linear):
        active = [a for a in layer.active_adapters if a in layer.trainable_tokens_delta]
        if len(active) != 1 or layer.merged or layer.disable_adapters:
            return None, "the output head's trainable rows are merged, disabled or several"
        name = active[0]
        rows = _row_ids(layer, name, layer.base_layer.weight.device)
        return (body, layer.base_layer.weight, layer.base_layer.bias, rows, layer.trainable_tokens_delta[name]), None
    return None, f"the output head is a {type(head).__name__}, not a linear layer (e.g. LoRA on the head)"


def _row_ids(layer: Any, name: str, device: "torch.device") -> "torch.Tensor":
    """peft's trainable row ids as a tensor on `device`, made once: a copy from a host list at every
    forward pass would make the host wait for the device before it."""
    import torch

    cache = layer.__dict__.setdefault("_langadapt_row_ids", {})
    key = (name, tuple(layer.token_indices[name]), device)
    if key not in cache:
        cache.clear()
        cache[key] = torch.tensor(key[1], device=device)
    return cache[key]


# -- which causal loss a model trains with ------------------------------------------------------

FUSED_ATTRIBUTE = "_langadapt_fused_loss"  # on the innermost model: True, or the reason the plain loss runs
PROBE_SHAPE = (2, 16)  # rows x tokens of the probe batch


def prepare_loss(objective: str, model: Any, vocab_size: int | None = None) -> str:
    """Decide, once before training, how the objective computes its loss; returns what the summary records.

    For clm: "fused" when the chunked head + loss gives the model's own per-token losses on a
    probe batch, else "plain (reason)". The decision is stored on the model for `clm_loss`.
    """
    if objective not in CAUSAL_OBJECTIVES:
        return f"plain ({objective}: the head runs at the predicted positions only)"
    reason = _check_fused(model, vocab_size)
    _innermost(model).__dict__[FUSED_ATTRIBUTE] = True if reason is None else reason
    return "fused" if reason is None else f"plain ({reason})"


def _innermost(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _fused_for(model: Any) -> bool:
    """The decision `prepare_loss` stored; a model nobody prepared is checked here, once."""
    decided = _innermost(model).__dict__.get(FUSED_ATTRIBUTE)
    if decided is None:
        prepare_loss("clm", model)
        decided = _innermost(model).__dict__[FUSED_ATTRIBUTE]
    return decided is True


def _check_fused(model: Any, vocab_size: int | None) -> str | None:
    """None when the fused loss equals the plain loss on a probe batch; else why the plain loss must run.

    The probe is random token ids from a private generator (the global RNG, which checkpoints
    save, is not touched), run without dropout and without autocast, in the model's own dtype,
    with gradients on as in training (bitsandbytes' 4-bit layers on a CPU fail without them).
    A model whose frozen weights are bf16 or fp16 beside float32 trained ones (`model.dtype`)
    runs under autocast in the frozen weights' type, as it trains: the two cannot meet otherwise.
    """
    import torch

    problem = head_problem(model)
    if problem is not None:
        return problem
    if getattr(_innermost(model), "langsamp", None) is not None:  # train/langsamp.py: its hook is on the head
        return "LangSAMP adds its embeddings to the head's input"
    weight = output_head(model)[1]  # type: ignore[index]
    if weight.is_meta:  # no weights yet: they come from rank 0 (train/distributed.py), and so does its choice
        return None
    vocab = vocab_size or weight.shape[0]
    ids = torch.randint(0, vocab, PROBE_SHAPE, generator=torch.Generator().manual_seed(0)).to(weight.device)
    half = frozen_dtype(model)
    cast = torch.autocast(weight.device.type, dtype=getattr(torch, half), enabled=half != "float32")
    training = model.training
    model.eval()
    try:
        with torch.enable_grad(), cast:
            fused = fused_clm_loss(model, ids).detach().float()
            plain = plain_clm_loss(model, ids).detach().float()
    finally:
        model.train(training)
    # float32 agrees to rounding; 16-bit logits to their precision
    tol = 1e-3 if weight.dtype == torch.float32 and half == "float32" else 3e-2
    gap = (fused - plain).abs().max().item()
    if not gap <= tol * (1 + plain.abs().max().item()):  # also catches NaN
        return (
            f"on a probe batch the fused head's losses differ from the model's own logits by up to {gap:.3g} nats "
            "(its logits are more than a linear map of the last hidden state)"
        )
    return None


def linear_cross_entropy(
    hidden: "torch.Tensor",
    weight: "torch.Tensor",
    targets: "torch.Tensor",
    bias: "torch.Tensor | None" = None,
    rows: "torch.Tensor | None" = None,
    delta: "torch.Tensor | None" = None,
    chunk: int = CHUNK_TOKENS,
) -> "torch.Tensor":
    """Per-token cross-entropy of `hidden @ W.T + b` against targets (-100: ignored, loss 0).

    W is `weight` with `rows` replaced by `delta` (peft's trainable new-token rows). Same
    values and gradients as the plain loss, without the (tokens x vocabulary) logits.
    """
    if rows is None or delta is None:
        import torch

        rows, delta = None, torch.empty(0, weight.shape[1], dtype=weight.dtype, device=weight.device)
    return _fused_function().apply(hidden, weight, bias, delta, rows, targets, chunk)


def _compute_dtype(t: "torch.Tensor") -> "torch.dtype":
    import torch

    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


def _chunk_logits(h: "torch.Tensor", w: "torch.Tensor", b: "torch.Tensor | None") -> "torch.Tensor":
    import torch.nn.functional as F

    return F.linear(h, w, None if b is None else b.to(w.dtype)).float()


def _softmax_grad(logits: "torch.Tensor", t: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """Loss per token, d(loss)/d(logits) of the counted tokens, and which tokens count (target not -100).

    One fused softmax, which works a row at a time while it sits in the cache, instead of a
    logsumexp and an exp each streaming the whole chunk through memory: half the time of the
    step's largest elementwise work on a CPU. The loss is -log p(target); rows whose target
    probability is too small for float32 to hold precisely take it from the logits instead,
    as log-sum-exp minus the target's logit, the log-sum-exp read off the top logit (whose
    probability is at least 1 / vocabulary): two max passes, a fraction of the softmax's cost.

    Nothing here depends on the values in a way the host must see (no branch on which rows
    are faint or ignored), so the device never waits for the host to read them. The gradient
    is softmax minus one-hot; the rows of ignored tokens keep their softmax, and the callers
    multiply their much smaller products by the mask instead of zeroing (tokens x vocabulary).
    """
    import torch

    valid = t != -100
    safe = torch.where(valid, t, 0)
    rows = torch.arange(len(t), device=t.device)
    top = logits.amax(dim=-1)
    probs = torch.softmax(logits, dim=-1)
    p_target = probs[rows, safe]
    faint = p_target < 1e-30
    from_logits = top - torch.log(probs.amax(dim=-1)) - logits[rows, safe]
    loss = torch.where(faint, from_logits, -torch.log(p_target))
    probs[rows, safe] -= valid.to(probs.dtype)
    return torch.where(valid, loss, 0.0), probs, valid


@functools.cache
def _fused_function() -> Any:
    """The autograd function, built on first use so that importing this module stays light."""
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        """Head + cross-entropy per chunk, gradients computed in the forward pass.

        d(loss_t)/d(h_t) depends on token t alone, so it is stored once per token and scaled
        by the incoming gradient in backward: exact for any reduction the caller applies. The
        head weight's gradient needs every token's softmax, so when the head itself trains
        (full fine-tuning) backward recomputes the chunks instead of storing them.
        """

        @staticmethod
        def forward(ctx, hidden, weight, bias, delta, rows, targets, chunk):  # type: ignore[no-untyped-def]
            dtype = _compute_dtype(hidden)
            training = any(ctx.needs_input_grad[:4])  # no gradients to prepare under torch.no_grad()
            with torch.autocast(hidden.device.type, enabled=False):
                w = _effective_weight(weight, rows, delta, dtype)
                losses = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
                grad_h = torch.empty_like(hidden, dtype=torch.float32) if training else None
                grad_rows = [] if training and rows is not None and delta.requires_grad else None
                for s in range(0, hidden.shape[0], chunk):
                    h = hidden[s : s + chunk].detach().to(dtype)
                    loss, probs, counted = _softmax_grad(_chunk_logits(h, w, bias), targets[s : s + chunk])
                    losses[s : s + chunk] = loss
                    counted = counted.unsqueeze(1)  # ignored tokens: no gradient
                    if grad_h is not None:
                        grad_h[s : s + chunk] = (probs.to(dtype) @ w).float() * counted
                    if grad_rows is not None:
                        grad_rows.append(probs[:, rows] * counted)
            ctx.save_for_backward(hidden, weight, bias, delta, rows, targets, grad_h)
            ctx.grad_rows = torch.cat(grad_rows) if grad_rows else None
            ctx.chunk, ctx.dtype = chunk, dtype
            return losses

        @staticmethod
        def backward(ctx, grad_loss):  # type: ignore[no-untyped-def]
            hidden, weight, bias, delta, rows, targets, grad_h = ctx.saved_tensors
            g = grad_loss.float()[:, None]
            d_hidden = (grad_h * g).to(hidden.dtype) if ctx.needs_input_grad[0] else None
            d_delta = None
            if ctx.grad_rows is not None and ctx.needs_input_grad[3]:
                d_delta = ((ctx.grad_rows * g).T @ hidden.detach().float()).to(delta.dtype)
            d_weight = d_bias = None
            if ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2]):
                d_weight, d_bias = _head_grads(hidden, weight, bias, delta, rows, targets, g, ctx.chunk, ctx.dtype)
            return d_hidden, d_weight, d_bias, d_delta, None, None, None

    return LinearCrossEntropy


def _effective_weight(weight, rows, delta, dtype):  # type: ignore[no-untyped-def]
    """The head weight as the model uses it: peft's trainable rows written over the frozen ones."""
    w = weight.detach().to(dtype)
    return w if rows is None else w.index_copy(0, rows, delta.detach().to(dtype))


def _head_grads(hidden, weight, bias, delta, rows, targets, g, chunk, dtype):  # type: ignore[no-untyped-def]
    """Gradients of a trainable head (recomputes each chunk's softmax; rows replaced by delta get none)."""
    import torch

    w = _effective_weight(weight, rows, delta, dtype)
    d_weight = torch.zeros_like(weight, dtype=torch.float32)
    d_bias = None if bias is None else torch.zeros_like(bias, dtype=torch.float32)
    for s in range(0, hidden.shape[0], chunk):
        h = hidden[s : s + chunk].detach().to(dtype)
        _, probs, counted = _softmax_grad(_chunk_logits(h, w, bias), targets[s : s + chunk])
        probs.mul_(g[s : s + chunk] * counted.unsqueeze(1))  # ignored tokens: no gradient
        d_weight += probs.T @ h.float()
        if d_bias is not None:
            d_bias += probs.sum(0)
    if rows is not None:
        d_weight[rows] = 0.0
    return d_weight.to(weight.dtype), None if d_bias is None else d_bias.to(bias.dtype)

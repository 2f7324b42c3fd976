"""The distillation losses and the objective the training loop calls with them.

Per token, the student is pulled towards its teacher by

- the logit KL divergence T^2 KL(softmax(t/T) || softmax(s/T)), where t are the teacher's
  logits at the student's tokens only (the columns of the kept tokens, renormalised by the
  softmax over them): the student cannot put mass on tokens it does not have, so the
  teacher's distribution it learns is the one conditioned on the kept vocabulary;
- hidden-state matching: each student layer's output against the output of the teacher
  layer it was copied from (`distill.hidden_loss`: scale-free MSE or 1 - cosine), averaged
  over the mapped layers;
- for encoders, MiniLM's attention transfer (Wang et al., 2020): KL(teacher || student) of
  the self-attention distributions of the student's top layer and its teacher layer, per
  query, averaged over heads. MiniLM's value-relation term is not computed.

Decoders score every position of a packed row; encoders see the row corrupted by the train
stage's masking (same plan, same seeds as `train.objective: mlm`), the KL at the chosen
positions (as the masked-LM loss), hidden states and attention at every position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langadapt.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from langadapt.distill.config import DistillConfig


def logit_kl(student: "torch.Tensor", teacher: "torch.Tensor", temperature: float) -> "torch.Tensor":
    """T^2 KL(softmax(teacher/T) || softmax(student/T)) over the last axis, per position (fp32)."""
    import torch.nn.functional as F

    log_s = F.log_softmax(student.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=-1)
    return temperature**2 * (log_t.exp() * (log_t - log_s)).sum(dim=-1)


def hidden_distance(student: "torch.Tensor", teacher: "torch.Tensor", kind: str) -> "torch.Tensor":
    """Per position: mse, the mean squared difference over the hidden axis over the teacher state's mean square;
    cosine, 1 - cosine similarity."""
    import torch.nn.functional as F

    s, t = student.float(), teacher.float()
    if kind == "cosine":
        return 1 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)
    return (s - t).pow(2).mean(dim=-1) / t.pow(2).mean(dim=-1).clamp_min(1e-8)


def attention_kl(student: "torch.Tensor", teacher: "torch.Tensor") -> "torch.Tensor":
    """KL(teacher || student) of attention rows (batch, heads, query, key), per query, averaged over heads."""
    import torch

    s, t = student.float(), teacher.float()
    kl = torch.xlogy(t, t) - torch.xlogy(t, s.clamp_min(1e-12))  # keys the teacher does not see count 0
    return kl.sum(dim=-1).mean(dim=1)


class LayerOutputs:
    """The outputs of chosen transformer layers during one forward pass, caught by forward hooks."""

    def __init__(self, layers: Any, indices: list[int]) -> None:
        self.outputs: dict[int, Any] = {}
        self.handles = [layers[i].register_forward_hook(self._catch(i)) for i in indices]

    def _catch(self, i: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            self.outputs[i] = output[0] if isinstance(output, tuple) else output

        return hook

    def __enter__(self) -> "LayerOutputs":
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()


class Distillation:
    """The objective `train_loop` calls: (student, input_ids, position_ids, ...) -> per-token (encoders: per-row) loss.

    `kept` maps student token ids to teacher ids (a tensor on the device); `pairs` are
    (student layer, teacher layer) couples; `plan` is the masked-LM masking plan (encoders)
    or None (decoders).
    """

    def __init__(
        self,
        teacher: Any,
        teacher_layers: Any,
        student_layers: Any,
        kept: "torch.Tensor",
        pairs: list[tuple[int, int]],
        cfg: "DistillConfig",
        plan: Any = None,
        packed_inputs: Any = None,
    ) -> None:
        self.teacher, self.kept, self.pairs, self.cfg, self.plan = teacher, kept, pairs, cfg, plan
        self.teacher_layers, self.student_layers = teacher_layers, student_layers
        self.packed_inputs = packed_inputs  # encoders: position ids -> attention mask and positions per document
        self.attention = plan is not None and cfg.attention_weight > 0
        if plan is not None:
            self.host_inputs = plan.host_inputs  # the loop computes the words on the host

    def __call__(
        self,
        model: Any,
        input_ids: "torch.Tensor",
        position_ids: "torch.Tensor | None" = None,
        words: "torch.Tensor | None" = None,
        longest_word: int | None = None,
        seed: int | None = None,
    ) -> "torch.Tensor":
        import torch

        chosen = None
        if self.plan is not None:
            if words is None or longest_word is None:
                host = self.plan.host_inputs(input_ids.cpu())
                words, longest_word = host["words"].to(input_ids.device), host["longest_word"]
            chosen, input_ids = self.plan.draw(input_ids, seed, words, longest_word)
            kwargs = self.packed_inputs(model, position_ids) if position_ids is not None else {}
        else:
            kwargs = {"position_ids": position_ids, "use_cache": False}
        if self.attention:
            kwargs["output_attentions"] = True
        s_at, t_at = [s for s, _ in self.pairs], [t for _, t in self.pairs]
        with torch.no_grad(), LayerOutputs(self.teacher_layers, t_at) as caught_t:
            t_out = self.teacher(input_ids=self.kept[input_ids], **kwargs)
        with LayerOutputs(self.student_layers, s_at) as caught_s:
            s_out = model(input_ids=input_ids, **kwargs)
        t_logits = t_out.logits.index_select(-1, self.kept)  # the student's tokens only; the softmax renormalises
        kl = logit_kl(s_out.logits, t_logits, self.cfg.temperature)
        hidden = torch.zeros_like(kl)
        if self.cfg.hidden_weight:
            hidden = sum(
                hidden_distance(caught_s.outputs[s], caught_t.outputs[t], self.cfg.hidden_loss) for s, t in self.pairs
            ) / len(self.pairs)
        if chosen is None:  # decoder: every position
            return self.cfg.kl_weight * kl + self.cfg.hidden_weight * hidden
        kl_rows = torch.where(chosen, kl, 0.0).sum(dim=1) / chosen.sum(dim=1).clamp(min=1)
        rows = self.cfg.kl_weight * kl_rows + self.cfg.hidden_weight * hidden.mean(dim=1)
        if self.attention:
            if not t_out.attentions or not s_out.attentions:
                raise ConfigError(
                    [
                        f"distill.attention_weight: {type(model).__name__} returns no attention weights; set "
                        "distill.attention_weight: 0 to distil it on logits and hidden states alone"
                    ]
                )
            attention = attention_kl(s_out.attentions[-1], t_out.attentions[self.pairs[-1][1]])
            rows = rows + self.cfg.attention_weight * attention.mean(dim=1)
        return rows.unsqueeze(1)

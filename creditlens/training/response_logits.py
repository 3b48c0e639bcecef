"""No-grad logits at chosen response positions of many contexts, for CREDIT's contrast forwards.

A causal LM whose logits are ``lm_head(decoder(...).last_hidden_state)`` (the architectures of
:data:`PROJECTED`) runs its decoder over the G x R contexts in G calls of R contexts, sorted by length
(so each call, cut to its longest context, pads little), and the vocabulary projection only at the response
positions asked for, a bounded number of positions at a time: G forward calls instead of one per chunk of
rows, and no logits for prompt or padding positions. (One call over all G x R contexts was 13% slower than
G calls on the 2-core CPU, SmolLM2, 24 contexts of ~230 tokens: larger activations fall out of cache.) Any other model (a PEFT model, whose
adapters the top-level call routes, or one sharded by FSDP or DeepSpeed, whose parameters it gathers) takes
plain forwards of a bounded number of rows each (``SDPOTrainer._forward_logits``), cut to the positions
asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext

import torch
from accelerate.utils import is_peft_model
from trl.experimental.sdpo import SDPOTrainer

PROJECTED = frozenset(
    f"{name}ForCausalLM" for name in ("Llama", "Mistral", "Qwen2", "Qwen3", "Phi3", "SmolLM3", "Olmo2")
)
"""Causal LM classes whose ``forward`` computes ``logits = lm_head(decoder(...).last_hidden_state)`` and
nothing more (no soft-capping or scaling), checked against transformers 5.25."""


def split_causal_lm(trainer: SDPOTrainer, model) -> tuple[torch.nn.Module, torch.nn.Module, bool] | None:
    """``(decoder, lm_head, autocast)`` of ``model`` where its logits are ``lm_head(decoder(...))``, else None.

    ``autocast``: the model was prepared by accelerate for mixed precision, so its forward runs under
    autocast and returns float32 outputs; the split runs the same way.
    """
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        return None
    model = trainer.accelerator.unwrap_model(model)
    if is_peft_model(model) or type(model).__name__ not in PROJECTED:
        return None
    return model.get_decoder(), model.get_output_embeddings(), "_original_forward" in vars(model)


@torch.no_grad()
def response_logits(
    trainer: SDPOTrainer,
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    keep: torch.Tensor,
    groups: int,
    chunk_rows: int | None,
) -> Iterator[tuple[int, slice, torch.Tensor]]:
    """Temperature-scaled logits at the kept response positions, in chunks.

    ``input_ids``/``attention_mask`` ``[G * R, L]``: ``groups`` (G) groups of R contexts, each ending with the
    T response tokens of its row; ``keep [R, T]``: the response positions wanted (the same for every group).
    Yields ``(group, positions, logits [n, V])``: ``positions`` slices the group's kept positions in
    row-major order of ``keep`` (n of them), at most ``chunk_rows * T`` per chunk (None: a group at once).
    """
    rows, t = keep.shape
    counts = keep.sum(dim=1).tolist()
    split = split_causal_lm(trainer, model)
    step = (chunk_rows or rows) * t
    if split is not None:
        decoder, head, autocast = split
        first = attention_mask.int().argmax(dim=1)  # each context's first token (left padding before it)
        hidden = None
        with trainer.accelerator.autocast() if autocast else nullcontext():
            for call in first.argsort(stable=True).split(rows):  # R contexts a call, longest first
                start = int(first[call].min())
                out = decoder(input_ids=input_ids[call, start:], attention_mask=attention_mask[call, start:], use_cache=False)
                out = out.last_hidden_state[:, -t - 1 : -1]
                hidden = out.new_empty((len(input_ids), *out.shape[1:])) if hidden is None else hidden
                hidden[call] = out
            for group in range(groups):
                kept = hidden[group * rows : (group + 1) * rows][keep]
                for start in range(0, len(kept), step):
                    logits = head(kept[start : start + step])
                    logits = logits.float() if autocast else logits
                    yield group, slice(start, start + len(logits)), logits / trainer.temperature
        return
    chunk_rows = chunk_rows or rows
    for group in range(groups):
        offset = 0
        for first in range(0, rows, chunk_rows):
            last = min(first + chunk_rows, rows)
            where = slice(group * rows + first, group * rows + last)
            mask = attention_mask[where]
            start = int(mask.any(dim=0).int().argmax())  # the left padding these rows share is not computed
            ids = input_ids[where, start:]
            logits = SDPOTrainer._forward_logits(trainer, model, ids, mask[:, start:], t)
            logits = logits[keep[first:last]]
            n = sum(counts[first:last])
            yield group, slice(offset, offset + n), logits
            offset += n

"""Forward passes that do each piece of work once, feeding trl's own losses and metrics.

1. The LM head (a quarter of the default model's parameters) runs only at positions whose next
   token is scored: the completion, never the prompt. trl does this only where Triton runs.
2. One forward per preference pair: the prompt once, then the chosen and the rejected SQL.

trl's DPOTrainer runs prompt+chosen and prompt+rejected as two rows, so the long schema prompt
goes through the model twice. Here each pair is one row, laid out as

    prompt[:-1] | prompt[-1] chosen | prompt[-1] rejected

with a 4-D attention mask: the chosen part sees the prompt, the rejected part sees the prompt
(without its last token) and its own copy of that last token, never the chosen part. Positions
of the rejected part restart where the chosen part's did, so each token sees exactly what it
would see in trl's two rows. The LM head then runs only at the positions whose next token is
scored, and the per-token results are laid back out as trl's two rows, so trl computes its own
loss and metrics on them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3


@dataclass
class PackedPairs:
    """A batch of pairs, one row each, and where each scored token goes back in trl's layout."""

    input_ids: torch.Tensor  # [pairs, width]
    position_ids: torch.Tensor  # [pairs, width]
    attention_mask: torch.Tensor  # [pairs, 1, width, width], True where a query may attend a key
    next_tokens: torch.Tensor  # [pairs, width]: the token position t is scored on; -100 where none
    target_rows: torch.Tensor  # [scored]: row in trl's [chosen rows; rejected rows] layout
    target_columns: torch.Tensor  # [scored]: column in trl's shifted per-token layout


def pack_pairs(input_ids: torch.Tensor, completion_mask: torch.Tensor, pad_id: int) -> PackedPairs | None:
    """Pack trl's collated batch (chosen rows, then rejected rows, right-padded) one pair a row.

    Returns None when a row has no completion token or the two rows of a pair disagree on the
    prompt (truncation cut into it): the caller then uses trl's own path.
    """
    pairs = input_ids.shape[0] // 2
    rows, segments, positions, targets = [], [], [], []
    target_rows, target_columns = [], []
    for i in range(pairs):
        chosen_mask, rejected_mask = completion_mask[i].bool(), completion_mask[pairs + i].bool()
        if not chosen_mask.any() or not rejected_mask.any():
            return None
        p = int(chosen_mask.nonzero()[0])  # prompt length
        if int(rejected_mask.nonzero()[0]) != p or not torch.equal(input_ids[i, :p], input_ids[pairs + i, :p]):
            return None
        prompt = input_ids[i, :p].tolist()
        chosen = input_ids[i][chosen_mask].tolist()
        rejected = input_ids[pairs + i][rejected_mask].tolist()
        rows.append(prompt + chosen + prompt[-1:] + rejected)
        segments.append([PROMPT] * (p - 1) + [CHOSEN] * (1 + len(chosen)) + [REJECTED] * (1 + len(rejected)))
        positions.append(list(range(p + len(chosen))) + list(range(p - 1, p + len(rejected))))
        # Position t is scored on the next token of its own branch; the last token of a branch on none.
        targets.append([-100] * (p - 1) + chosen + [-100] + rejected + [-100])
        # trl's shifted layout: column t holds the score of token t + 1 of its row.
        target_rows += [i] * len(chosen) + [pairs + i] * len(rejected)
        target_columns += [*range(p - 1, p - 1 + len(chosen)), *range(p - 1, p - 1 + len(rejected))]
    width = max(len(r) for r in rows)
    device = input_ids.device
    ids = torch.full((pairs, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((pairs, width), dtype=torch.long)
    next_tokens = torch.full((pairs, width), -100, dtype=torch.long)
    segment = torch.full((pairs, width), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row)
        ids[i, :n] = torch.tensor(row)
        position_ids[i, :n] = torch.tensor(positions[i])
        next_tokens[i, :n] = torch.tensor(targets[i])
        segment[i, :n] = torch.tensor(segments[i])
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    query, key = segment[:, :, None], segment[:, None, :]
    visible = causal & (key != PAD) & ~((query == REJECTED) & (key == CHOSEN)) & ~((query == CHOSEN) & (key == REJECTED))
    visible |= torch.eye(width, dtype=torch.bool)  # padding attends to itself: no row is all masked
    return PackedPairs(ids.to(device), position_ids.to(device), visible[:, None].to(device),
                       next_tokens.to(device), torch.tensor(target_rows, device=device),
                       torch.tensor(target_columns, device=device))


def last_hidden_state(model, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
    """Run the whole (possibly PEFT- and DDP-wrapped) model, so that wrappers see the call; return the
    decoder's final hidden states. The model's own head runs on one position only."""
    decoder = _decoder(model)
    captured = {}
    handle = decoder.register_forward_hook(lambda _m, _args, output: captured.__setitem__("h", output[0]))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=1,
              use_cache=False)
    finally:
        handle.remove()
    return captured["h"]


def _unwrap(model):
    while hasattr(model, "module"):  # DDP and other wrappers
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _decoder(model):
    base = _unwrap(model)
    return getattr(base, base.base_model_prefix)


def _per_token(model, hidden: torch.Tensor, next_tokens: torch.Tensor):
    """Log-prob, entropy, mean logit and top-1 of each scored token (next_tokens != -100), in row order."""
    scored = next_tokens != -100
    head = _unwrap(model).get_output_embeddings()
    logits = head(hidden[scored].contiguous()).float()  # 2-D input: no expanded copy of the head's weight
    labels = next_tokens[scored]
    log_softmax = logits.log_softmax(-1)
    token_logps = log_softmax.gather(-1, labels[:, None]).squeeze(-1)
    with torch.no_grad():
        entropy = -(log_softmax.exp() * log_softmax).sum(-1)
        mean_logits = logits.mean(-1)
        is_top1 = logits.argmax(-1) == labels
    return token_logps, entropy, mean_logits, is_top1


def _fused_output(fields, lay_out):
    from trl.trainer.utils import FusedCausalLMOutput

    token_logps, entropy, mean_logits, is_top1 = (lay_out(f) for f in fields)
    mask = lay_out(torch.ones_like(fields[0], dtype=torch.bool))
    return FusedCausalLMOutput(loss=-fields[0].mean(), log_probs=token_logps, entropy=entropy,
                               mean_logits=mean_logits, is_top1=is_top1, label_mask=mask)


def scored_outputs(model, packed: PackedPairs, shape: tuple[int, int]):
    """trl's per-token fields (log-probs, entropy, mean logits, top-1) in its two-row layout `shape`,
    from one forward over the packed pairs."""
    hidden = last_hidden_state(model, packed.input_ids, packed.attention_mask, packed.position_ids)
    fields = _per_token(model, hidden, packed.next_tokens)

    # Scored tokens come out row by row in packed order (chosen tokens of a pair, then its rejected
    # ones), the order target_rows and target_columns were built in.
    def lay_out(values: torch.Tensor) -> torch.Tensor:
        return values.new_zeros(shape).index_put((packed.target_rows, packed.target_columns), values)

    return _fused_output(fields, lay_out)


def completion_outputs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor,
                       **kwargs):
    """What trl's fused LM head returns for a causal-LM batch (fields shaped [batch, seq - 1]), with the
    head applied only where the label is not -100."""
    hidden = last_hidden_state(model, input_ids, attention_mask, kwargs.get("position_ids"))[:, :-1]
    next_tokens = labels[:, 1:]
    fields = _per_token(model, hidden, next_tokens)
    scored = next_tokens != -100

    def lay_out(values: torch.Tensor) -> torch.Tensor:
        return values.new_zeros(next_tokens.shape).masked_scatter(scored, values)

    return _fused_output(fields, lay_out)

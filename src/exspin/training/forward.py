"""Forward passes that do each piece of work once, feeding trl's own losses and metrics.

1. The LM head (a quarter of the default model's parameters) runs only at positions whose next
   token is scored: the completion, never the prompt. trl does this only where Triton runs.
2. Rows that share a prompt prefix are packed into one row, the prefix computed once. Examples
   about one database share its schema (when the batch is ordered by prompt,
   common.order_by_prompt); a preference pair's chosen and rejected rows share their whole prompt.

trl's DPOTrainer runs prompt+chosen and prompt+rejected as two rows, so the long schema prompt
goes through the model twice. Here the rows of a batch that share most of their prompt become
one row, a tree of three levels:

    schema | question 1 | chosen 1 | rejected 1 | question 2 | chosen 2 | rejected 2 | ...

with a 4-D attention mask: each token sees (causally) the shared prefix, the rest of its own
prompt, and its own row's tail, never another question or another row's answer. Positions restart
so that each token sits where it would in its own row, and sees exactly what it would see there.
A row's tail starts one token before its first scored token, since that token's score comes from
the position before it. The LM head then runs only at positions whose next token is scored, and
the per-token results are laid back out in trl's rows, so trl computes its own loss and metrics
on them unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

SHARED, PAD = 0, -1  # prompt-node ids; the rests of the prompts that differ are 1, 2, ...
MIN_SHARED_FRACTION = 0.5  # rows join a packed row when they share at least this much of their prompt


@dataclass
class PackedRows:
    """A batch packed by shared prefix, and where each scored token goes back in trl's layout."""

    input_ids: torch.Tensor  # [packed, width]
    position_ids: torch.Tensor  # [packed, width]
    attention_mask: torch.Tensor  # [packed, 1, width, width], True where a query may attend a key
    next_tokens: torch.Tensor  # [packed, width]: the token position t is scored on; -100 where none
    target_rows: torch.Tensor  # [scored]: row in trl's layout
    target_columns: torch.Tensor  # [scored]: column in trl's shifted per-token layout (t - 1 for token t)


def _common_prefix(a: list[int], b: list[int]) -> int:
    return len(os.path.commonprefix([a, b]))


def sharing_groups(rows: list[list[int]], firsts: list[int]) -> list[list[int]]:
    """Rows in groups that share at least MIN_SHARED_FRACTION of their prompt (firsts: each row's first
    scored index) with the group's first row; order kept."""
    groups: list[list[int]] = []
    for r, row in enumerate(rows):
        for group in groups:
            leader = group[0]
            if _common_prefix(row, rows[leader]) >= MIN_SHARED_FRACTION * min(firsts[r], firsts[leader]):
                group.append(r)
                break
        else:
            groups.append([r])
    return groups


def _trees(rows: list[list[int]], firsts: list[int]):
    """Each packed row's tree: its rows (a sharing group), the prefix they share, and their prompts'
    distinct rests after it, each with the rows under it. Every row's own tail starts at the token before
    its first scored one (firsts[r])."""
    trees = []
    for group in sharing_groups(rows, firsts):
        shared = min(firsts[r] for r in group) - 1
        for r in group[1:]:
            shared = min(shared, _common_prefix(rows[group[0]], rows[r]))
        nodes: dict[tuple[int, ...], list[int]] = {}  # the rest of the prompt -> rows that share it
        for r in group:
            nodes.setdefault(tuple(rows[r][shared : firsts[r] - 1]), []).append(r)
        trees.append((group, shared, nodes))
    return trees


def packed_lengths(rows: list[list[int]], firsts: list[int]) -> list[int]:
    """The lengths of the packed rows pack_rows makes of these rows (token ids, each scored from index
    firsts[r] to its end): the tokens a micro-batch feeds the model, its shared prefixes once."""
    return [shared + sum(len(rest) + sum(len(rows[r]) - firsts[r] + 1 for r in members)
                         for rest, members in nodes.items())
            for _, shared, nodes in _trees(rows, firsts)]


def pack_rows(input_ids: torch.Tensor, scored: torch.Tensor, pad_id: int,
              attention_mask: torch.Tensor | None = None) -> PackedRows | None:
    """Pack a right-padded batch whose scored tokens (scored[r, t]: token t of row r is scored) end
    each row, as trl collates completions. Returns None where the layout is not that (a row with no
    scored token, one whose first token is scored, padding before a row's last scored token): the
    caller then uses trl's own path."""
    scored = scored.bool()
    if not scored.any(dim=1).all() or scored[:, 0].any():
        return None
    firsts = [int(s.nonzero()[0]) for s in scored]
    ends = [int(s.nonzero()[-1]) + 1 for s in scored]
    if attention_mask is not None and any(not attention_mask[r, :end].all() for r, end in enumerate(ends)):
        return None
    rows = [input_ids[r, : ends[r]].tolist() for r in range(len(ends))]
    score_rows = [scored[r, : ends[r]].tolist() for r in range(len(ends))]
    packed: list[dict[str, list[int]]] = []
    target_rows, target_columns = [], []
    for group, shared, nodes in _trees(rows, firsts):
        out = {"ids": rows[group[0]][:shared], "prompt": [0] * shared, "tail": [0] * shared,
               "position": list(range(shared)), "target": [-100] * shared}
        for node, (prompt_rest, members) in enumerate(nodes.items(), start=1):
            out["ids"] += prompt_rest
            out["prompt"] += [node] * len(prompt_rest)
            out["tail"] += [0] * len(prompt_rest)
            out["position"] += range(shared, shared + len(prompt_rest))
            out["target"] += [-100] * len(prompt_rest)
            for r in members:
                row, is_scored, start = rows[r], score_rows[r], firsts[r] - 1
                out["ids"] += row[start:]
                out["prompt"] += [node] * (len(row) - start)
                out["tail"] += [r + 1] * (len(row) - start)
                out["position"] += range(start, len(row))
                # Position t is scored on token t + 1 of its own row; trl's shifted column for it is t.
                out["target"] += [row[t + 1] if t + 1 < len(row) and is_scored[t + 1] else -100
                                  for t in range(start, len(row))]
                scored_at = [t for t in range(start, len(row) - 1) if is_scored[t + 1]]
                target_rows += [r] * len(scored_at)
                target_columns += scored_at
        packed.append(out)
    width = max(len(p["ids"]) for p in packed)
    device = input_ids.device
    ids = torch.full((len(packed), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(packed), width), dtype=torch.long)
    next_tokens = torch.full((len(packed), width), -100, dtype=torch.long)
    prompt = torch.full((len(packed), width), PAD, dtype=torch.long)
    tail = torch.full((len(packed), width), PAD, dtype=torch.long)
    for i, p in enumerate(packed):
        n = len(p["ids"])
        ids[i, :n] = torch.tensor(p["ids"])
        position_ids[i, :n] = torch.tensor(p["position"])
        next_tokens[i, :n] = torch.tensor(p["target"])
        prompt[i, :n] = torch.tensor(p["prompt"])
        tail[i, :n] = torch.tensor(p["tail"])
    # A query sees, causally, the group's prefix, its own prompt's rest, and its own row's tail.
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    query_prompt, key_prompt = prompt[:, :, None], prompt[:, None, :]
    query_tail, key_tail = tail[:, :, None], tail[:, None, :]
    visible = causal & (key_prompt != PAD) & (
        (key_prompt == SHARED) | ((key_prompt == query_prompt) & ((key_tail == 0) | (key_tail == query_tail))))
    visible |= torch.eye(width, dtype=torch.bool)  # padding attends to itself: no row is all masked
    return PackedRows(ids.to(device), position_ids.to(device), visible[:, None].to(device),
                      next_tokens.to(device), torch.tensor(target_rows, device=device),
                      torch.tensor(target_columns, device=device))


def last_hidden_state(model, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
    """Run the whole (possibly PEFT- and DDP-wrapped) model, so that wrappers see the call; return the
    decoder's final hidden states. The model's own head runs on no position: kept logits given as an empty
    index. (logits_to_keep=1 cost a sixth of an SFT step on CPU: the head then gets a 3-D slice, and
    matmul copies its weight into a [batch, hidden, vocab] expansion.)"""
    decoder = _decoder(model)
    captured = {}
    handle = decoder.register_forward_hook(lambda _m, _args, output: captured.__setitem__("h", output[0]))
    no_position = torch.zeros(0, dtype=torch.long, device=input_ids.device)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
              logits_to_keep=no_position, use_cache=False)
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


def scored_outputs(model, packed: PackedRows, shape: tuple[int, int]):
    """trl's per-token fields (log-probs, entropy, mean logits, top-1) in its row layout `shape`,
    from one forward over the packed rows."""
    hidden = last_hidden_state(model, packed.input_ids, packed.attention_mask, packed.position_ids)
    fields = _per_token(model, hidden, packed.next_tokens)

    # Scored tokens come out in packed order (packed row, then branch, then position), the order
    # target_rows and target_columns were built in.
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

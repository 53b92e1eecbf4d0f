"""The SPIN loss as a pure function: summed log-probs in, per-pair losses out.

loss = -log sigmoid(lambda * [(log p(y|x) - log p_t(y|x)) - (log p(y'|x) - log p_t(y'|x))])

y is the gold SQL, y' the opponent's, p_t the frozen previous iterate. This is DPO's sigmoid
loss with the previous iterate as reference; trl's DPOTrainer computes it in training, and
tests check that trainer against this function. The optional NLL term (weight alpha) adds
the mean negative log-likelihood per gold token, as RPO does.
"""

from __future__ import annotations


def spin_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta: float):
    import torch.nn.functional as F

    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -F.logsigmoid(beta * margin)


def nll_term(chosen_token_logps, chosen_mask):
    """Mean negative log-likelihood per gold token (masked), trl's "sft" loss."""
    return -(chosen_token_logps[chosen_mask.bool()]).mean()

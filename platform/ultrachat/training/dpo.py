"""The DPO objective: log-probabilities of both answers under the policy and the reference, and the loss.

One micro-batch of B pairs is one forward pass of 2B rows (chosen rows, then rejected rows, right-padded
to a common width), so both answers see the same weights and kernels. The reference goes through the
same ``pair_logps`` code path as the policy (no_grad): at step 0, with reference = policy, the
log-ratios are exactly 0, the sigmoid loss is ln 2 and every reward is 0 (divergent code paths are a
known source of a non-zero start, NeMo-Aligner#227).

The reference is the policy's starting weights, held one of three ways:
- a frozen copy, partitioned like the policy under ZeRO-3 (a second DeepSpeed engine without an
  optimizer; TRL's create_reference_model refuses ZeRO-3, trl#669), or whole below stage 3
  (training/model.py);
- with LoRA, no copy at all: the base model with the adapters disabled;
- precomputed: no weights at all, a table of every pair's reference log-probs computed by the starting
  policy before step 1 (training/reference_table.py).

Losses (per pair, with ``logits = (pi_c - pi_r) - (ref_c - ref_r)``):
- sigmoid: ``-(1 - eps) * log sigmoid(beta * logits) - eps * log sigmoid(-beta * logits)``, where
  log-probs are sums over the answer's tokens (DPO; eps = label_smoothing, cDPO);
- ipo: ``(logits - 1 / (2 * beta)) ** 2`` on log-probs averaged over the answer's tokens (IPO).
Rewards are ``beta * (pi - ref)`` on summed log-probs, as TRL reports them.
"""

from __future__ import annotations

from ultrachat.config.training import Dpo
from ultrachat.training.examples import IGNORE_INDEX

# Sums over the interval's micro-batches; the meter averages them per micro-batch.
METRICS = ("rewards_chosen", "rewards_rejected", "reward_accuracy", "reward_margin", "logps_chosen",
           "logps_rejected")


def collate_pairs(batch: dict, pad_id: int) -> dict:
    """B pairs -> 2B rows (chosen first), right-padded as SFT's micro-batches are (training/loop.py)."""
    from ultrachat.training.loop import collate

    from ultrachat.training.reference_table import pair_keys

    ids = list(batch["chosen_input_ids"]) + list(batch["rejected_input_ids"])
    collated = collate({"input_ids": ids, "labels": list(batch["chosen_labels"]) + list(batch["rejected_labels"]),
                        "position_ids": [range(len(row)) for row in ids], "num_tokens": batch["num_tokens"]}, pad_id)
    return {**collated, "pair_keys": pair_keys(batch)}


def sequence_logps(logits, labels):
    """(sum of log p(label) over each row's labelled tokens, their count), logits predicting the next token."""
    import torch

    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logits = logits[:, :-1].float()
    picked = torch.gather(logits, 2, targets.clamp(min=0).unsqueeze(2)).squeeze(2)
    token_logps = (picked - torch.logsumexp(logits, dim=2)) * mask
    return token_logps.sum(dim=1), mask.sum(dim=1)


def pair_logps(model, batch: dict):
    """(chosen log-probs, rejected log-probs, chosen token counts, rejected token counts) of a collated
    batch under ``model`` (a DeepSpeed engine, or a module on the engine's device)."""
    device = model.device
    out = model(input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device),
                use_cache=False)
    logps, counts = sequence_logps(out.logits, batch["labels"].to(device))
    half = logps.shape[0] // 2
    return logps[:half], logps[half:], counts[:half], counts[half:]


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, config: Dpo,
             chosen_tokens=None, rejected_tokens=None):
    """(mean loss over the pairs, per-pair losses, chosen rewards, rejected rewards). Log-probs are sums
    over each answer's tokens; ipo averages them per token, so it needs the token counts."""
    import torch.nn.functional as F

    if config.loss == "ipo":
        logits = (policy_chosen - ref_chosen) / chosen_tokens - (policy_rejected - ref_rejected) / rejected_tokens
        losses = (logits - 1 / (2 * config.beta)) ** 2
    else:
        logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
        eps = config.label_smoothing
        losses = -(1 - eps) * F.logsigmoid(config.beta * logits) - eps * F.logsigmoid(-config.beta * logits)
    chosen_rewards = config.beta * (policy_chosen - ref_chosen).detach()
    rejected_rewards = config.beta * (policy_rejected - ref_rejected).detach()
    return losses.mean(), losses, chosen_rewards, rejected_rewards


class DpoObjective:
    """``loss(engine, batch)`` for the training loop: the policy forward with gradients, the reference
    forward without, then the loss; ``last`` holds the micro-batch's metrics for the meter."""

    metrics = METRICS
    eval_metrics = ("reward_accuracy", "reward_margin")
    collate = staticmethod(collate_pairs)

    @staticmethod
    def eval_weight(batch) -> int:
        return batch["input_ids"].shape[0] // 2  # pairs

    def __init__(self, config: Dpo, reference=None):
        """``reference``: a module or engine with the starting weights, or None: then either ``table`` (set
        before training, dpo.reference: precomputed) or, for a LoRA policy, the base model with its
        adapters disabled."""
        self.config, self.reference = config, reference
        self.table = None  # a ReferenceTable (training/reference_table.py)
        self.last: dict[str, float] = {}

    def reference_logps(self, engine, batch: dict):
        import torch

        if self.table is not None:
            chosen, rejected = self.table.lookup(batch["pair_keys"])
            return chosen.to(engine.device), rejected.to(engine.device), None, None
        with torch.no_grad():
            if self.reference is not None:
                return pair_logps(self.reference, batch)
            with getattr(engine, "module", engine).disable_adapter():  # a DeepSpeed engine wraps the PeftModel
                return pair_logps(engine, batch)

    def loss(self, engine, batch: dict):
        ref_c, ref_r, _, _ = self.reference_logps(engine, batch)
        pol_c, pol_r, n_c, n_r = pair_logps(engine, batch)
        loss, _, rewards_c, rewards_r = dpo_loss(pol_c, pol_r, ref_c, ref_r, self.config, n_c, n_r)
        pairs = pol_c.shape[0]
        self.last = {
            "rewards_chosen": float(rewards_c.sum()) / pairs, "rewards_rejected": float(rewards_r.sum()) / pairs,
            "reward_accuracy": float((rewards_c > rewards_r).float().mean()),
            "reward_margin": float((rewards_c - rewards_r).mean()),
            "logps_chosen": float(pol_c.detach().mean()), "logps_rejected": float(pol_r.detach().mean()),
        }
        return loss

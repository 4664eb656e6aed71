"""The DPO objective against computations written apart from it (plain PyTorch, one sequence at a time).

The oracle here never pads, never concatenates chosen with rejected and never gathers: it runs the
model on each unpadded sequence alone and adds up log_softmax over the answer's tokens in a Python
loop, then applies the published formulas (DPO's sigmoid loss, cDPO's label smoothing, IPO's squared
loss on per-token averages). The training code must agree to 1e-4.
"""

import copy
import math
from collections import Counter

import pytest
import torch

from ultrachat.config.training import Dpo
from ultrachat.training.dpo import DpoObjective, collate_pairs, dpo_loss, pair_logps
from ultrachat.training.examples import IGNORE_INDEX
from ultrachat.training.preference_pairs import pair_example

LN2 = math.log(2)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    m.eval()
    return m


def pairs(tokenizer, n=4):
    rows = []
    for i in range(n):
        pair = {"context": [{"role": "user", "content": f"question {i}: " + "why is the sea salty? " * (i + 1)}],
                "chosen": "rivers carry minerals " * (2 + i), "rejected": f"no idea {i}"}
        rows.append(pair_example(tokenizer, pair, 256, 128, Counter()))
    return rows


def batch_of(rows):
    columns = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels", "num_tokens")
    return collate_pairs({c: [r[c] for r in rows] for c in columns}, pad_id=0)


def oracle_logp(model, ids, labels):
    """Sum of log p(token) over the labelled tokens of one unpadded sequence, token by token."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    total, count = 0.0, 0
    for t in range(1, len(ids)):
        if labels[t] != IGNORE_INDEX:
            total += float(torch.log_softmax(logits[t - 1], dim=-1)[labels[t]])
            count += 1
    return total, count


def oracle_loss(pc, pr, rc, rr, beta, kind="sigmoid", eps=0.0, nc=1, nr=1):
    def logsig(x):
        return -math.log1p(math.exp(-x))

    if kind == "ipo":
        h = (pc - rc) / nc - (pr - rr) / nr
        return (h - 1 / (2 * beta)) ** 2
    h = (pc - pr) - (rc - rr)
    return -(1 - eps) * logsig(beta * h) - eps * logsig(-beta * h)


def test_per_example_log_probs_match_one_sequence_at_a_time(model, tokenizer):
    rows = pairs(tokenizer)
    chosen, rejected, n_c, n_r = pair_logps(model, batch_of(rows))
    for i, row in enumerate(rows):
        want_c, count_c = oracle_logp(model, row["chosen_input_ids"], row["chosen_labels"])
        want_r, count_r = oracle_logp(model, row["rejected_input_ids"], row["rejected_labels"])
        assert float(chosen[i]) == pytest.approx(want_c, abs=1e-4)
        assert float(rejected[i]) == pytest.approx(want_r, abs=1e-4)
        assert (int(n_c[i]), int(n_r[i])) == (count_c, count_r)


@pytest.mark.parametrize("config", [Dpo(beta=0.1), Dpo(beta=0.01), Dpo(beta=0.5, label_smoothing=0.2),
                                    Dpo(beta=0.1, loss="ipo")], ids=["sigmoid", "beta-0.01", "cdpo", "ipo"])
def test_loss_matches_the_published_formulas(model, tokenizer, config):
    rows = pairs(tokenizer)
    reference = copy.deepcopy(model)
    with torch.no_grad():  # a policy that moved away from the reference
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    try:
        pol_c, pol_r, n_c, n_r = pair_logps(model, batch_of(rows))
        ref_c, ref_r, _, _ = pair_logps(reference, batch_of(rows))
        loss, losses, rewards_c, rewards_r = dpo_loss(pol_c, pol_r, ref_c, ref_r, config, n_c, n_r)
        expected = []
        for row in rows:
            pc, nc = oracle_logp(model, row["chosen_input_ids"], row["chosen_labels"])
            pr, nr = oracle_logp(model, row["rejected_input_ids"], row["rejected_labels"])
            rc, _ = oracle_logp(reference, row["chosen_input_ids"], row["chosen_labels"])
            rr, _ = oracle_logp(reference, row["rejected_input_ids"], row["rejected_labels"])
            expected.append(oracle_loss(pc, pr, rc, rr, config.beta, config.loss, config.label_smoothing, nc, nr))
            assert float(rewards_c[len(expected) - 1]) == pytest.approx(config.beta * (pc - rc), abs=1e-4)
            assert float(rewards_r[len(expected) - 1]) == pytest.approx(config.beta * (pr - rr), abs=1e-4)
        assert [float(x) for x in losses] == pytest.approx(expected, abs=1e-4)
        assert float(loss) == pytest.approx(sum(expected) / len(expected), abs=1e-4)
    finally:
        model.load_state_dict(reference.state_dict())


def test_step_zero_with_a_frozen_copy_is_ln2_with_zero_rewards(model, tokenizer):
    objective = DpoObjective(Dpo(beta=0.1), reference=copy.deepcopy(model))
    loss = objective.loss(model, batch_of(pairs(tokenizer)))
    assert float(loss) == pytest.approx(LN2, abs=1e-6)
    assert objective.last["rewards_chosen"] == pytest.approx(0, abs=1e-7)
    assert objective.last["rewards_rejected"] == pytest.approx(0, abs=1e-7)
    assert objective.last["reward_margin"] == pytest.approx(0, abs=1e-7)


def test_lora_reference_is_the_base_with_adapters_disabled(tiny_model_dir, tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    batch = batch_of(pairs(tokenizer))
    objective = DpoObjective(Dpo(beta=0.1), reference=None)
    assert float(objective.loss(peft, batch)) == pytest.approx(LN2, abs=1e-6)  # LoRA's B starts at 0
    with torch.no_grad():  # the adapters move: the policy changes, the reference (adapters off) must not
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.add_(0.05 * torch.randn_like(p))
    assert float(objective.loss(peft, batch)) != pytest.approx(LN2, abs=1e-4)
    ref_c, ref_r, _, _ = objective.reference_logps(peft, batch)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    base_c, base_r, _, _ = pair_logps(base, batch)
    assert torch.allclose(ref_c, base_c, atol=1e-5) and torch.allclose(ref_r, base_r, atol=1e-5)


def test_precomputed_reference_table_stands_in_for_the_frozen_copy(model, tokenizer, tmp_path):
    from ultrachat.training.reference_table import ReferenceTable

    rows = pairs(tokenizer, n=5)
    reference = copy.deepcopy(model)
    table = ReferenceTable.compute(model, [[batch_of(rows[:2]), batch_of(rows[2:4])], [batch_of(rows[4:])]],
                                   pair_logps)
    model.eval()
    assert len(table) == 5
    ReferenceTable(dict(table.entries)).save(str(tmp_path))
    objective = DpoObjective(Dpo(beta=0.1), reference=None)
    objective.table = ReferenceTable.load(str(tmp_path))
    mixed = batch_of([rows[4], rows[0], rows[3]])  # other batches, other positions: looked up by content
    assert float(objective.loss(model, mixed)) == pytest.approx(LN2, abs=1e-6)
    assert objective.last["reward_margin"] == pytest.approx(0, abs=1e-7)
    try:
        with torch.no_grad():  # the policy moves; the table must keep giving the starting weights' numbers
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        frozen = DpoObjective(Dpo(beta=0.1), reference=reference)
        assert float(objective.loss(model, mixed)) == pytest.approx(float(frozen.loss(model, mixed)), abs=1e-6)
        assert float(objective.loss(model, mixed)) != pytest.approx(LN2, abs=1e-4)
    finally:
        model.load_state_dict(reference.state_dict())
    other = pairs(tokenizer, n=6)[5]
    with pytest.raises(RuntimeError, match="no precomputed reference log-probs"):
        objective.loss(model, batch_of([rows[0], other]))
    with pytest.raises(RuntimeError, match="has no reference_logps.json"):
        ReferenceTable.load(str(tmp_path / "empty"))

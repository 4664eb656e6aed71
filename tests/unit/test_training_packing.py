"""Packing keeps each example's loss exactly as if it were alone, and wastes less of the sequence."""

import pytest
import torch

from ultrachat.training.examples import IGNORE_INDEX, SplitStats, dialogue_examples
from ultrachat.training.packing import non_padding_fraction, pack_examples, pad_batch


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def examples(tokenizer) -> list[dict]:
    out, stats = [], SplitStats()
    for i, words in enumerate((3, 9, 5, 14, 2)):
        messages = [{"role": "user", "content": f"question {i} " + "tides " * words},
                    {"role": "assistant", "content": f"answer {i} " + "the moon pulls " * words}]
        out += dialogue_examples(tokenizer, messages, 512, stats)
    return out


def token_losses(model, input_ids, labels, position_ids=None) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([input_ids]), use_cache=False,
                       position_ids=None if position_ids is None else torch.tensor([position_ids])).logits[0]
    # Logit t predicts token t + 1, as transformers' causal LM loss shifts.
    target = torch.tensor(labels[1:])
    losses = torch.nn.functional.cross_entropy(logits[:-1], target.clamp(min=0), reduction="none")
    return torch.where(target == IGNORE_INDEX, torch.zeros_like(losses), losses)


def test_packed_and_unpacked_give_the_same_per_example_loss(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items = examples(tokenizer)
    alone = [token_losses(model, e["input_ids"], e["labels"]).sum() for e in items]
    rows = list(pack_examples(items, 2 * max(len(e["input_ids"]) for e in items), tokenizer.pad_token_id))
    assert len(rows) < len(items)  # some were actually packed together
    packed = []
    for row in rows:
        losses = token_losses(model, row["input_ids"], row["labels"], row["position_ids"])
        starts = [i for i, p in enumerate(row["position_ids"][: row["num_tokens"]]) if p == 0] + [row["num_tokens"]]
        # Example k's label positions are starts[k]..starts[k+1]-1; loss index t belongs to label t + 1.
        packed += [losses[a:b - 1].sum() for a, b in zip(starts, starts[1:])]
    # Packing may reorder examples: compare the multisets of per-example losses.
    assert torch.allclose(torch.stack(packed).sort().values, torch.stack(alone).sort().values, rtol=1e-4, atol=1e-4)


def test_packing_fills_sequences(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    items = examples(tokenizer) * 32
    packed = list(pack_examples(items, 2048, tokenizer.pad_token_id))
    unpacked = pad_batch(items, 2048, tokenizer.pad_token_id)
    assert non_padding_fraction(packed) > 0.9 > 0.2 > non_padding_fraction(unpacked)
    assert all(len(r["input_ids"]) == len(r["labels"]) == len(r["position_ids"]) == 2048 for r in packed)
    assert sum(r["num_tokens"] for r in packed) == sum(len(e["input_ids"]) for e in items)
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        list(pack_examples(items, 8, tokenizer.pad_token_id))

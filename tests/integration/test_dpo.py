"""method: dpo end to end on the session's Ray head: real DeepSpeed (ZeRO-2 with precomputed reference
log-probs, also across a resume; ZeRO-2 with a frozen copy; ZeRO-3 with a partitioned reference engine;
LoRA with the adapters disabled as reference), the step-0 identity (loss ln 2, rewards 0), learning a simple preference rule to a held-out reward accuracy >= 0.9, the export, and
SFT data refused with an error that names the file and line."""

import json
import math

import pytest

from training_runs import metrics_by_step, run_train, train_config, write_data, write_preferences

LN2 = math.log(2)


def dpo_config(tmp_path, data, **extra):
    base = {"method": "dpo", "dpo": {"beta": 0.1, "max_prompt_length": 128}, "log_every_steps": 1,
            "checkpoint_every_steps": 100, "warmup_ratio": 0.0}
    return train_config(tmp_path, data, **{**base, **extra})


def step_zero(out):
    first = metrics_by_step(out)[1]  # step 1's micro-batches all ran on the starting weights
    assert first["loss"] == pytest.approx(LN2, abs=1e-5), first
    for key in ("rewards_chosen", "rewards_rejected", "reward_margin"):
        assert first[key] == pytest.approx(0.0, abs=1e-6), (key, first)
    return first


PRECOMPUTED = {"beta": 0.1, "max_prompt_length": 128, "reference": "precomputed"}


@pytest.mark.parametrize("setting", [
    {"zero_stage": 2, "dpo": PRECOMPUTED},
    {"zero_stage": 3},
    {"zero_stage": 2, "lora": {"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
     "learning_rate": 5e-3},
], ids=["zero2-precomputed-reference", "zero3-partitioned-reference", "lora-adapters-off-reference"])
def test_step_zero_is_ln2_with_zero_rewards(ray_head, small_model_dir, tmp_path, setting):
    data = write_preferences(tmp_path / "prefs.jsonl", count=40)
    config = dpo_config(tmp_path, data, epochs=1, **setting)
    code, summary, stderr = run_train(config, env_extra={"RAY_ADDRESS": ray_head["address"]})
    assert code == 0, stderr[-6000:]
    out = tmp_path / "out"
    step_zero(out)
    steps = metrics_by_step(out)
    assert max(steps) == summary["counts"]["total_steps"] == 5
    # Step 1's update ran at the full lr (no warmup, no step at lr 0): step 2 is measured on moved
    # weights against the reference, which stayed put (rewards are log-ratios to it).
    assert steps[2]["reward_margin"] != pytest.approx(0.0, abs=1e-7), steps[2]
    assert steps[5]["loss"] != pytest.approx(LN2, abs=1e-4) and steps[5]["reward_margin"] != 0
    if setting.get("dpo") != PRECOMPUTED:
        return
    # The table of all 40 pairs rides in the checkpoint. Resumed for a second epoch, the run reads it:
    # recomputed from the moved policy, step 6 would again be ln 2 with zero rewards (trl#1962's symptom).
    table = json.loads((out / "checkpoints" / "step_0000005" / "reference_logps.json").read_text())
    assert len(table) == 40
    code, summary, stderr = run_train(config, "epochs=2", env_extra={"RAY_ADDRESS": ray_head["address"]})
    assert code == 0, stderr[-6000:]
    assert summary["counts"]["resumed_from"] == "step_0000005"
    resumed = metrics_by_step(out)
    assert max(resumed) == 10 and resumed[6]["loss"] != pytest.approx(LN2, abs=1e-4)
    assert resumed[6]["reward_margin"] != pytest.approx(0.0, abs=1e-6)


def test_dpo_learns_a_preference_rule_and_exports(ray_head, small_model_dir, tmp_path):
    """ZeRO-2 with a whole frozen copy as reference; eval pairs are held out by the split."""
    data = write_preferences(tmp_path / "prefs.jsonl", count=96)
    config = dpo_config(tmp_path, data, eval_fraction=0.2, epochs=1, learning_rate=3e-4, log_every_steps=5)
    code, summary, stderr = run_train(config, env_extra={"RAY_ADDRESS": ray_head["address"]})
    assert code == 0, stderr[-6000:]
    out = tmp_path / "out"
    counts = summary["counts"]["data"]
    assert counts["train_pairs"] + counts["eval_pairs"] == 96 and counts["eval_pairs"] > 5
    steps = metrics_by_step(out)
    final = steps[max(steps)]
    assert final["eval_reward_accuracy"] >= 0.9, final
    assert final["eval_reward_margin"] > 0 and final["rewards_chosen"] > final["rewards_rejected"]
    export = json.loads((out / "export" / "ultrachat_export.json").read_text())
    assert export["method"] == "dpo" and export["steps"] == max(steps)


def test_sft_data_is_refused_naming_its_file_and_line(ray_head, tmp_path):
    data = write_data(tmp_path / "dialogues.jsonl", count=8)
    code, summary, stderr = run_train(dpo_config(tmp_path, data), env_extra={"RAY_ADDRESS": ray_head["address"]})
    assert code == 2 and summary["status"] == "bad_input", stderr[-3000:]
    assert "method is dpo" in summary["error"] and "dialogues.jsonl:" in summary["error"], summary["error"]
    assert "set method: sft" in summary["error"]

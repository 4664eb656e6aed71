"""The train job end to end on the session's Ray head: Ray Data preparation, TorchTrainer with real
DeepSpeed (ZeRO-2 and ZeRO-3, gloo, fp32), checkpoints, a worker killed midway, re-runs, the export
loaded by transformers and generating (served on vLLM: test_serving_models), and bad inputs refused
before any worker."""

import json
import shutil
from pathlib import Path

import pytest

from processes import kill_from_outside, wait_for
from training_runs import finish_train, logged_steps, metrics_by_step, run_train, start_train, train_config, write_data

REPO = Path(__file__).resolve().parents[2]


def test_train_counts_checkpoints_and_metrics(trained):
    summary, out = trained["summary"], trained["out"]
    data = summary["counts"]["data"]
    assert data["records"] == 62 and data["skipped_malformed"] == 1 and data["skipped_status_not_kept"] == 1
    assert data["train_dialogues"] + data["eval_dialogues"] == 60 and data["eval_dialogues"] > 0
    total = summary["counts"]["total_steps"]
    steps = metrics_by_step(out)
    assert max(steps) == total
    last = steps[total]
    for key in ("loss", "learning_rate", "grad_norm", "tokens_per_s", "eval_loss"):
        assert isinstance(last[key], float) and last[key] == last[key], (key, last)  # present and not NaN
    assert last["learning_rate"] < steps[2]["learning_rate"]  # cosine decay
    kept = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    assert len(kept) == 2 and kept[-1] == f"step_{total:07d}"  # keep_checkpoints, final one included


def test_export_loads_in_transformers_and_generates(trained):
    """vLLM serving this export (and greedy text from it): test_serving_models, which deploys it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    export = trained["out"] / "export"
    manifest = json.loads((export / "ultrachat_export.json").read_text())
    assert manifest["format"] == "full_model" and manifest["steps"] == trained["summary"]["counts"]["total_steps"]
    tokenizer = AutoTokenizer.from_pretrained(export)
    assert "{% generation %}" in tokenizer.chat_template  # the template training used travels with the model
    model = AutoModelForCausalLM.from_pretrained(export)
    assert sum(p.numel() for p in model.parameters()) > 1_000_000
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "How can I start running?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        reply = model.generate(**prompt, max_new_tokens=16, do_sample=False)
    assert tokenizer.decode(reply[0][prompt["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_rerun_of_a_finished_run_trains_nothing(trained, ray_head):
    code, summary, stderr = run_train(trained["config"], env_extra={"RAY_ADDRESS": ray_head["address"]})
    assert code == 0, stderr[-4000:]
    assert summary["counts"]["already_exported"] is True


def test_checkpoints_of_another_world_size_are_refused(trained, ray_head):
    code, summary, _ = run_train(trained["config"], "num_workers=1", "cpus_per_worker=1",
                                 env_extra={"RAY_ADDRESS": ray_head["address"]})
    assert code == 2 and summary["status"] == "bad_input"
    assert "num_workers: 2 -> 1" in summary["error"] and "new folder" in summary["error"]


def test_killed_worker_resumes_at_the_right_step_and_data_position(ray_head, small_model_dir, tmp_path):
    """ZeRO-3 (partitioned loading, consolidated export): a Ray Train worker SIGKILLed from outside after
    step 4 (checkpoint at 3). Ray Train restarts the workers, they resume from the latest checkpoint at
    the same data position: every step run twice gives the same loss and learning rate both times
    (a wrong data position or optimizer state would change them), and every step is logged."""
    data = write_data(tmp_path / "data.jsonl", count=56)  # 7 steps: resume at 4, 3 after it
    env = {"RAY_ADDRESS": ray_head["address"]}
    faulted_dir = tmp_path / "faulted"
    faulted_dir.mkdir()
    config = train_config(faulted_dir, data, zero_stage=3, log_every_steps=1, checkpoint_every_steps=3,
                          max_failures=1)
    process = start_train(config, env_extra=env)
    wait_for(lambda: logged_steps(faulted_dir / "out") >= 4, process, "step 4")
    killed = kill_from_outside("RayTrainWorker")
    before_kill = logged_steps(faulted_dir / "out")
    code, faulted, stderr = finish_train(process)
    assert code == 0, stderr[-6000:]
    assert killed, "no Ray Train worker process was found to kill"
    assert faulted["counts"]["resumed_from"] is None  # resumed by Ray Train inside the run, not by a re-run
    entries = [json.loads(line) for line in (faulted_dir / "out" / "metrics.jsonl").read_text().splitlines()]
    first_run, after = entries[:before_kill], entries[before_kill:]
    total = faulted["counts"]["total_steps"]
    assert [e["step"] for e in first_run] == list(range(1, before_kill + 1))
    resumed_at = after[0]["step"]
    assert resumed_at % 3 == 1 and resumed_at <= before_kill, (resumed_at, before_kill)  # the step after a checkpoint
    assert [e["step"] for e in after] == list(range(resumed_at, total + 1)) and total >= 6
    for again in after[:before_kill - resumed_at + 1]:  # the steps that ran twice
        once = first_run[again["step"] - 1]
        assert again["loss"] == pytest.approx(once["loss"], rel=1e-4), again["step"]
        assert again["learning_rate"] == pytest.approx(once["learning_rate"]), again["step"]

    # Re-running the finished job after its export vanished: it resumes from the final checkpoint and
    # only exports again.
    shutil.rmtree(faulted_dir / "out" / "export")
    code, rerun, stderr = run_train(faulted_dir / "train.yaml", env_extra=env)
    assert code == 0, stderr[-6000:]
    assert rerun["counts"]["resumed_from"] == f"step_{total:07d}"
    assert json.loads((faulted_dir / "out" / "export" / "ultrachat_export.json").read_text())["steps"] == total


def test_bad_inputs_fail_before_any_worker(ray_head, small_model_dir, tmp_path):
    env = {"RAY_ADDRESS": ray_head["address"]}
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    code, summary, _ = run_train(train_config(tmp_path, empty), env_extra=env)
    assert code == 2 and "hold no records" in summary["error"], summary

    long_questions = tmp_path / "long.jsonl"
    long_questions.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": "Please explain this in detail: " + "why the sky is blue " * 20},
        {"role": "assistant", "content": "Because of scattering."}]}) + "\n" for _ in range(4)))
    code, summary, _ = run_train(train_config(tmp_path, long_questions), "max_seq_len=16", "output_dir=" + str(tmp_path / "o2"),
                                 env_extra=env)
    assert code == 2 and "every example is too long" in summary["error"] and "max_seq_len" in summary["error"]

    plain = tmp_path / "no-template-model"
    shutil.copytree(small_model_dir, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer_config = json.loads((plain / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    data = write_data(tmp_path / "data.jsonl", count=10)
    code, summary, _ = run_train(train_config(tmp_path, data), f"model={plain}", "chat_template=model",
                                 "output_dir=" + str(tmp_path / "o3"), env_extra=env)
    assert code == 2 and "has no chat template" in summary["error"] and "chat_template: ultrachat" in summary["error"]

    code, summary, stderr = run_train(train_config(tmp_path, data), f"model={tmp_path / 'missing-model'}", env_extra=env)
    assert code != 0 and "does not exist" in (summary or {}).get("error", stderr), stderr[-2000:]
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_lora_trains_adapters_and_exports_a_merged_model(ray_head, small_model_dir, tmp_path):
    """Also with gradient checkpointing (frozen embeddings need an input grad path) and TensorBoard."""
    from safetensors.torch import load_file

    data = write_data(tmp_path / "data.jsonl", count=24)
    config = train_config(tmp_path, data, lora={"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                          learning_rate=5e-3, gradient_checkpointing=True, tensorboard=True)
    code, summary, stderr = run_train(config, env_extra={"RAY_ADDRESS": ray_head["address"]})
    assert code == 0, stderr[-6000:]
    export = tmp_path / "out" / "export"
    assert json.loads((export / "ultrachat_export.json").read_text())["format"] == "full_model"
    merged, base = load_file(export / "model.safetensors"), load_file(small_model_dir / "model.safetensors")
    assert not any("lora" in name for name in merged) and set(merged) == set(base)
    changed = {name for name in base if not (merged[name] == base[name]).all()}
    # Only the adapted projections moved (merged into them); everything else is the base model.
    assert changed and all(name.endswith(("q_proj.weight", "v_proj.weight")) for name in changed), changed
    assert list((tmp_path / "out" / "tensorboard").glob("events.out.tfevents.*"))

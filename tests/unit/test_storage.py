"""storage.py and the code that reads or writes through it, against a real S3 API (a moto server on
127.0.0.1, configured only through the standard AWS environment variables) and file:// URIs; and
the config errors for locations that cannot work."""

import json
import os
import posixpath
from pathlib import Path

import pyarrow as pa
import pytest

from ultrachat import storage
from ultrachat.config import load_config
from ultrachat.errors import ConfigError, InputError, ModelSourceError

# s3_env (tests/conftest.py): a moto S3 server on 127.0.0.1 per module, yielding its bucket's URI.


@pytest.fixture(params=["s3", "file"])
def base(request, tmp_path):
    """A fresh folder URI on each kind of store."""
    if request.param == "s3":
        return f"{request.getfixturevalue('s3_env')}/{tmp_path.name}"
    return f"file://{tmp_path}/store"


# ------------------------------------------------------------------------------------ config errors


@pytest.mark.parametrize("path", ["data/x.jsonl", "/abs/x", "s3://bucket/in/x.jsonl", "gs://bucket/x", "file:///tmp/x",
                                  "hf://datasets/HuggingFaceH4/ultrachat_200k/data/train_sft-*.parquet"])
def test_check_path_accepts_local_paths_and_uris(path):
    assert storage.check_path(path) == path


@pytest.mark.parametrize("path, words", [
    ("ftp://host/x", ["unsupported scheme 'ftp://'", "s3://"]),
    ("s3://bucket/x?endpoint_override=localhost:9000", ["URI options", "AWS_ENDPOINT_URL_S3"]),
    ("s3:///x", ["names no bucket", "s3://bucket/prefix"]),
    ("file://relative/x", ["not an absolute file URI", "file:///absolute/path"]),
    ("hf://HuggingFaceH4/ultrachat_200k", ["not a Hub dataset path", "hf://datasets/OWNER/NAME"]),
])
def test_check_path_refuses_what_cannot_work(path, words):
    with pytest.raises(ValueError) as info:
        storage.check_path(path)
    assert all(w in str(info.value) for w in words), str(info.value)


def _config_problems(tmp_path, job: str, text: str, overrides=()) -> str:
    path = tmp_path / f"{job}.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(job, path, list(overrides))
    return str(info.value)


GENERATE = """output_dir: {out}
openings: {{path: {openings}}}
user: {{chat: {{backend: openai, base_url: http://127.0.0.1:9/v1, model: m, api_key_env: K}}}}
assistant: {{chat: {{backend: openai, base_url: http://127.0.0.1:9/v1, model: m, api_key_env: K}}}}
"""


def test_config_names_the_key_of_a_bad_input_uri(tmp_path):
    problems = _config_problems(tmp_path, "generate", GENERATE.format(out=tmp_path, openings="ftp://h/openings"))
    assert "openings.path" in problems and "unsupported scheme" in problems
    problems = _config_problems(
        tmp_path, "train", f"output_dir: {tmp_path}\nmodel: tiny:tiny\ndata: {{paths: [s3://b/ok, 's3://b/x?a=1']}}\n")
    assert "data.paths" in problems and "URI options" in problems


def test_serve_keys_file_must_be_local(tmp_path):
    text = f"output_dir: {tmp_path}\nmodels: [{{name: m, source: 'tiny:tiny'}}]\nauth: {{keys_file: s3://b/keys}}\n"
    problems = _config_problems(tmp_path, "serve", text)
    assert "auth.keys_file" in problems and "Kubernetes Secret" in problems and "keys_env" in problems


def test_config_accepts_uris_for_inputs_and_outputs(tmp_path):
    path = tmp_path / "generate.yaml"
    path.write_text(GENERATE.format(out="s3://b/runs/gen", openings="gs://b/in/openings.jsonl"))
    config = load_config("generate", path)
    assert config.openings.path == "gs://b/in/openings.jsonl"
    path = tmp_path / "serve.yaml"
    path.write_text(f"output_dir: {tmp_path}\nmodels: [{{name: m, source: 's3://b/run/export', "
                    f"chat_template: 's3://b/t.jinja'}}]\nauth: {{keys_file: /etc/keys/api}}\n")
    assert load_config("serve", path).models[0].chat_template == "s3://b/t.jinja"


# ------------------------------------------------------------------------------------ storage basics


def test_text_round_trip_exists_and_remove(base):
    path = storage.join(base, "a", "b", "note.txt")
    assert not storage.exists(path)
    with pytest.raises(FileNotFoundError):
        storage.read_text(path)
    assert storage.write_text(path, "héllo\n") == path
    assert storage.exists(path) and storage.read_text(path) == "héllo\n"
    storage.remove_dir(storage.join(base, "a"))
    assert not storage.exists(path)
    storage.remove_dir(storage.join(base, "a"))  # missing is fine


def test_local_path():
    assert storage.local_path("out/x") == "out/x"
    assert storage.local_path("file:///tmp/x") == "/tmp/x"
    assert storage.local_path("s3://b/x") is None


def test_writing_to_a_missing_bucket_says_what_to_check(s3_env):
    with pytest.raises(OSError) as info:
        storage.write_text("s3://no-such-bucket-uc/x/resolved_config.yaml", "x")
    message = str(info.value)
    assert "no-such-bucket-uc" in message and "create the bucket" in message and "AWS_ENDPOINT_URL_S3" in message


def test_upload_and_download_dir_replace_the_folder(base, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(b"\0" * 1000)
    (src / "manifest.json").write_text('{"done": true}')
    dest = storage.join(base, "export")
    storage.write_text(storage.join(dest, "stale.txt"), "old")
    storage.upload_dir(str(src), dest, last=("manifest.json",))
    assert not storage.exists(storage.join(dest, "stale.txt"))
    assert storage.read_text(storage.join(dest, "manifest.json")) == '{"done": true}'
    storage.download_dir(dest, str(tmp_path / "back"))
    assert sorted(p.relative_to(tmp_path / "back").as_posix() for p in (tmp_path / "back").rglob("*") if p.is_file()) \
        == ["config.json", "manifest.json", "sub/w.bin"]
    assert (tmp_path / "back" / "sub" / "w.bin").read_bytes() == b"\0" * 1000


# ------------------------------------------------------------------------------------ callers


def test_input_files_under_a_uri_folder(base):
    storage.write_text(storage.join(base, "in", "b.jsonl"), '{"text": "b"}\n')
    storage.write_text(storage.join(base, "in", "deep", "a.jsonl"), '{"text": "a"}\n')
    storage.write_text(storage.join(base, "in", ".hidden.jsonl"), "x\n")
    storage.write_text(storage.join(base, "in", "notes.md"), "x\n")
    from ultrachat.inputs import list_input_files

    files = list_input_files(storage.join(base, "in"), "auto", "openings.path")
    assert files == [storage.join(base, "in", "b.jsonl"), storage.join(base, "in", "deep", "a.jsonl")]
    assert all(storage.read_text(f).startswith('{"text"') for f in files)  # usable as given
    with pytest.raises(InputError, match=r"openings.path: .*missing.* does not exist"):
        list_input_files(storage.join(base, "missing"), "auto", "openings.path")


def test_unreachable_store_is_an_input_error_naming_the_key(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    from ultrachat.inputs import list_input_files

    with pytest.raises(InputError) as info:
        list_input_files("s3://bucket/in", "auto", "construction.III.corpus.path")
    assert "construction.III.corpus.path" in str(info.value) and "AWS_ENDPOINT_URL_S3" in str(info.value)


def test_dialogue_shards_on_a_uri(base):
    from ultrachat.shards import write_atomic, drop_superseded_failures, read_column, shard_paths

    schema = pa.schema([("id", pa.string()), ("status", pa.string()), ("started_at", pa.float64())])
    out = storage.join(base, "dialogues")
    filesystem, root = storage.filesystem_for(out)
    filesystem.create_dir(root, recursive=True)
    write_atomic(filesystem, posixpath.join(root, "part-1.parquet"),
                  pa.table({"id": ["a", "b"], "status": ["kept", "failed:timeout"], "started_at": [1.0, 1.0]}, schema))
    write_atomic(filesystem, posixpath.join(root, "part-2.parquet"),
                  pa.table({"id": ["b"], "status": ["kept"], "started_at": [2.0]}, schema))
    assert [posixpath.basename(p) for p in shard_paths(out)] == ["part-1.parquet", "part-2.parquet"]
    assert drop_superseded_failures(out, {"b"}, schema) == 1
    table = read_column(out, ["id", "status"], schema)
    assert sorted(zip(table.column("id").to_pylist(), table.column("status").to_pylist())) == \
        [("a", "kept"), ("b", "kept")]
    if storage.local_path(out):  # locally a shard is renamed into place: no temp file stays behind
        assert sorted(os.listdir(storage.local_path(out))) == ["part-1.parquet", "part-2.parquet"]


def test_export_publish_and_manifest(base, tmp_path):
    from ultrachat.training.export import EXPORT_MANIFEST, _publish, read_export_manifest

    src = tmp_path / "export-src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "model.safetensors").write_bytes(b"w")
    (src / EXPORT_MANIFEST).write_text(json.dumps({"steps": 3}))
    dest = storage.join(base, "run", "export")
    assert read_export_manifest(dest) is None
    _publish(str(src), dest)
    assert read_export_manifest(dest) == {"steps": 3}
    (src / EXPORT_MANIFEST).write_text(json.dumps({"steps": 6}))
    _publish(str(src), dest)  # replaces the earlier export
    assert read_export_manifest(dest) == {"steps": 6}
    if storage.local_path(dest):
        assert not Path(f"{storage.local_path(dest)}.incoming").exists()


def test_checkpoint_signature_on_a_uri(base):
    from ultrachat.training import checkpoints

    out = storage.join(base, "train")
    assert checkpoints.check_resumable(out, {"model": "a", "num_workers": 1}) == []
    storage.write_text(storage.join(out, "checkpoints", "step_0000003", "trainer_state.json"), "{}")
    assert checkpoints.existing_checkpoints(out) == ["step_0000003"]
    assert checkpoints.check_resumable(out, {"model": "a", "num_workers": 1}) == ["step_0000003"]
    with pytest.raises(InputError, match=r"num_workers: 1 -> 2"):
        checkpoints.check_resumable(out, {"model": "a", "num_workers": 2})


def test_served_model_copied_from_a_uri_and_recopied_after_a_new_export(base, tmp_path, monkeypatch):
    from ultrachat.models.files import chat_template_for, local_model_dir

    monkeypatch.setenv("ULTRACHAT_CACHE", str(tmp_path / "cache"))
    source = storage.join(base, "run", "export")
    with pytest.raises(ModelSourceError, match="models.0.source: .* holds no config.json"):
        local_model_dir(source, "models.0.source")
    storage.write_text(storage.join(source, "tokenizer.json"), "{}")
    storage.write_text(storage.join(source, "config.json"), '{"v": 1}')
    first = local_model_dir(source, "models.0.source")
    assert json.loads(Path(first, "config.json").read_text()) == {"v": 1} and Path(first, "tokenizer.json").is_file()
    assert local_model_dir(source, "models.0.source") == first  # copied once
    storage.write_text(storage.join(source, "config.json"), '{"v": 2, "longer": true}')
    second = local_model_dir(source, "models.0.source")
    assert second != first and json.loads(Path(second, "config.json").read_text())["v"] == 2
    template = storage.join(base, "templates", "chat.jinja")
    storage.write_text(template, "{{ messages }}")
    assert chat_template_for(first, template, "models.0.chat_template") == "{{ messages }}"
    with pytest.raises(ModelSourceError, match="models.0.chat_template: chat template file"):
        chat_template_for(first, storage.join(base, "templates", "none.jinja"), "models.0.chat_template")


def test_glob_in_the_file_name_picks_files_of_one_folder(base):
    for name in ("train_sft-0.parquet", "train_sft-1.parquet", "test_sft-0.parquet", "train_gen-0.parquet"):
        storage.write_text(storage.join(base, "data", name), "x")
    from ultrachat.inputs import list_input_files

    files = list_input_files(storage.join(base, "data", "train_sft-*.parquet"), "auto", "data.paths[0]")
    assert files == [storage.join(base, "data", f"train_sft-{i}.parquet") for i in (0, 1)]
    with pytest.raises(InputError, match=r"data.paths\[0\]: no .* files in .*data matching dev-\*"):
        list_input_files(storage.join(base, "data", "dev-*.parquet"), "auto", "data.paths[0]")


def test_hub_paths_offline_are_an_input_error_that_says_how_to_copy(monkeypatch):
    """No internet here: the Hub client is asked for real and refuses, and the error says what to do."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from ultrachat.inputs import list_input_files

    with pytest.raises(InputError) as info:
        list_input_files("hf://datasets/HuggingFaceH4/ultrachat_200k/data/train_sft-*.parquet", "auto", "data.paths[0]")
    text = str(info.value)
    assert text.startswith("data.paths[0]: cannot read hf://datasets/HuggingFaceH4/ultrachat_200k/data")
    assert "HF_HUB_OFFLINE" in text and "copy the dataset's Parquet files" in text

"""The config system: every shipped config validates; every bad input gets a precise, complete error."""

import os
from pathlib import Path

import pytest
import yaml

from ultrachat.config import JOB_SCHEMAS, load_config, parse_override
from ultrachat.config.schema import schema_for_file
from ultrachat.errors import ConfigError
from ultrachat.job import RESOLVED_CONFIG_NAME, save_resolved

REPO = Path(__file__).resolve().parents[2]
ALL_CONFIGS = sorted((REPO / "configs").glob("*/*.yaml"))

GOOD = """\
output_dir: {out}
openings:
  path: openings.jsonl
user:
  chat:
    backend: vllm
    model: tiny:small
assistant:
  chat:
    backend: openai
    base_url: http://127.0.0.1:9/v1
    model: gpt-test
"""


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(job, path, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(job, path, list(overrides))
    return info.value.problems


def test_every_job_has_a_config_folder_an_entrypoint_and_a_local_config():
    for job in JOB_SCHEMAS:
        assert (REPO / "jobs" / f"{job}.py").is_file(), job
        assert (REPO / "configs" / job / "local.yaml").is_file(), job


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_validates_and_opens_with_its_command(path):
    schema = schema_for_file(path)
    assert schema is not None, f"{path} is not under configs/<job>/"
    config = load_config(path.parent.name, path)
    assert isinstance(config, schema)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and path.parent.name in first and str(path.relative_to(REPO)) in first


def test_good_config_loads_with_defaults(tmp_path):
    config = load_config("generate", write(tmp_path, GOOD.format(out=tmp_path / "o")))
    assert config.user.chat.backend == "vllm" and config.assistant.chat.backend == "openai"
    assert config.assistant.chat.api_key_env == "OPENAI_API_KEY"
    assert config.ray.namespace == "ultrachat" and config.log_level == "INFO"


def test_the_actors_get_the_generate_stage_settings_without_the_job_level_ones(tmp_path):
    from ultrachat.config.generation import GenerateStage
    from ultrachat.generation.run import _stage

    config = load_config("generate", write(tmp_path, GOOD.format(out=tmp_path / "o")), ["lease.expiry_s=60"])
    stage_json = _stage(config, {}, {}).handler_factory.stage_json
    assert GenerateStage.model_validate_json(stage_json) == GenerateStage.model_validate(
        config.model_dump(include=set(GenerateStage.model_fields)))
    assert '"lease"' not in stage_json and '"output_dir"' not in stage_json


def test_overrides_parse_yaml_values_and_apply(tmp_path):
    assert parse_override("a.b=3") == (("a", "b"), 3)
    assert parse_override("a.0.c=true") == (("a", 0, "c"), True)
    assert parse_override("x=[1, 2]") == (("x",), [1, 2])
    assert parse_override("x=hello world") == (("x",), "hello world")
    assert parse_override("x=a=b") == (("x",), "a=b")
    config = load_config("generate", write(tmp_path, GOOD.format(out="o")),
                         ["output_dir=/tmp/elsewhere", "user.sampling.temperature=0.2", "ray.local_num_cpus=3"])
    assert config.output_dir == "/tmp/elsewhere"
    assert config.user.sampling.temperature == 0.2 and config.ray.local_num_cpus == 3


def test_override_into_a_list_by_index(tmp_path):
    path = REPO / "configs" / "serve" / "local.yaml"
    config = load_config("serve", path, ["models.0.name=renamed"])
    assert config.models[0].name == "renamed"
    assert "out of range" in " ".join(problems("serve", path, ["models.5.name=x"]))


def test_all_problems_reported_at_once_with_lines_and_suggestions(tmp_path):
    path = write(tmp_path, """\
output_dir: 5
run_nme: x
ray:
  local_num_cpus: two
openings:
  path: a.jsonl
user:
  chat:
    backend: vlm
    model: tiny:small
assistant:
  chat:
    backend: openai
    base_url: http://127.0.0.1:9/v1
    model: m
  sampling: {temperature: -1, top_pp: 0.9}
""")
    found = problems("generate", path, ["useer.x=1", "not-an-override"])
    text = "\n".join(found)
    assert len(found) == 8, text
    assert "line 1: key 'output_dir'" in text
    assert "line 2: unknown key 'run_nme': did you mean 'run_name'?" in text
    assert "line 4: key 'ray.local_num_cpus'" in text and "integer" in text
    assert "line 9: key 'user.chat.backend': 'vlm' is not a valid choice" in text and "'vllm'" in text
    assert "line 16: unknown key 'assistant.sampling.top_pp': did you mean 'top_p'?" in text
    assert "line 16: key 'assistant.sampling.temperature'" in text
    assert "override 'useer.x=1': unknown key 'useer': did you mean 'user'?" in text
    assert "override 'not-an-override': expected the form key.path=value" in text


def test_unknown_key_inside_a_union_member_suggests_that_members_keys(tmp_path):
    text = GOOD.format(out="o").replace("    model: gpt-test\n", "    model: gpt-test\n    max_concurency: 4\n")
    (problem,) = problems("generate", write(tmp_path, text))
    assert "unknown key 'assistant.chat.max_concurency': did you mean 'max_concurrency'?" in problem
    assert problem.startswith("line 13:")


def test_missing_required_key_is_named(tmp_path):
    text = GOOD.format(out="o").replace("output_dir: o\n", "")
    (problem,) = problems("generate", write(tmp_path, text))
    assert "missing required key 'output_dir'" in problem


def test_dialogues_without_openings_or_construction_is_explained(tmp_path):
    text = GOOD.format(out="o").replace("openings:\n  path: openings.jsonl\n", "")
    (problem,) = problems("generate", write(tmp_path, text))
    assert "the dialogues need opening lines; fix: give 'openings.path' or a 'construction' section" in problem


def test_secrets_are_refused_and_never_echoed(tmp_path):
    secret = "sk-live-0123456789abcdef"
    text = GOOD.format(out="o").replace("    model: gpt-test\n", f"    model: gpt-test\n    api_key: {secret}\n")
    found = problems("generate", write(tmp_path, text), [f"assistant.chat.api_key_env={secret}",
                                                         f"user.chat.api_key={secret}"])
    joined = "\n".join(found)
    assert secret not in joined
    assert "Secrets never go in config files" in joined
    assert "unknown key 'assistant.chat.api_key': did you mean 'api_key_env'?" in joined
    assert "override 'user.chat.api_key=<hidden>'" in joined


def test_ordinary_keys_that_mention_tokens_are_not_treated_as_secrets(tmp_path):
    (problem,) = problems("generate", write(tmp_path, GOOD.format(out="o")), ["user.sampling.max_tokens=zero"])
    assert "override 'user.sampling.max_tokens=zero'" in problem and "Secrets" not in problem


def test_missing_file_directory_and_empty_file(tmp_path):
    (problem,) = problems("generate", tmp_path / "nope.yaml")
    assert "does not exist" in problem and "--config" in problem
    (problem,) = problems("generate", tmp_path)
    assert "is a directory" in problem
    found = problems("generate", write(tmp_path, ""))
    assert any("missing required key 'output_dir'" in p for p in found)


def test_malformed_yaml_names_line_and_column(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config("generate", write(tmp_path, "output_dir: o\nuser:\n  chat: [unclosed\n"))
    message = str(info.value)
    assert "c.yaml" in message and "malformed YAML" in message and "line 4" in message


def test_top_level_must_be_a_mapping(tmp_path):
    (problem,) = problems("generate", write(tmp_path, "- a\n- b\n"))
    assert "top level must be a mapping" in problem and "list" in problem


def test_duplicate_keys_are_errors_not_silently_last_wins(tmp_path):
    (problem,) = problems("generate", write(tmp_path, "output_dir: a\noutput_dir: b\n"))
    assert "line 2, key 'output_dir': given twice" in problem


def test_model_path_that_does_not_exist(tmp_path):
    text = GOOD.format(out="o").replace("tiny:small", str(tmp_path / "no-model"))
    (problem,) = problems("generate", write(tmp_path, text))
    assert problem.startswith("line 7: key 'user.chat.model'")
    assert "does not exist" in problem and "local:smollm2-135m-instruct" in problem and "tiny:small" in problem


def test_model_path_that_is_not_a_hugging_face_dir(tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.bin").write_text("x")
    text = GOOD.format(out="o").replace("tiny:small", str(tmp_path / "weights"))
    (problem,) = problems("generate", write(tmp_path, text))
    assert "not a Hugging Face model directory: no config.json" in problem and "model.bin" in problem


@pytest.mark.parametrize("ref, expected", [
    ("tiny:huge", "unknown tiny model"),
    ("s3://bucket/model", "not supported as a model source"),
    ("not a model!", "neither an existing model directory"),
])
def test_bad_model_references(tmp_path, ref, expected):
    (problem,) = problems("generate", write(tmp_path, GOOD.format(out="o").replace("tiny:small", f"'{ref}'")))
    assert expected in problem


def test_hub_ids_pass_validation_but_resolving_offline_names_the_key(monkeypatch, tmp_path):
    from ultrachat.errors import ModelSourceError
    from ultrachat.models.source import resolve_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    text = GOOD.format(out="o").replace("tiny:small", "meta-llama/Llama-3.1-8B-Instruct")
    config = load_config("generate", write(tmp_path, text))
    with pytest.raises(ModelSourceError, match=r"user\.chat\.model: .*HF_HUB_OFFLINE=1"):
        resolve_model(config.user.chat.model, key="user.chat.model")


def test_resolved_config_is_saved_beside_the_output_and_reloads(tmp_path):
    path = write(tmp_path, GOOD.format(out=tmp_path / "run"))
    config = load_config("generate", path, ["user.sampling.max_tokens=99"])
    saved = Path(save_resolved(config, "generate", str(path)))
    assert saved == tmp_path / "run" / RESOLVED_CONFIG_NAME
    assert saved.read_text().startswith("# resolved generate config")
    assert load_config("generate", saved) == config
    assert yaml.safe_load(saved.read_text())["user"]["sampling"]["max_tokens"] == 99


def test_resolved_config_goes_to_uris_too(tmp_path):
    config = load_config("generate", write(tmp_path, GOOD.format(out=f"file://{tmp_path}/remote")))
    save_resolved(config, "generate", "c.yaml")
    assert (tmp_path / "remote" / RESOLVED_CONFIG_NAME).is_file()


def test_cwd_independent_error_mentions_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (problem,) = problems("train", "configs/train/local.yaml")
    assert os.fspath(tmp_path) in problem

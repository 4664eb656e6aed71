"""The pipeline config: one file drives all stages, and the stages are wired to each other's outputs."""

import os
import re
from pathlib import Path

import pytest

from ultrachat.config import load_config
from ultrachat.config.schema import EvaluateConfig, GenerateConfig, ServeConfig, StatsConfig, TrainConfig
from ultrachat.errors import ConfigError
from ultrachat.pipeline import stage_configs

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "configs" / "pipeline" / "local.yaml"


def load(*overrides):
    return load_config("pipeline", LOCAL, list(overrides))


def test_each_stage_gets_its_own_job_config_linked_to_the_previous_stage(tmp_path):
    config = load(f"output_dir={tmp_path}/run", "run_name=demo")
    configs = stage_configs(config)
    generate, stats, train, serve = configs["generate"], configs["stats"], configs["train"], configs["serve"]
    assert isinstance(generate, GenerateConfig) and isinstance(train, TrainConfig) and isinstance(serve, ServeConfig)
    assert isinstance(stats, StatsConfig) and isinstance(configs["evaluate"], EvaluateConfig)
    stages = ("generate", "stats", "train", "serve", "evaluate")
    assert [c.output_dir for c in configs.values()] == [f"{tmp_path}/run/{s}" for s in stages]
    assert [c.run_name for c in configs.values()] == [f"demo-{s}" for s in stages]
    assert train.data.paths == [f"{tmp_path}/run/generate/dialogues"]
    # Statistics of the generate stage's dialogues, in the tokens of the model that wrote them; no judge.
    assert stats.input.path == f"{tmp_path}/run/generate/dialogues" and stats.judge is None
    assert stats.tokenizer == config.generate.assistant.chat.model
    # The served model is the train stage's export, by an absolute path the replicas can open.
    assert serve.models[0].source == f"{tmp_path}/run/train/export" and serve.models[0].name == "ultrallama-smollm2"
    assert serve.detach is False and generate.ray == config.ray == train.ray
    # The evaluation's endpoints without base_url are the served app (no key: it has no auth), by model name.
    evaluate = configs["evaluate"]
    endpoints = [c.chat for c in evaluate.candidates] + [evaluate.judge.chat]
    assert {e.base_url for e in endpoints} == {"http://127.0.0.1:8100/v1"} and {e.api_key_env for e in endpoints} == {None}
    assert [c.chat.model for c in evaluate.candidates] == ["ultrallama-smollm2", "smollm2-base"]
    assert evaluate.pairs() == [("fine-tuned", "base")]
    # Settings given in the pipeline file reach the stage configs unchanged.
    assert train.num_workers == config.train.num_workers and generate.openings.limit == config.generate.openings.limit


def test_relative_output_dir_gives_an_absolute_export_and_explicit_links_win(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs = stage_configs(load("output_dir=rel", "train.data.paths=[/data/mine]",
                                 "serve.models.0.source=tiny:small"))
    assert configs["train"].data.paths == ["/data/mine"]
    assert configs["serve"].models[0].source == "tiny:small"
    configs = stage_configs(load("output_dir=rel"))
    assert configs["serve"].models[0].source == os.path.join(str(tmp_path), "rel", "train", "export")


def test_uri_outputs_stay_uris():
    configs = stage_configs(load("output_dir=s3://bucket/runs/a"))
    assert configs["train"].data.paths == ["s3://bucket/runs/a/generate/dialogues"]
    assert configs["serve"].models[0].source == "s3://bucket/runs/a/train/export"


def test_stages_run_in_pipeline_order_and_need_what_they_link_to():
    assert load("stages=[serve,generate,train]").stages == ["generate", "train", "serve"]
    assert load("stages=[serve]", "serve.models.0.source=tiny:small").stages == ["serve"]
    with pytest.raises(ConfigError, match="listed twice"):
        load("stages=[train,train]")
    with pytest.raises(ConfigError, match="training stage.s export, but neither train nor dpo is in stages"):
        load("stages=[generate,serve]")
    with pytest.raises(ConfigError, match="'generate', 'stats', 'train', 'preferences', 'dpo', 'serve' or 'evaluate' \\(got 'serv'\\)"):
        load("stages=[generate,serv]")
    assert "stats" not in stage_configs(load("stages=[generate,train]"))


def test_stats_stage_needs_a_tokenizer_when_the_assistant_is_an_api():
    api = ["generate.assistant.chat={backend: openai, base_url: 'http://127.0.0.1:9/v1', model: m}"]
    with pytest.raises(ConfigError, match="stats.tokenizer: not set"):
        load(*api)
    assert stage_configs(load(*api, "stats.tokenizer=tiny:tiny"))["stats"].tokenizer == "tiny:tiny"
    assert "stats" not in stage_configs(load(*api, "stages=[generate,train,serve]"))


def test_keep_serving_on_a_cluster_detaches_only_when_asked():
    assert stage_configs(load("serve.detach=true"))["serve"].detach is False
    assert stage_configs(load("serve.detach=true", "serve.keep_serving=true"))["serve"].detach is True


def test_unknown_keys_in_a_stage_section_name_the_nearest_key():
    with pytest.raises(ConfigError) as info:
        load("train.num_workrs=2", "serve.chat.promt=hi")
    text = str(info.value)
    assert "did you mean 'num_workers'" in text and "did you mean 'prompt'" in text


def test_evaluate_stage_needs_its_section_and_served_model_names():
    with pytest.raises(ConfigError, match="evaluate: the evaluate stage is listed but has no section"):
        load("evaluate=null")
    with pytest.raises(ConfigError, match=r"evaluate.judge.chat.model: 'nope' is not served by the serve stage"):
        load("evaluate.judge.chat.model=nope")
    with pytest.raises(ConfigError, match=r"evaluate.candidates\[0\].chat.base_url.*serve is not in stages"):
        load("stages=[generate,train,evaluate]")
    # An endpoint of its own needs neither the serve stage nor a served name.
    config = load("stages=[evaluate]", "evaluate.candidates.0.chat.base_url=http://127.0.0.1:9/v1",
                  "evaluate.candidates.1.chat.base_url=http://127.0.0.1:9/v1", "evaluate.judge.chat.base_url=http://127.0.0.1:9/v1")
    assert stage_configs(config)["evaluate"].judge.chat.base_url == "http://127.0.0.1:9/v1"


LOCAL_DPO = REPO / "configs" / "pipeline" / "local-dpo.yaml"


def test_dpo_pipeline_tunes_the_sft_export_on_the_preference_pairs_and_serves_both(tmp_path):
    from ultrachat.config.schema import PreferencesConfig
    from ultrachat.pipeline import dpo_config

    config = load_config("pipeline", LOCAL_DPO, [f"output_dir={tmp_path}/run", "run_name=d"])
    configs = stage_configs(config)
    assert list(configs) == ["generate", "train", "preferences", "dpo", "serve", "evaluate"]
    preferences, dpo = configs["preferences"], configs["dpo"]
    assert isinstance(preferences, PreferencesConfig) and isinstance(dpo, TrainConfig)
    # Prompts: the generated dialogues' openings; DPO: those pairs, from the SFT export (swapped in at run
    # time, once it exists; the SFT stage's base stands in for the upfront validation).
    assert preferences.prompts.paths == [f"{tmp_path}/run/generate/dialogues"] and preferences.prompts.cut == "first"
    assert dpo.method == "dpo" and dpo.data.paths == [f"{tmp_path}/run/preferences/pairs"]
    assert dpo.model == config.train.model and dpo.output_dir == f"{tmp_path}/run/dpo"
    (tmp_path / "run" / "train" / "export").mkdir(parents=True)
    (tmp_path / "run" / "train" / "export" / "config.json").write_text("{}")
    assert dpo_config(config, {"output_dir": "x"}).model == f"{tmp_path}/run/train/export"
    # Served: the last training stage's export by default, the SFT export by name; DPO judged against SFT.
    assert [m.source for m in configs["serve"].models] == [f"{tmp_path}/run/dpo/export",
                                                           f"{tmp_path}/run/train/export"]
    assert configs["evaluate"].pairs() == [("dpo", "sft")]


def test_dpo_pipeline_shares_the_demos_generate_and_train_sections():
    """local-dpo.yaml says its SFT half is the demo's: keep that true."""
    demo, dpo = load_config("pipeline", LOCAL), load_config("pipeline", LOCAL_DPO)
    assert dpo.generate == demo.generate and dpo.train == demo.train


@pytest.mark.parametrize("overrides, message", [
    (["stages=[generate,train,dpo,serve]"], "dpo.data.paths: unset means the preferences stage's pairs"),
    (["stages=[generate,preferences,dpo,serve]"], "dpo.model: unset means the train stage's export"),
    (["stages=[generate,train,serve]", "serve.models.1.source=stage:dpo"],
     "serve.models[1].source: stage:dpo names a stage not in stages"),
], ids=["dpo-without-pairs", "dpo-without-sft", "serve-names-missing-stage"])
def test_dpo_pipeline_links_to_missing_stages_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("pipeline", LOCAL_DPO, overrides)


def test_served_exports_get_a_revision_so_a_retrained_model_is_asked_again(tmp_path):
    """The evaluation caches answers by endpoint, model name and revision: a served export's revision is
    its manifest's hash, so the DPO model retrained under the same name is not answered from the cache."""
    from ultrachat.pipeline import _served_evaluation

    config = load_config("pipeline", LOCAL_DPO, [f"output_dir={tmp_path}/run"])
    configs = stage_configs(config)
    for stage, steps in (("dpo", 6), ("train", 3)):
        (tmp_path / "run" / stage / "export").mkdir(parents=True)
        (tmp_path / "run" / stage / "export" / "ultrachat_export.json").write_text(f'{{"steps": {steps}}}')
    first = _served_evaluation(configs["evaluate"], config, configs["serve"], "http://127.0.0.1:1/v1")
    revisions = {c.name: c.revision for c in first.candidates}
    assert revisions["dpo"].startswith("export-") and revisions["sft"].startswith("export-")
    assert revisions["dpo"] != revisions["sft"]
    (tmp_path / "run" / "dpo" / "export" / "ultrachat_export.json").write_text('{"steps": 12}')
    again = _served_evaluation(configs["evaluate"], config, configs["serve"], "http://127.0.0.1:1/v1")
    assert {c.name: c.revision for c in again.candidates} == {**revisions, "dpo": again.candidates[0].revision}
    assert again.candidates[0].revision != revisions["dpo"]
    # A served model that is not an export (the demo's base) keeps the empty revision.
    demo = load_config("pipeline", LOCAL, [f"output_dir={tmp_path}/demo"])
    demo_configs = stage_configs(demo)
    base = _served_evaluation(demo_configs["evaluate"], demo, demo_configs["serve"], "http://127.0.0.1:1/v1")
    assert {c.name: c.revision for c in base.candidates}["base"] == ""

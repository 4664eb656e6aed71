"""The serve config, the Serve app builder's options, the chat-template choice and the Serve/KubeRay
files in serve/: everything checkable without starting Ray."""

import importlib.util
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from ultrachat.config import load_config
from ultrachat.config.serving import ServeStage
from ultrachat.errors import ConfigError, ModelSourceError
from ultrachat.models.chat_template import ULTRACHAT_CHAT_TEMPLATE
from ultrachat.serving.app import model_deployment_options, stage_from_args
from ultrachat.models.files import chat_template_for, local_model_dir
from ultrachat.serving.run import usage_example

REPO = Path(__file__).resolve().parents[2]


def stage(**extra) -> ServeStage:
    return ServeStage.model_validate({"models": [{"name": "m", "source": "tiny:small"}], **extra})


def test_sources_accept_uris_and_refuse_unknown_schemes():
    ok = stage(models=[{"name": "a", "source": "s3://bucket/run/export"}, {"name": "b", "source": "org/model"},
                       {"name": "c", "source": "file:///mnt/x"}])
    assert [m.source for m in ok.models] == ["s3://bucket/run/export", "org/model", "file:///mnt/x"]
    # An absolute path may only exist where the replicas run (a mounted volume); relative ones must exist.
    assert stage(models=[{"name": "a", "source": "/mnt/shared/run/export"}]).models[0].source.startswith("/")
    for bad in ("ftp://host/model", "s3://", "./does/not/exist"):
        with pytest.raises(ValueError):
            stage(models=[{"name": "a", "source": bad}])


def test_every_problem_is_reported_with_its_key(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("output_dir: o\nmodels:\n  - {name: a, source: tiny:small, max_ongoing_request: 3}\n"
                    "  - {name: a, source: tiny:small, engine_kwargs: {dtype: float16}}\nauth: {keys_env: 'sk-123'}\n")
    with pytest.raises(ConfigError) as err:
        load_config("serve", path)
    text = str(err.value)
    assert "did you mean 'max_ongoing_requests'" in text
    assert "engine_kwargs repeats ['dtype']" in text
    assert "NAME of an environment variable" in text


def test_unique_names_and_port_ranges():
    with pytest.raises(ValueError, match="repeats"):
        stage(models=[{"name": "a", "source": "tiny:small"}, {"name": "a", "source": "tiny:tiny"}])
    with pytest.raises(ValueError, match="direct-ingress port range"):
        stage(ingress="direct", port=30010, direct_port=30000)
    assert stage(ingress="direct", direct_port=8100).local_ray_env()["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "8100"
    assert stage(ingress="proxy").local_ray_env() == {}


def test_deployment_options_map_resources_and_scaling():
    gpu = stage(models=[{"name": "big/13b", "source": "tiny:small", "accelerator": "gpu", "tensor_parallel_size": 2,
                         "num_cpus_per_replica": 4, "max_ongoing_requests": 50, "max_queued_requests": 10,
                         "autoscaling": {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 20}}])
    options = model_deployment_options(gpu.models[0])
    assert options["name"] == "model-big-13b"
    assert options["ray_actor_options"] == {"num_cpus": 4, "num_gpus": 2}
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 20}
    assert options["max_ongoing_requests"] == 100 and options["max_queued_requests"] == 10
    cpu = model_deployment_options(stage().models[0])
    assert cpu["num_replicas"] == 1 and cpu["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0}


def test_unknown_engine_kwargs_are_refused_before_deploying_with_the_nearest_name():
    from ultrachat.serving.app import build_application

    with pytest.raises(ValueError, match="'gpu_memory_utilisation' \\(did you mean 'gpu_memory_utilization'"):
        build_application(stage(models=[{"name": "m", "source": "tiny:small",
                                         "engine_kwargs": {"gpu_memory_utilisation": 0.5}}]))


def test_cpu_engines_run_eager_without_chunked_prefill_unless_the_config_says_otherwise():
    from ultrachat.llm.vllm_cpu import cpu_engine_kwargs

    assert cpu_engine_kwargs({}, "k") == {"enforce_eager": True, "enable_chunked_prefill": False}
    assert cpu_engine_kwargs({"enforce_eager": False, "max_num_seqs": 8}, "k") == {
        "enforce_eager": False, "max_num_seqs": 8, "enable_chunked_prefill": False}
    with pytest.raises(ValueError, match="models\\[m\\].engine_kwargs.enable_chunked_prefill: true"):
        cpu_engine_kwargs({"enable_chunked_prefill": True}, "models[m].engine_kwargs")


def test_app_args_inline_or_from_a_config_file():
    inline = stage_from_args({"models": [{"name": "m", "source": "tiny:small"}], "max_request_bytes": 4096})
    assert inline.max_request_bytes == 4096
    from_file = stage_from_args({"config": str(REPO / "configs/serve/local.yaml"), "overrides": ["models.0.name=x"]})
    assert from_file.models[0].name == "x" and from_file.ingress == "direct"
    with pytest.raises(ConfigError, match="unknown key 'modles'"):
        stage_from_args({"modles": []})
    with pytest.raises(ConfigError, match="only `overrides`"):
        stage_from_args({"config": "configs/serve/local.yaml", "port": 1})


def test_chat_template_choice(tmp_path):
    with_template, without = tmp_path / "with", tmp_path / "without"
    for folder in (with_template, without):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / "tokenizer_config.json").write_text("{}")
    (with_template / "chat_template.jinja").write_text("{{ messages }}")
    assert chat_template_for(str(with_template), "auto", "k") is None
    assert chat_template_for(str(without), "auto", "k") == ULTRACHAT_CHAT_TEMPLATE
    assert chat_template_for(str(with_template), "ultrachat", "k") == ULTRACHAT_CHAT_TEMPLATE
    with pytest.raises(ModelSourceError, match="has no chat template"):
        chat_template_for(str(without), "model", "models[m].chat_template")
    custom = tmp_path / "t.jinja"
    custom.write_text("custom")
    assert chat_template_for(str(without), str(custom), "k") == "custom"
    with pytest.raises(ModelSourceError, match="does not exist"):
        chat_template_for(str(without), str(tmp_path / "missing.jinja"), "k")


def test_uri_sources_are_copied_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ULTRACHAT_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "export"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "weights.bin").write_bytes(b"w")
    local = local_model_dir(model.as_uri(), "models[m].source")
    assert Path(local, "weights.bin").read_bytes() == b"w" and "remote" in local
    (model / "weights.bin").write_bytes(b"changed")
    assert local_model_dir(model.as_uri(), "models[m].source") == local  # cached, not copied again
    with pytest.raises(ModelSourceError, match="no config.json"):
        local_model_dir((tmp_path / "empty").as_uri(), "models[m].source")


def test_usage_example_names_the_key_variable_never_a_key():
    example = usage_example("http://127.0.0.1:8100/v1", stage(auth={"keys_env": "MY_KEYS"}))
    assert "Authorization: Bearer $MY_KEYS" in example and 'os.environ["MY_KEYS"]' in example
    assert "http://127.0.0.1:8100/v1/chat/completions" in example


# ------------------------------------------------------------------------- serve/ and KubeRay


def _serve_configs() -> dict[str, dict]:
    rayservice = yaml.safe_load((REPO / "serve" / "rayservice.yaml").read_text())
    return {"serve/config.yaml": yaml.safe_load((REPO / "serve" / "config.yaml").read_text()),
            "serve/rayservice.yaml serveConfigV2": yaml.safe_load(rayservice["spec"]["serveConfigV2"])}


@pytest.mark.parametrize("name", list(_serve_configs()))
def test_serve_configs_are_valid_serve_configs_whose_args_build(name):
    config = ServeDeploySchema.model_validate(_serve_configs()[name])
    (app,) = config.applications
    assert app.import_path in ("serve.app:build_app", "ultrachat.serving.app:build_app")
    built = stage_from_args(app.args)
    assert built.models


def test_serve_app_module_exposes_the_builder():
    spec = importlib.util.spec_from_file_location("serve_app_under_test", REPO / "serve" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from ultrachat.serving.app import build_app

    assert module.build_app is build_app


def test_rayservice_contract():
    rayservice = yaml.safe_load((REPO / "serve" / "rayservice.yaml").read_text())
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == "2.60.0" and cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (gpu,) = cluster["workerGroupSpecs"]
    container = gpu["template"]["spec"]["containers"][0]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    app = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]
    keys_file = app["args"]["auth"]["keys_file"]
    for group in (cluster["headGroupSpec"], gpu):  # wherever a router or model replica may run
        pod = group["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        mount = next(path for path in mounts if keys_file.startswith(path + "/"))
        volume = next(v for v in pod["volumes"] if v["name"] == mounts[mount])
        assert volume["secret"]["secretName"]
    assert all(m["accelerator"] == "gpu" for m in app["args"]["models"])

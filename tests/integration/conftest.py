"""Integration tests: a real Ray head on 127.0.0.1 (one per session), real vLLM CPU, real DeepSpeed."""

import pytest

from ray_heads import ray_head_on_loopback


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ray_head(model_cache):
    """The session's Ray head (GCS, raylet, dashboard, job agent) on 127.0.0.1, started with `ray start`
    after model_cache set ULTRACHAT_CACHE (so `tiny:` refs resolve on its workers). Jobs and drivers
    connect through RAY_ADDRESS; see ray_heads.ray_head_on_loopback for what it yields."""
    with ray_head_on_loopback() as head:
        yield head


@pytest.fixture
def ray_address(ray_head, monkeypatch):
    """RAY_ADDRESS pointing at the session's head, for code under test that calls init_ray."""
    monkeypatch.setenv("RAY_ADDRESS", ray_head["address"])
    return ray_head["address"]


@pytest.fixture(scope="session")
def trained(ray_head, small_model_dir, tmp_path_factory):
    """One ZeRO-2 train job with an eval split: the training tests check it, the serving tests serve its export."""
    from training_runs import run_train, train_config, write_data

    tmp = tmp_path_factory.mktemp("train-zero2")
    config = train_config(tmp, write_data(tmp / "data.jsonl"), eval_fraction=0.15)
    code, summary, stderr = run_train(config, env_extra={"RAY_ADDRESS": ray_head["address"]})
    assert code == 0, stderr[-6000:]
    return {"config": config, "out": tmp / "out", "summary": summary}

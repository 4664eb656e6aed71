"""The derived DeepSpeed config is one DeepSpeed itself accepts, with the batch math it checks."""

import pytest

from ultrachat.config.training import TrainStage
from ultrachat.training.ds_config import deepspeed_config, init_deepspeed_comm, resolve_precision, total_steps

BASE = {"model": "tiny:small", "data": {"paths": ["d"]}}


class DataParallelGroup:
    """DeepSpeed's documented model-parallel-unit hook: tells its config parser the data-parallel size."""

    def __init__(self, size: int):
        self.size = size

    def get_data_parallel_world_size(self) -> int:
        return self.size


@pytest.fixture(scope="module")
def one_rank_group(tmp_path_factory):
    """A real 1-rank gloo group (file rendezvous: no network), so DeepSpeed's config parser asks the
    model-parallel unit for the data-parallel size instead of assuming 1."""
    import os

    import torch.distributed as dist

    store = tmp_path_factory.mktemp("rendezvous") / "store"
    saved = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    init_deepspeed_comm(False, init_method=f"file://{store}", rank=0, world_size=1)
    from deepspeed.comm import comm

    # The CPU shm all-reduce op (a 75-100 s JIT build that ZeRO never calls) was neither built nor loaded.
    assert comm.cdb.shm_comm_op is None
    yield
    dist.destroy_process_group()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.parametrize("overrides, workers", [
    ({"zero_stage": 2, "global_batch_size": 8, "num_workers": 2}, 2),
    ({"zero_stage": 3, "offload_optimizer": True, "offload_params": True, "num_workers": 4,
      "global_batch_size": 64, "micro_batch_size": 4}, 4),
    ({"zero_stage": 3, "use_gpu": True, "num_workers": 128, "global_batch_size": 512}, 128),
])
def test_deepspeed_parses_the_config_with_the_same_batch_math(one_rank_group, overrides, workers):
    from deepspeed.runtime.config import DeepSpeedConfig

    stage = TrainStage.model_validate({**BASE, **overrides})
    config = deepspeed_config(stage, workers, total_steps(stage, 10_000))
    parsed = DeepSpeedConfig(config, mpu=DataParallelGroup(workers))
    assert parsed.train_batch_size == stage.global_batch_size
    assert parsed.gradient_accumulation_steps == stage.gradient_accumulation_steps
    assert parsed.zero_optimization_stage == stage.zero_stage
    assert parsed.bfloat16_config.enabled == (resolve_precision(stage) == "bf16")


def test_schedule_and_cpu_optimizer():
    stage = TrainStage.model_validate({**BASE, "global_batch_size": 8, "epochs": 3, "warmup_ratio": 0.1})
    assert total_steps(stage, 20) == 9  # ceil(20 / 8) = 3 steps per epoch
    config = deepspeed_config(stage, 2, total_steps(stage, 20))
    assert config["scheduler"]["params"]["total_num_steps"] == 10  # the decay reaches 0 after step 9
    assert config["scheduler"]["params"]["warmup_num_steps"] == 2  # round(0.9) = 1; DeepSpeed's least is 2
    assert config["optimizer"]["params"]["torch_adam"] is True and not config["bf16"]["enabled"]
    with pytest.raises(ValueError, match="differs from num_workers"):
        deepspeed_config(stage, 3, 9)


@pytest.mark.parametrize("steps, warmup_ratio, expected", [
    (6, 0.0, [1.0, 1.0, 0.905, 0.655, 0.345, 0.095]),  # no warmup: the full lr from step 1, then cosine
    (9, 0.3, [0.25, 0.5, 0.75, 0.95, 0.812, 0.611, 0.389, 0.188, 0.05]),  # 3 warmup steps
])
def test_lr_schedule_never_loses_the_first_or_last_update(steps, warmup_ratio, expected):
    """DeepSpeed's own WarmupCosineLR with our params, stepped once before training as the train loop
    does: the lr each optimizer step runs at, as a ratio of the configured one. None is 0."""
    import torch
    from deepspeed.runtime.lr_schedules import WarmupCosineLR

    from ultrachat.training.ds_config import warmup_cosine

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupCosineLR(optimizer, **warmup_cosine(steps, warmup_ratio))
    scheduler.step()
    ratios = []
    for _ in range(steps):
        ratios.append(round(optimizer.param_groups[0]["lr"], 3))
        optimizer.step()
        scheduler.step()
    assert ratios == expected


def test_schedule_splits_rows_evenly_and_keeps_a_short_last_step():
    from ultrachat.training.ds_config import schedule

    stage = TrainStage.model_validate({**BASE, "global_batch_size": 8, "num_workers": 2, "micro_batch_size": 2})
    plan = schedule(stage, 21)  # 10 rows per rank (1 waits), 5 micro-batches, accumulation 2
    assert (plan.rows_per_rank, plan.micro_batches_per_epoch, plan.steps_per_epoch) == (10, 5, 3)
    assert schedule(stage, 2).total_steps == 3  # one row per rank still makes one step per epoch

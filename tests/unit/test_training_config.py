"""The training config: the paper's defaults, derived accumulation, and every inconsistency at once."""

import pytest
from pydantic import ValidationError

from ultrachat.config.training import TrainStage

BASE = {"model": "tiny:small", "data": {"paths": ["d"]}}


def test_defaults_are_the_ultrallama_recipe_and_accumulation_is_derived():
    stage = TrainStage.model_validate({**BASE, "num_workers": 128, "micro_batch_size": 2})
    assert (stage.max_seq_len, stage.global_batch_size, stage.learning_rate, stage.warmup_ratio, stage.epochs,
            stage.max_grad_norm) == (2048, 512, 1e-5, 0.03, 3, 1.0)
    assert stage.gradient_accumulation_steps == 2  # 512 = 2 per device x 128 GPUs x 2 steps


def test_inconsistent_settings_are_reported_together_with_fixes():
    with pytest.raises(ValidationError) as info:
        TrainStage.model_validate({**BASE, "global_batch_size": 10, "micro_batch_size": 2, "num_workers": 2,
                                   "offload_params": True, "precision": "bf16"})
    text = str(info.value)
    assert "must be a multiple of micro_batch_size x num_workers (2 x 2 = 4); fix: use 8, 12" in text
    assert "offload_params needs zero_stage 3" in text and "precision bf16 needs use_gpu: true" in text

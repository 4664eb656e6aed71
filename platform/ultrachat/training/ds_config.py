"""The DeepSpeed config of a training run, derived from the typed TrainStage (never written by hand).

Batch sizes satisfy DeepSpeed's rule train_batch_size = micro x accumulation x world size, with the
global batch stated once in our config. Schedule: DeepSpeed's WarmupCosineLR (linear warmup over
``warmup_ratio`` of the steps, no step at lr 0, cosine decay to 0), the UltraLLaMA recipe's shape.
On CPU the optimizer is torch's AdamW (``torch_adam``), which needs no compiled op; with optimizer
offload DeepSpeed uses its CPU Adam, which it builds on first use (cache TORCH_EXTENSIONS_DIR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ultrachat.config.training import TrainStage


def resolve_precision(stage: TrainStage) -> str:
    return ("bf16" if stage.use_gpu else "fp32") if stage.precision == "auto" else stage.precision


@dataclass(frozen=True)
class Schedule:
    """How many rows, micro-batches and optimizer steps each rank sees per epoch."""

    rows_per_rank: int
    micro_batches_per_epoch: int
    steps_per_epoch: int
    epochs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def schedule(stage: TrainStage, num_rows: int) -> Schedule:
    """Ray Train splits the rows evenly over the ranks (``equal=True``: the last ``num_rows % num_workers``
    rows of an epoch wait for the next run, as in DistributedSampler with drop_last). A last partial
    accumulation still makes an optimizer step, so no row of a rank's shard goes untrained."""
    rows = num_rows // stage.num_workers
    micro = math.ceil(rows / stage.micro_batch_size)
    return Schedule(rows, micro, max(1, math.ceil(micro / stage.gradient_accumulation_steps)), stage.epochs)


def total_steps(stage: TrainStage, num_rows: int) -> int:
    return schedule(stage, num_rows).total_steps


def deepspeed_config(stage: TrainStage, world_size: int, steps: int) -> dict:
    if world_size != stage.num_workers:
        raise ValueError(f"world size {world_size} differs from num_workers {stage.num_workers}: the batch math "
                         f"assumes one rank per worker")
    precision = resolve_precision(stage)
    zero: dict = {"stage": stage.zero_stage, "contiguous_gradients": True, "overlap_comm": stage.use_gpu}
    if stage.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": stage.use_gpu}
    if stage.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": stage.use_gpu}
    if stage.zero_stage == 3:
        # Export consolidates the partitioned weights into one state dict on rank 0.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_batch_size": stage.global_batch_size,
        "train_micro_batch_size_per_gpu": stage.micro_batch_size,
        "gradient_accumulation_steps": stage.gradient_accumulation_steps,
        "gradient_clipping": stage.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "optimizer": {"type": "AdamW", "params": {
            "lr": stage.learning_rate, "weight_decay": stage.weight_decay, "betas": [0.9, 0.95], "eps": 1e-8,
            **({"torch_adam": True} if not stage.use_gpu and not stage.offload_optimizer else {})}},
        "scheduler": {"type": "WarmupCosineLR", "params": warmup_cosine(steps, stage.warmup_ratio)},
        "steps_per_print": 10**9,  # we log per interval ourselves (loss, lr, grad norm, tokens/s)
        "wall_clock_breakdown": False,
    }


def warmup_cosine(steps: int, warmup_ratio: float) -> dict:
    """WarmupCosineLR's params for ``steps`` optimizer steps, of which ``warmup_ratio`` warm up.

    The scheduler sets lr 0 until its first ``step()``, and its linear warmup starts at
    ``warmup_min_ratio`` (0 by default): a run's first update, and with a short run its first few,
    would be lost (a demo or a test then stays at its starting weights). So the train loop steps the
    scheduler once before training, the ramp starts at 1/(warmup+1) (warmup step k at k/(warmup+1) of
    the lr; with no warmup, step 1 at the full lr), and the decay reaches 0 one step after the last.
    """
    warmup = round(steps * warmup_ratio)
    # DeepSpeed warms up over at least 2 steps; with warmup 0 or 1 the ratio still gives 1.0 or 0.5 first.
    return {"total_num_steps": steps + 1, "warmup_num_steps": max(2, warmup), "warmup_type": "linear",
            "warmup_min_ratio": 1.0 / (warmup + 1), "cos_min_ratio": 0.0}


def init_deepspeed_comm(use_gpu: bool, **kwargs) -> None:
    """``deepspeed.init_distributed`` (nccl on GPUs, gloo on CPU) without building the CPU shm op.

    On CPU DeepSpeed JIT-compiles its shared-memory all-reduce kernel (``deepspeed_shm_comm``, 75-100 s
    on 2 cores) the first time a node initializes comm. Only inference tensor parallelism (AutoTP) calls
    that kernel; ZeRO training never does, so it is marked unusable (``deepspeed.ops`` keeps the dict
    it probes for this) and comm falls through to torch.distributed. ``kwargs`` go to init_distributed.
    """
    import deepspeed

    if not use_gpu:
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo", auto_mpi_discovery=False, **kwargs)

"""Loading the model a training worker trains: dtype, ZeRO-3 partitioned loading, checkpointing, LoRA.

Under ZeRO-3 the weights are never fully materialized on a worker: a live ``HfDeepSpeedConfig``
makes ``from_pretrained`` construct the model inside ``deepspeed.zero.Init``, so each rank only
holds its partition (how a 13B or 70B model fits). The returned handle must stay referenced for as
long as the model lives (transformers keeps only a weak reference).
"""

from __future__ import annotations

import logging

from ultrachat.config.training import TrainStage

logger = logging.getLogger(__name__)


def load_model(stage: TrainStage, model_dir: str, ds_config: dict, dtype_name: str):
    """(model, keep-alive handle). ``dtype_name`` is resolve_precision's bf16 / fp16 / fp32."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    # Must exist before from_pretrained for zero.Init to apply; harmless below stage 3.
    keep_alive = HfDeepSpeedConfig(ds_config) if stage.zero_stage == 3 else None
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.config.use_cache = False  # packed-sequence masking needs it, and training never decodes
    if stage.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if stage.lora is not None:
            model.enable_input_require_grads()  # checkpointed blocks need a grad path through frozen embeddings
    if stage.lora is not None:
        model = _with_lora(model, stage)
    return model, keep_alive


def reference_ds_config(ds_config: dict) -> dict:
    """The policy's DeepSpeed config for a frozen model: no optimizer or schedule, parameters partitioned
    (and offloaded) as the policy's are."""
    config = {key: value for key, value in ds_config.items() if key not in ("optimizer", "scheduler")}
    zero = ds_config.get("zero_optimization", {})
    config["zero_optimization"] = {key: value for key, value in zero.items()
                                   if key == "stage" or key.startswith("stage3_") or key == "offload_param"}
    return config


def load_reference(stage: TrainStage, model_dir: str, ds_config: dict, dtype_name: str, device):
    """(reference, keep-alive handle) for method dpo: the starting weights, frozen. Under ZeRO-3 a second
    DeepSpeed engine partitions them like the policy's (each rank holds 1/world of them); below stage 3
    a whole copy sits on the device. With LoRA: (None, None), the base model with its adapters disabled is
    the reference and costs no memory."""
    import deepspeed
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    if stage.lora is not None:
        return None, None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    config = reference_ds_config(ds_config) if stage.zero_stage == 3 else None
    keep_alive = HfDeepSpeedConfig(config) if config else None
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.config.use_cache = False
    model.requires_grad_(False)
    model.eval()
    if config is None:
        return model.to(device), None
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine, keep_alive


def _with_lora(model, stage: TrainStage):
    from peft import LoraConfig, get_peft_model

    lora = stage.lora
    missing = [m for m in lora.target_modules if not any(n.endswith("." + m) for n, _ in model.named_modules())]
    if missing:
        raise ValueError(f"lora.target_modules {missing} are not modules of this model. Fix: choose from its "
                         f"linear layers, e.g. q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj")
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("LoRA rank %d on %s: %d of %d parameters train (%.2f%%)", lora.rank, lora.target_modules,
                trainable, total, 100 * trainable / total)
    return model


def count_parameters(model) -> int:
    """Parameters of the full model, also under ZeRO-3 (where local tensors are empty partitions)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())

"""Config of fine-tuning: data, tokenization, the DeepSpeed engine, schedule, checkpoints.

Defaults are the UltraLLaMA recipe (../shared/ultrachat-reference.md section 4): 2048 tokens, global
batch 512, AdamW lr 1e-5, cosine decay with 3% warmup, 3 epochs, grad clip 1.0. The global batch is
stated once; gradient accumulation is derived from it, the micro batch and the number of workers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from ultrachat.config.base import Section
from ultrachat.config.serving import check_served_source
from ultrachat.models.source import check_model_ref
from ultrachat.storage import StoragePath


def check_base_model(ref: str) -> str:
    """A model reference (local dir, hub id, tiny:<size>, local:<name>), or the URI of a model dir (e.g. an earlier
    run's export on s3://), which the job copies to local disk with serving's copy helper."""
    return check_served_source(ref) if "://" in ref else check_model_ref(ref)


class TrainData(Section):
    paths: list[StoragePath] = Field(
        min_length=1, description="files or folders, local paths or URIs (s3://, gs://, file://)")
    # auto: each record by its fields (messages / conversations / data); see training/dialogues.py.
    format: Literal["auto", "ultrachat", "sharegpt"] = "auto"
    eval_fraction: float = Field(default=0.0, ge=0, lt=0.5, description="held-out share for eval loss")
    limit: int | None = Field(default=None, ge=1, description="use only the first N dialogues")


class Lora(Section):
    rank: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    merge_on_export: bool = True  # merged weights serve anywhere; false saves the adapter for vLLM's LoRA


class Dpo(Section):
    """Direct Preference Optimization (Rafailov et al. 2023) on (prompt, chosen, rejected) pairs."""

    # How far the policy may move from the reference: the Zephyr recipe uses 0.01, TRL defaults to 0.1.
    beta: float = Field(default=0.1, gt=0)
    # sigmoid: the DPO paper's loss (with label_smoothing, the conservative cDPO variant); ipo: Azar et
    # al.'s squared loss on length-averaged log-probability ratios.
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5, description="assumed share of flipped labels")
    # The prompt (every turn before the compared answers) keeps its last max_prompt_length tokens;
    # answers are then cut to fit max_seq_len. Both are counted in the prepared data's stats.
    max_prompt_length: int = Field(default=512, ge=1)
    # model: the reference runs beside the policy every step (a frozen copy, partitioned like the policy
    # under ZeRO-3; with LoRA, the base with its adapters disabled). precomputed: one no-grad pass of the
    # starting policy over the train and eval pairs before step 1 stores their log-probs, kept in every
    # checkpoint; no reference weights in memory during training (training/reference_table.py).
    reference: Literal["model", "precomputed"] = "model"


class TrainStage(Section):
    model: Annotated[str, AfterValidator(check_base_model)]
    data: TrainData
    # sft: next-token loss on the assistant turns of dialogues; dpo: preference pairs (prompt, chosen,
    # rejected) against a frozen reference, the policy's starting weights (see training/dpo.py).
    method: Literal["sft", "dpo"] = "sft"
    dpo: Dpo = Dpo()
    # auto: the model's template when it marks assistant turns ({% generation %}), else the UltraChat
    # format (User: ... </s>\nAssistant: ... </s>); ultrachat: always the UltraChat format; zephyr:
    # <|user|> / <|assistant|> turns ending with EOS (the Zephyr recipe); model: the model's, or an error.
    chat_template: Literal["auto", "ultrachat", "zephyr", "model"] = "auto"
    max_seq_len: int = Field(default=2048, ge=16)
    packing: bool = False
    num_workers: int = Field(default=2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1, gt=0)
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    # auto: bf16 on GPU, fp32 on CPU.
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    gradient_checkpointing: bool = False
    global_batch_size: int = Field(default=512, ge=1)
    micro_batch_size: int = Field(default=2, ge=1, description="examples per worker per forward pass")
    learning_rate: float = Field(default=1e-5, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    epochs: int = Field(default=3, ge=1)
    log_every_steps: int = Field(default=10, ge=1)
    eval_every_steps: int | None = Field(default=None, ge=1)
    checkpoint_every_steps: int = Field(default=100, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    tensorboard: bool = False  # also write the interval metrics to output_dir/tensorboard (local output_dir)
    max_failures: int = Field(default=3, ge=0)
    lora: Lora | None = None
    seed: int = 0

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.num_workers)

    @model_validator(mode="after")
    def _consistent(self) -> "TrainStage":
        problems = []
        per_step = self.micro_batch_size * self.num_workers
        if self.global_batch_size % per_step:
            below = self.global_batch_size // per_step * per_step
            options = ", ".join(str(v) for v in (below, below + per_step) if v > 0)
            problems.append(f"global_batch_size ({self.global_batch_size}) must be a multiple of micro_batch_size x "
                            f"num_workers ({self.micro_batch_size} x {self.num_workers} = {per_step}); fix: use "
                            f"{options}, or change micro_batch_size")
        if self.offload_params and self.zero_stage != 3:
            problems.append("offload_params needs zero_stage 3 (parameters are only partitioned there); fix: set "
                            "zero_stage: 3 or offload_params: false")
        if self.offload_optimizer and self.zero_stage == 0:
            problems.append("offload_optimizer needs zero_stage 1, 2 or 3; fix: raise zero_stage")
        if not self.use_gpu and self.precision in ("bf16", "fp16"):
            problems.append(f"precision {self.precision} needs use_gpu: true (CPU training runs in fp32); fix: set "
                            f"precision: auto")
        if self.lora is not None and self.zero_stage == 3:
            problems.append("lora with zero_stage 3 is not supported here (adapters on partitioned weights); fix: "
                            "use zero_stage 2 with LoRA")
        if self.method == "dpo":
            if self.packing:
                problems.append("packing does not apply to method dpo (a chosen and a rejected answer are compared "
                                "as whole sequences); fix: set packing: false")
            if self.dpo.max_prompt_length >= self.max_seq_len:
                problems.append(f"dpo.max_prompt_length ({self.dpo.max_prompt_length}) leaves no room for the answers "
                                f"in max_seq_len ({self.max_seq_len}); fix: lower dpo.max_prompt_length or raise "
                                f"max_seq_len")
        elif self.dpo != Dpo():  # compared with the defaults: configs re-validated from a dump carry them all
            problems.append("dpo settings are given but method is sft; fix: set method: dpo, or remove dpo")
        if problems:
            raise ValueError("; ".join(problems))
        return self

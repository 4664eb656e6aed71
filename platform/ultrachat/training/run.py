"""The train job: checks -> prepared data -> Ray Train ``TorchTrainer`` with DeepSpeed -> export.

Everything that can be wrong with the inputs is found on the driver before a training worker starts:
the model (resolved, or a clear error), the chat template, the data (prepared once per content, with
skip counts; empty or untrainable data is an error), and checkpoints from an incompatible earlier run
in the same output_dir. Then one ``TorchTrainer.fit()``: ``num_workers`` workers, each a DeepSpeed
engine over its ``get_dataset_shard`` of the prepared rows, checkpoints to
``RunConfig(storage_path=output_dir)`` (local or s3://), restarts after worker failures up to
``max_failures``, and the final export to ``output_dir/export``. A re-run resumes from the latest
checkpoint, and returns at once when the export of this very run exists.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import nullcontext

from ultrachat import storage
from ultrachat.config.schema import TrainConfig
from ultrachat.config.training import TrainStage
from ultrachat.errors import InputError, failure_reason
from ultrachat.models.files import local_model_dir
from ultrachat.training import checkpoints
from ultrachat.training.ds_config import deepspeed_config, resolve_precision, schedule
from ultrachat.training.export import EXPORT_DIR, read_export_manifest
from ultrachat.training.loop import LoopConfig, train_loop_per_worker
from ultrachat.training.metrics import MetricsFollower
from ultrachat.training.prepare import prepare_data
from ultrachat.training.template import resolve_chat_template

logger = logging.getLogger(__name__)


def run_train(config: TrainConfig) -> dict:
    import ray
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train import TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer
    from transformers import AutoTokenizer

    output_dir = _absolute(config.output_dir)
    # A URI is copied to this node's model cache; a hub id or tiny: ref resolves as everywhere.
    model_dir = local_model_dir(config.model, key="model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    template, template_source = resolve_chat_template(tokenizer, config.chat_template, config.model)
    logger.info("chat template: %s", template_source)
    prepared = prepare_data(config, output_dir, model_dir, template,
                            builders=max(1, int(ray.cluster_resources().get("CPU", 1)) - 1))
    plan = schedule(config, prepared.train_rows)
    export_dir = storage.join(output_dir, EXPORT_DIR)
    counts = {"data": dict(prepared.counts), "train_rows": prepared.train_rows, "eval_rows": prepared.eval_rows,
              "total_steps": plan.total_steps, "export_dir": export_dir}
    _check_room_for_data(config, ray.cluster_resources())
    found = checkpoints.check_resumable(output_dir, checkpoints.run_signature(config, model_dir))
    done = read_export_manifest(export_dir)
    if done and done.get("prepared_data") == prepared.fingerprint and done.get("steps") == plan.total_steps:
        logger.info("%s already holds this run's model (step %d); nothing to train", export_dir, done["steps"])
        return {**counts, "already_exported": True}
    logger.info("schedule: %d rows -> %d per rank, %d micro-batches and %d optimizer steps per epoch, %d steps "
                "(global batch %d = %d micro x %d accumulation x %d workers)", prepared.train_rows,
                plan.rows_per_rank, plan.micro_batches_per_epoch, plan.steps_per_epoch, plan.total_steps,
                config.global_batch_size, config.micro_batch_size, config.gradient_accumulation_steps,
                config.num_workers)
    if prepared.train_rows % config.num_workers:
        logger.info("%d row(s) per epoch are left out by the even split over %d workers",
                    prepared.train_rows % config.num_workers, config.num_workers)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loop_config = LoopConfig(
        stage=TrainStage.model_validate(config.model_dump(include=set(TrainStage.model_fields))),
        deepspeed=deepspeed_config(config, config.num_workers, plan.total_steps),
        precision=resolve_precision(config), model_dir=model_dir, model_source=config.model,
        chat_template=template, chat_template_source=template_source, schedule=plan,
        has_eval=bool(prepared.eval_rows), pad_id=pad_id, output_dir=output_dir, export_dir=export_dir,
        prepared_fingerprint=prepared.fingerprint, run_name=config.run_name or "train", log_level=config.log_level)
    datasets = {"train": ray.data.read_parquet(prepared.train_dir)}
    if prepared.eval_rows:
        datasets["eval"] = ray.data.read_parquet(prepared.eval_dir)
    ingest = DataConfig.default_ingest_options()
    ingest.preserve_order = True  # the same rows reach the same rank in the same order after a restart
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"loop": loop_config},
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     resources_per_worker={"CPU": config.cpus_per_worker,
                                                           **({"GPU": 1} if config.use_gpu else {})}),
        run_config=RunConfig(name=checkpoints.CHECKPOINTS_DIR, storage_path=output_dir,
                             checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
                             failure_config=FailureConfig(max_failures=config.max_failures)),
        datasets=datasets,
        dataset_config=DataConfig(execution_options=ingest),
    )
    try:
        # Workers' own lines reach the terminal only with ray.log_to_driver; else follow the metrics file.
        with MetricsFollower(output_dir) if not config.ray.log_to_driver else nullcontext(), \
                warnings.catch_warnings():
            # Ray Train 2.60's own data ingest sets it; nothing a user can act on.
            warnings.filterwarnings("ignore", message=".*exclude_resources` is deprecated")
            result = trainer.fit()
    except TrainingFailedError as err:
        # Ray Train 2.60 (Train V2) raises once its restarts are used up; one line names the worker's error.
        raise RuntimeError(f"training failed after {config.max_failures} restart(s) (max_failures): "
                           f"{failure_reason(err, limit=600)}. Fix the cause and re-run the same command: it resumes from "
                           f"the latest checkpoint") from err
    counts.update(resumed_from=found[-1] if found else None, final_metrics=_plain(result.metrics),
                  checkpoint=result.checkpoint.path if result.checkpoint else None)
    return counts


def _check_room_for_data(config: TrainConfig, resources: dict) -> None:
    """The workers' data pipeline (Parquet reads) needs CPU the workers do not hold, or it never starts."""
    if os.environ.get("RAY_ADDRESS"):
        return  # a cluster may autoscale; Ray Data reports its own backpressure there
    left = resources.get("CPU", 0) - config.num_workers * config.cpus_per_worker
    if left < 0.5:
        raise InputError(f"cpus_per_worker: {config.num_workers} workers x {config.cpus_per_worker} CPU leave "
                         f"{max(left, 0):g} of this Ray's {resources.get('CPU', 0):g} CPUs for the data pipeline that "
                         f"feeds them, so it would wait forever. Fix: lower cpus_per_worker (e.g. 0.5) or "
                         f"num_workers, or raise ray.local_num_cpus")


def _absolute(path: str) -> str:
    # Ray Train wants an absolute local storage_path; a file:// URI is a local path too (so metrics.jsonl,
    # TensorBoard and the atomic local export apply), other URIs pass through.
    local = storage.local_path(path)
    return path if local is None else os.path.abspath(local)


def _plain(metrics: dict | None) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in (metrics or {}).items()}

"""The per-worker training loop Ray Train runs: a DeepSpeed engine over this rank's data shard.

Every micro-batch sets DeepSpeed's accumulation boundary explicitly (every
``gradient_accumulation_steps`` micro-batches, and at the end of an epoch so a short last step still
updates), so optimizer steps line up with the schedule the driver computed. Metrics are reported
through ``ray.train.report`` once per ``log_every_steps`` (each report is a barrier costing ~2 s on
small machines; per step it would dominate) and with a checkpoint every ``checkpoint_every_steps``
and at the end. On restart (a failed worker, or the job re-run) the engine state and the data
position come from the latest checkpoint: each rank skips the micro-batches of the epoch it has
already trained on, which is exact because the shard order is deterministic (``preserve_order``,
seeded local shuffle).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass

from ultrachat import observability, storage
from ultrachat.config.training import TrainStage
from ultrachat.training import checkpoints
from ultrachat.training.checkpoints import TrainerState
from ultrachat.training.ds_config import Schedule, init_deepspeed_comm
from ultrachat.training.examples import IGNORE_INDEX

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    """Everything the driver decided that every worker needs (Ray Train pickles it to them)."""

    stage: TrainStage
    deepspeed: dict  # the DeepSpeed config, as DeepSpeed reads it
    precision: str
    model_dir: str  # resolved on the driver; a URI model is copied again on each worker's node
    model_source: str
    chat_template: str
    chat_template_source: str
    schedule: Schedule
    has_eval: bool
    pad_id: int
    output_dir: str
    export_dir: str
    prepared_fingerprint: str
    run_name: str
    log_level: str


def collate(batch: dict, pad_id: int):
    """Right-pad a micro-batch to its longest row. Padding gets positions restarting at 0, so with no
    attention mask transformers treats it as a separate sequence (see training/packing.py)."""
    import torch

    rows = list(zip(batch["input_ids"], batch["labels"], batch["position_ids"]))
    width = max(len(ids) for ids, _, _ in rows)
    ids_out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels_out = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions_out = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, labels, positions) in enumerate(rows):
        n = len(ids)
        ids_out[i, :n] = torch.as_tensor(ids)
        labels_out[i, :n] = torch.as_tensor(labels)
        positions_out[i, :n] = torch.as_tensor(positions)
        positions_out[i, n:] = torch.arange(width - n)
    return {"input_ids": ids_out, "labels": labels_out, "position_ids": positions_out,
            "num_tokens": int(sum(int(t) for t in batch["num_tokens"]))}


def micro_batches(shard, micro_batch_size: int, pad_id: int, seed: int, collate_fn=collate):
    for batch in shard.iter_batches(batch_size=micro_batch_size, batch_format="numpy", drop_last=False,
                                    local_shuffle_buffer_size=max(64, 8 * micro_batch_size),
                                    local_shuffle_seed=seed):
        yield collate_fn(batch, pad_id)


def forward_loss(engine, batch):
    device = engine.device
    out = engine(input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device),
                 labels=batch["labels"].to(device), use_cache=False)
    return out.loss


class SftObjective:
    """Next-token loss on the labelled (assistant) tokens; eval weighs micro-batches by those tokens."""

    metrics: tuple[str, ...] = ()
    eval_metrics: tuple[str, ...] = ()
    collate = staticmethod(collate)
    last: dict = {}
    table = None  # no precomputed reference log-probs to checkpoint (training/reference_table.py)

    def loss(self, engine, batch):
        return forward_loss(engine, batch)

    @staticmethod
    def eval_weight(batch) -> int:
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def evaluate(engine, shard, micro_batch_size: int, pad_id: int, objective) -> dict:
    """``eval_loss`` (and the objective's eval metrics) over this eval shard, all-reduced over the ranks:
    SFT's per trained token, DPO's per pair."""
    import torch
    import torch.distributed as dist

    engine.eval()
    totals = torch.zeros(2 + len(objective.eval_metrics), dtype=torch.float64)
    with torch.no_grad():
        for batch in micro_batches(shard, micro_batch_size, pad_id, seed=0, collate_fn=objective.collate):
            weight = objective.eval_weight(batch)
            loss = float(objective.loss(engine, batch))
            totals += torch.tensor([loss * weight, weight, *(objective.last[name] * weight
                                                             for name in objective.eval_metrics)],
                                   dtype=torch.float64)
    engine.train()
    if dist.is_initialized():
        dist.all_reduce(totals)
    if not totals[1]:
        return {"eval_loss": None}
    return {"eval_loss": float(totals[0] / totals[1]),
            **{f"eval_{name}": float(value / totals[1]) for name, value in zip(objective.eval_metrics, totals[2:])}}


def train_loop_per_worker(train_loop_config: dict) -> None:
    """Ray Train's entry point: ``train_loop_config`` is ``{"loop": LoopConfig}``."""
    cfg: LoopConfig = train_loop_config["loop"]
    import deepspeed
    import ray.train
    import torch

    from ultrachat.logs import setup_logging
    from ultrachat.training.export import export_model
    from ultrachat.training.metrics import IntervalMeter, MetricsLog
    from ultrachat.training.model import count_parameters, load_model

    stage = cfg.stage
    setup_logging(cfg.log_level, job=f"train:{cfg.run_name}")
    observability.set_run(cfg.run_name)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(stage.seed)
    # Ray Train already made the torch process group; DeepSpeed's comm wraps it. Needed before the model
    # loads: under ZeRO-3 zero.Init and the config parser read the world size from it.
    init_deepspeed_comm(stage.use_gpu)
    model_dir = cfg.model_dir
    if storage.is_uri(cfg.model_source):
        # The driver's copy of a URI model is on the driver's node only: each node makes its own.
        from ultrachat.models.files import local_model_dir

        model_dir = local_model_dir(cfg.model_source, key="model")
    model, _keep_alive = load_model(stage, model_dir, cfg.deepspeed, cfg.precision)
    engine, *_ = deepspeed.initialize(model=model, config=cfg.deepspeed,
                                      model_parameters=[p for p in model.parameters() if p.requires_grad])
    # WarmupCosineLR holds lr 0 until its first step(): one here makes optimizer step k run at the
    # schedule's k-th lr (ds_config.warmup_cosine). A restored checkpoint then sets its own position.
    engine.lr_scheduler.step()
    train_shard = ray.train.get_dataset_shard("train")
    eval_shard = ray.train.get_dataset_shard("eval") if cfg.has_eval else None
    pad_id = cfg.pad_id
    objective = SftObjective()
    precomputed = stage.method == "dpo" and stage.dpo.reference == "precomputed"
    if stage.method == "dpo":
        from ultrachat.training.dpo import DpoObjective
        from ultrachat.training.model import load_reference

        # The starting weights, loaded before any restored checkpoint moves the policy away from them.
        reference, _reference_keep_alive = (None, None) if precomputed else load_reference(
            stage, model_dir, cfg.deepspeed, cfg.precision, engine.device)
        objective = DpoObjective(stage.dpo, reference)
    state = TrainerState()
    restored = ray.train.get_checkpoint()
    if restored:
        with restored.as_directory() as local:
            state = checkpoints.load(engine, local)
            # The lr of the step after the checkpoint, from the restored schedule position.
            engine.lr_scheduler.step(engine.lr_scheduler.last_batch_iteration)
            if precomputed:
                from ultrachat.training.reference_table import ReferenceTable

                objective.table = ReferenceTable.load(local)
        logger.info("rank %d resumed at step %d (epoch %d, micro-batch %d)", rank, state.step, state.epoch,
                    state.micro_in_epoch)
    elif precomputed:  # the policy still has the starting weights: it is the reference
        from ultrachat.training.dpo import pair_logps
        from ultrachat.training.reference_table import ReferenceTable

        shards = [train_shard] + ([eval_shard] if eval_shard is not None else [])
        objective.table = ReferenceTable.compute(
            engine, [micro_batches(shard, stage.micro_batch_size, pad_id, seed=0, collate_fn=objective.collate)
                     for shard in shards], pair_logps)
    plan, accumulation = cfg.schedule, stage.gradient_accumulation_steps
    device_name = torch.cuda.get_device_name() if stage.use_gpu and torch.cuda.is_available() else None
    meter = IntervalMeter(count_parameters(engine.module), world, device_name, objective.metrics)
    log = MetricsLog(cfg.output_dir if rank == 0 else None, stage.tensorboard)

    while state.step < plan.total_steps:
        skip = state.micro_in_epoch
        for micro, batch in enumerate(micro_batches(train_shard, stage.micro_batch_size, pad_id,
                                                    seed=stage.seed + state.epoch, collate_fn=objective.collate)):
            if micro < skip:
                continue  # trained on before the restart
            last_of_epoch = micro + 1 == plan.micro_batches_per_epoch
            engine.set_gradient_accumulation_boundary((micro + 1) % accumulation == 0 or last_of_epoch)
            loss = objective.loss(engine, batch)
            engine.backward(loss)
            engine.step()
            meter.add(float(loss), batch["num_tokens"], objective.last)
            state.micro_in_epoch = micro + 1
            if not ((micro + 1) % accumulation == 0 or last_of_epoch):
                continue
            state.step += 1
            if last_of_epoch:
                state.epoch, state.micro_in_epoch = state.epoch + 1, 0
            _report_if_due(engine, stage, state, meter, log, eval_shard, pad_id, rank, plan.total_steps, objective)
            if last_of_epoch or state.step >= plan.total_steps:
                break
        else:  # the shard ended before the planned micro-batches (cannot happen with equal splits)
            raise RuntimeError(f"rank {rank}: epoch {state.epoch} ended after {state.micro_in_epoch} micro-batches, "
                               f"{plan.micro_batches_per_epoch} were planned")

    info = {"method": stage.method, "steps": state.step, "epochs": state.epoch, "tokens": state.tokens,
            "model": stage.model,
            "chat_template": cfg.chat_template_source, "prepared_data": cfg.prepared_fingerprint}
    export_model(engine, stage, model_dir, cfg.chat_template, cfg.export_dir, rank, info)


def _report_if_due(engine, stage, state, meter, log, eval_shard, pad_id, rank, total_steps, objective) -> None:
    import ray.train

    final = state.step >= total_steps
    due_log = state.step % stage.log_every_steps == 0 or final
    due_checkpoint = state.step % stage.checkpoint_every_steps == 0 or final
    due_eval = eval_shard is not None and (final or (stage.eval_every_steps and
                                                     state.step % stage.eval_every_steps == 0))
    if not (due_log or due_checkpoint or due_eval):
        return
    metrics = meter.close(engine.device)
    state.tokens += metrics["interval_tokens"]
    grad_norm = engine.get_global_grad_norm()
    metrics.update(step=state.step, epoch=state.epoch, learning_rate=engine.get_lr()[0], tokens=state.tokens,
                   grad_norm=float(grad_norm) if grad_norm is not None else float("nan"))
    if due_eval:
        metrics.update(evaluate(engine, eval_shard, stage.micro_batch_size, pad_id, objective))
    if rank == 0:  # the numbers are all-reduced: one rank records them for the run
        log.write(state.step, metrics)
        observability.record_training_interval(metrics)
    if not due_checkpoint:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="ultrachat-ckpt-") as local:
        checkpoints.save(engine, state, local, rank)
        if rank == 0 and objective.table is not None:
            objective.table.save(local)  # a resumed policy has moved: it can no longer recompute the table
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(local),
                         checkpoint_dir_name=checkpoints.checkpoint_dir_name(state.step))


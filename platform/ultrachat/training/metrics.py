"""Per-interval training metrics: loss, learning rate, grad norm, tokens/s and, on GPU, MFU.

Ranks sum their token counts and losses with one all-reduce per interval, so every rank reports the
same numbers (Ray Train attaches rank 0's to checkpoints; the dashboard shows them). MFU uses the
usual 6 x parameters FLOPs per trained token (forward + backward) against the GPU's dense peak.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from ultrachat import storage

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"

# Dense bf16/fp16 peak FLOP/s per GPU, matched against torch.cuda.get_device_name().
_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12,
               "V100": 125e12}


def peak_flops(device_name: str | None) -> float | None:
    if not device_name:
        return None
    return next((flops for key, flops in _PEAK_FLOPS.items() if key in device_name), None)


class IntervalMeter:
    """Accumulates one logging interval on one rank; ``close`` all-reduces and starts the next."""

    def __init__(self, num_parameters: int, world_size: int, device_name: str | None,
                 extra: tuple[str, ...] = ()):
        """``extra``: names of further per-micro-batch values (e.g. DPO's rewards), averaged like the loss."""
        self.num_parameters, self.world_size = num_parameters, world_size
        self.peak = peak_flops(device_name)
        self.extra = extra
        self._reset()

    def _reset(self) -> None:
        self.loss_sum, self.micro_batches, self.tokens, self.started = 0.0, 0, 0, time.perf_counter()
        self.extra_sums = [0.0] * len(self.extra)

    def add(self, loss: float, tokens: int, extra: dict | None = None) -> None:
        self.loss_sum += loss
        self.micro_batches += 1
        self.tokens += tokens
        for i, name in enumerate(self.extra):
            self.extra_sums[i] += extra[name]

    def close(self, device) -> dict:
        import torch
        import torch.distributed as dist

        totals = torch.tensor([self.loss_sum, self.micro_batches, self.tokens, *self.extra_sums],
                              dtype=torch.float64, device=device)
        if dist.is_initialized():
            dist.all_reduce(totals)
        seconds = max(time.perf_counter() - self.started, 1e-9)
        loss_sum, micro_batches, tokens, *extra_sums = totals.tolist()
        metrics = {"loss": loss_sum / max(micro_batches, 1), "tokens_per_s": tokens / seconds,
                   "interval_tokens": int(tokens)}
        metrics.update({name: value / max(micro_batches, 1) for name, value in zip(self.extra, extra_sums)})
        if self.peak:
            metrics["mfu"] = 6 * self.num_parameters * metrics["tokens_per_s"] / (self.peak * self.world_size)
        self._reset()
        return metrics


class MetricsLog:
    """Rank 0's record of every interval: ``metrics.jsonl`` and, for local output dirs, TensorBoard."""

    def __init__(self, output_dir: str | None, tensorboard: bool):
        local = output_dir is not None and not storage.is_uri(output_dir)
        self.path = Path(output_dir, METRICS_FILE) if local else None
        # Object stores cannot append: keep the lines (a resumed run's too) and rewrite the object.
        self.uri = storage.join(output_dir, METRICS_FILE) if output_dir and not local else None
        self.lines = storage.read_text(self.uri).splitlines(keepends=True) if self.uri and storage.exists(self.uri) \
            else []
        self.writer = None
        if tensorboard and self.path is not None:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(Path(output_dir, "tensorboard")))

    def write(self, step: int, metrics: dict) -> None:
        logger.info(interval_line(step, metrics))
        line = json.dumps({"step": step, **metrics}) + "\n"
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line)
        elif self.uri is not None:
            self.lines.append(line)
            storage.write_text(self.uri, "".join(self.lines))
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, step)
            self.writer.flush()


def interval_line(step: int, metrics: dict) -> str:
    return " | ".join([f"step {step}"] + [f"{k} {v:.4g}" for k, v in metrics.items()
                                          if k not in ("step", "epoch") and isinstance(v, (int, float))])


class MetricsFollower:
    """A driver thread that logs rank 0's new ``metrics.jsonl`` lines while training runs, for a
    terminal that does not get the workers' output (``ray.log_to_driver: false``)."""

    def __init__(self, output_dir: str, interval_s: float = 5.0):
        self.uri, self.interval_s, self.seen = storage.join(output_dir, METRICS_FILE), interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="train-metrics", daemon=True)

    def __enter__(self):
        # Lines an earlier (resumed) run wrote are not news.
        self.seen = len(self._lines())
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)
        self._emit()

    def _lines(self) -> list[str]:
        try:
            return storage.read_text(self.uri).splitlines() if storage.exists(self.uri) else []
        except OSError as err:  # a progress line is not worth failing the run for
            logger.debug("cannot read %s: %s", self.uri, err)
            return []

    def _emit(self) -> None:
        lines = self._lines()
        for line in lines[self.seen:]:
            record = json.loads(line)
            logger.info(interval_line(record["step"], record))
        self.seen = max(self.seen, len(lines))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._emit()

"""The pipeline job: generate -> stats -> train (with export) -> serve -> one chat request -> evaluate
(the served fine-tune against its base, judged), on one Ray.

Each stage is the stage's own job, run in this process with its own ``output_dir/<stage>`` and
resolved config, so the stages keep their resume rules: generation runs only the dialogues not in
its output yet, training resumes from its latest checkpoint and returns at once when its export of
the same data and schedule exists. A re-run after a failure therefore pays only for what is missing.
Serving always deploys (a server is not an artifact) and proves the model answers; it stays up through
the evaluate stage, whose answers and verdicts are cached like any evaluation's.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from ultrachat import storage
from ultrachat.compaction import read_records
from ultrachat.config.pipeline import STAGES, PipelineServe
from ultrachat.config.schema import (EvaluateConfig, GenerateConfig, PipelineConfig, PreferencesConfig, ServeConfig,
                                     StatsConfig, TrainConfig)
from ultrachat.generate import run_generate
from ultrachat.generation.records import DIALOGUE_SCHEMA
from ultrachat.generation.run import DIALOGUES_DIR
from ultrachat.job import RESOLVED_CONFIG_NAME, save_resolved
from ultrachat.preferences.run import PAIRS_DIR
from ultrachat.training.export import CURRENT, EXPORT_DIR, EXPORT_MANIFEST
from ultrachat.training.run import run_train

logger = logging.getLogger(__name__)

_JOB_KEYS = ("log_level", "ray")


def stage_dir(config: PipelineConfig, stage: str) -> str:
    return storage.join(config.output_dir, stage)


def stage_configs(config: PipelineConfig) -> dict:
    """Each stage's own job config, with the links between stages filled in."""
    dialogues = storage.join(stage_dir(config, "generate"), DIALOGUES_DIR)
    exports = training_exports(config)
    train = config.train.model_dump()
    train["data"]["paths"] = train["data"]["paths"] or [dialogues]
    serve = config.serve.model_dump(exclude={"chat", "keep_serving"})
    for model in serve["models"]:
        model["source"] = exports.get(model["source"] or "last", model["source"])
    # A pipeline that keeps serving on a cluster hands the app over like `serve deploy` does.
    serve["detach"] = config.serve.detach and config.serve.keep_serving
    configs = {
        "generate": GenerateConfig.model_validate({**_job_keys(config, "generate"), **config.generate.model_dump()}),
        "train": TrainConfig.model_validate({**_job_keys(config, "train"), **train}),
        "serve": ServeConfig.model_validate({**_job_keys(config, "serve"), **serve}),
    }
    if "stats" in config.stages:  # its tokenizer default exists only when the stage runs (validated so)
        stats = config.stats.model_dump()
        stats["input"]["path"] = stats["input"]["path"] or dialogues
        stats["tokenizer"] = config.stats_tokenizer()
        configs["stats"] = StatsConfig.model_validate({**_job_keys(config, "stats"), **stats})
    if "preferences" in config.stages:
        preferences = config.preferences.model_dump()
        preferences["prompts"]["paths"] = preferences["prompts"]["paths"] or [dialogues]
        configs["preferences"] = PreferencesConfig.model_validate({**_job_keys(config, "preferences"), **preferences})
    if "dpo" in config.stages:
        # The train stage's export does not exist before that stage runs; its base model (same tokenizer
        # and architecture) stands in to validate now, and dpo_config swaps the export in at run time.
        configs["dpo"] = dpo_config(config, _job_keys(config, "dpo"), model=config.train.model)
    if "evaluate" in config.stages:
        configs["evaluate"] = EvaluateConfig.model_validate(
            {**_job_keys(config, "evaluate"), **evaluation_endpoints(config.evaluate.model_dump(), config, served_url(configs["serve"]))})
    return {stage: configs[stage] for stage in STAGES if stage in configs}


def _job_keys(config: PipelineConfig, stage: str) -> dict:
    """What a stage's job config takes from the pipeline's: its own output dir and run name, logging, Ray."""
    return {"output_dir": stage_dir(config, stage), "run_name": f"{config.run_name or 'pipeline'}-{stage}",
            **config.model_dump(include=set(_JOB_KEYS))}


def training_exports(config: PipelineConfig) -> dict[str, str]:
    """The serve sources that name a training stage's export ("last": the default, dpo's when it runs).
    Absolute: the serve replicas do not share this process's working dir (and it may not exist yet)."""
    exports = {f"stage:{stage}": _absolute(storage.join(stage_dir(config, stage), EXPORT_DIR)) for stage in ("train", "dpo")}
    return {**exports, "last": exports["stage:dpo" if "dpo" in config.stages else "stage:train"]}


def dpo_config(config: PipelineConfig, keys: dict, model: str | None = None) -> TrainConfig:
    """The dpo stage's train job: on the preferences stage's pairs, from the train stage's export (or
    ``model``, before that export exists)."""
    dpo = config.dpo.model_dump()
    dpo["model"] = dpo["model"] or model or training_exports(config)["stage:train"]
    dpo["data"]["paths"] = dpo["data"]["paths"] or [storage.join(stage_dir(config, "preferences"), PAIRS_DIR)]
    return TrainConfig.model_validate({**keys, **dpo})


# The variable that carries one of serve.auth's keys to the evaluate stage's endpoints.
SERVED_KEY_ENV = "ULTRACHAT_PIPELINE_SERVE_KEY"


def served_url(config: ServeConfig) -> str:
    """Where a local app answers (start_serving returns the real one, which replaces this at run time)."""
    port = config.direct_port if config.ingress == "direct" else config.port
    return f"http://{config.host}:{port}/v1"


def evaluation_endpoints(evaluate: dict, config: PipelineConfig, base_url: str) -> dict:
    """The evaluate section with unset endpoints pointing at the serve stage's app at ``base_url``."""
    key_env = SERVED_KEY_ENV if config.serve.auth.enabled else None
    for chat in [c["chat"] for c in evaluate["candidates"]] + [evaluate["judge"]["chat"]]:
        if chat["base_url"] is None:
            chat["base_url"], chat["api_key_env"] = base_url, chat["api_key_env"] or key_env
    return evaluate


@dataclass
class StageResult:
    """One stage's outcome: its job's counts, whether it had nothing left to do, and what it made."""

    counts: dict
    skipped: bool = False
    artifacts: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict:
        return {**self.counts, "skipped": self.skipped, "seconds": self.seconds}


def run_pipeline(config: PipelineConfig) -> dict:
    started = time.monotonic()
    configs = stage_configs(config)
    results: dict[str, StageResult] = {}
    finished = False
    try:
        for number, stage in enumerate(config.stages, 1):
            stage_config = configs[stage]
            if stage == "evaluate":  # the app's real address, known now that it serves
                stage_config = _served_evaluation(stage_config, config, configs["serve"],
                                                  results["serve"].counts["base_url"])
            if stage == "dpo" and config.dpo.model is None:  # the SFT export, there now
                stage_config = dpo_config(config, _job_keys(config, "dpo"))
            logger.info("stage %d/%d: %s -> %s", number, len(config.stages), stage, stage_config.output_dir)
            save_resolved(stage_config, stage, "the pipeline config")
            stage_started = time.monotonic()
            results[stage] = _RUNNERS[stage](stage_config, config)
            results[stage].seconds = round(time.monotonic() - stage_started, 1)
            logger.info("stage %d/%d: %s %s in %.0f s", number, len(config.stages), stage,
                        "skipped (already done)" if results[stage].skipped else "done", results[stage].seconds)
        finished = True
    finally:
        if "serve" in results:
            _finish_serving(configs["serve"], config, results["serve"], finished)
    artifacts = {"resolved_configs": [storage.join(c.output_dir, RESOLVED_CONFIG_NAME) for c in configs.values()]}
    for result in results.values():
        artifacts.update(result.artifacts)
    logger.info("pipeline finished in %.0f s\n%s", time.monotonic() - started, _report(artifacts, results))
    return {"stages": {stage: result.summary() for stage, result in results.items()}, "artifacts": artifacts}


def _generate(config: GenerateConfig, _pipeline: PipelineConfig) -> StageResult:
    counts = run_generate(config)
    artifacts, skipped = {}, True
    if "construction" in counts:
        artifacts["openings"] = counts["construction"]["openings_dir"]
        skipped = sum(stage["to_run"] for stage in counts["construction"]["stages"].values()) == 0
    if "dialogues" in config.run_stages:
        artifacts["dialogues"] = counts["dialogues_dir"]
        if config.export_jsonl:
            artifacts["dialogues_jsonl"] = counts["jsonl"]
        skipped = skipped and counts["dialogues"] == counts["already_done"]
    return StageResult(counts, skipped, artifacts)


def _preferences(config: PreferencesConfig, _pipeline: PipelineConfig) -> StageResult:
    from ultrachat.preferences.run import run_preferences

    counts = run_preferences(config)
    skipped = not any(wave["made_now"] for wave in counts["calls"].values())
    return StageResult(counts, skipped, {"preference_pairs": counts["pairs_file"],
                                         "rated_completions": counts["completions_file"]})


def _stats(config: StatsConfig, _pipeline: PipelineConfig) -> StageResult:
    from ultrachat.stats.run import run_stats

    counts = run_stats(config)
    return StageResult(counts, artifacts={"stats_report": counts["report"], "stats_json": counts["stats_json"]})


def _train(config: TrainConfig, _pipeline: PipelineConfig) -> StageResult:
    counts = run_train(config)
    artifacts = {"prepared_data": storage.join(config.output_dir, "prepared"),
                 "checkpoints": storage.join(config.output_dir, "checkpoints"),
                 "train_metrics": storage.join(config.output_dir, "metrics.jsonl"), "model": counts["export_dir"]}
    return StageResult(counts, "already_exported" in counts, artifacts)


def _dpo(config: TrainConfig, pipeline: PipelineConfig) -> StageResult:
    result = _train(config, pipeline)
    result.artifacts = {f"dpo_{name}": path for name, path in result.artifacts.items()}
    return result


def _serve(config: ServeConfig, pipeline: PipelineConfig) -> StageResult:
    """Deploy and ask one question; the app stays up for the stages after it (``_finish_serving``)."""
    from ultrachat.serving.run import start_serving, stop_serving

    started = time.monotonic()
    base_url = start_serving(config)
    try:
        counts = {"base_url": base_url, "models": [m.name for m in config.models],
                  "ready_s": round(time.monotonic() - started, 1), **_chat(base_url, config, pipeline.serve)}
    except BaseException:
        if not config.detach:
            stop_serving()
        raise
    counts["stopped"] = False
    return StageResult(counts, artifacts={"served_at": base_url})


def _finish_serving(config: ServeConfig, pipeline: PipelineConfig, result: StageResult, finished: bool) -> None:
    """After the last stage (or a failed one): stop the app, hand it over (detach) or serve until Ctrl-C."""
    from ultrachat.serving.run import hold_until_stopped, stop_serving, usage_example

    if result.counts.get("stopped", True):
        return
    settings = pipeline.serve
    if not finished or not settings.keep_serving:
        if not (config.detach and settings.keep_serving):
            stop_serving()
            result.counts["stopped"] = True
    elif config.detach:
        logger.info("keep_serving with detach: the app stays deployed on the cluster; `serve shutdown` stops it")
    else:
        logger.info("keep_serving: serving at %s until Ctrl-C\n%s", result.counts["base_url"],
                    usage_example(result.counts["base_url"], config))
        try:
            hold_until_stopped()
        finally:
            stop_serving()
            result.counts["stopped"] = True


def _served_evaluation(config: EvaluateConfig, pipeline: PipelineConfig, serve: ServeConfig,
                       base_url: str) -> EvaluateConfig:
    """The evaluate stage's endpoints that default to the app, at its real address (and key)."""
    from ultrachat.config import JobSettings
    from ultrachat.serving.run import api_key

    if serve.auth.enabled:  # one of the app's own keys, in this process only: never in a config or log
        os.environ[SERVED_KEY_ENV] = api_key(serve) or ""
    evaluate = evaluation_endpoints(pipeline.evaluate.model_dump(), pipeline, base_url)
    sources = {model.name: model.source for model in serve.models}
    for original, candidate in zip(pipeline.evaluate.candidates, evaluate["candidates"]):
        if original.chat.base_url is None and not candidate["revision"]:
            candidate["revision"] = export_revision(sources.get(candidate["chat"]["model"], ""))
    return EvaluateConfig.model_validate({**config.model_dump(include=set(JobSettings.model_fields)), **evaluate})


def export_revision(source: str) -> str:
    """A served training export's identity (its manifest: model, steps, data), so the evaluation's answer
    cache asks a retrained model again under the same served name; "" for any other source."""
    import hashlib

    for name in (EXPORT_MANIFEST, CURRENT):  # a local export's manifest; on an object store, its version pointer
        try:
            text = storage.read_text(storage.join(source, name)) if source else None
        except OSError:  # FileNotFoundError included: not an export
            continue
        if text:
            return f"export-{hashlib.sha1(text.encode()).hexdigest()[:12]}"
    return ""


def _evaluate(config: EvaluateConfig, _pipeline: PipelineConfig) -> StageResult:
    from ultrachat.evaluation.run import run_evaluate

    counts = run_evaluate(config)
    return StageResult(counts, artifacts={"evaluation_report": counts["report"]})


def _chat(base_url: str, config: ServeConfig, settings: PipelineServe) -> dict:
    """One chat completion through the official OpenAI client, as any user of the API would send it."""
    import openai

    from ultrachat.serving.run import api_key

    model = config.models[0].name
    client = openai.OpenAI(base_url=base_url, api_key=api_key(config) or "none", timeout=300, max_retries=2)
    logger.info("asking %s: %r", model, settings.chat.prompt)
    response = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": settings.chat.prompt}],
        max_tokens=settings.chat.max_tokens, temperature=settings.chat.temperature)
    return {"prompt": settings.chat.prompt, "reply": response.choices[0].message.content,
            "finish_reason": response.choices[0].finish_reason,
            "usage": response.usage.model_dump() if response.usage else None}


def _absolute(path: str) -> str:
    return path if storage.is_uri(path) else os.path.abspath(path)


_RUNNERS = {"generate": _generate, "stats": _stats, "train": _train, "preferences": _preferences, "dpo": _dpo,
            "serve": _serve, "evaluate": _evaluate}


def _example_dialogue(dialogues_dir: str, width: int = 240) -> list[str]:
    """The report's lines for one kept dialogue (the longest), each turn shortened to ``width``."""
    table = read_records(dialogues_dir, ["id", "sector", "status", "messages"], DIALOGUE_SCHEMA)
    kept = [row for row in table.to_pylist() if row["status"] == "kept"]
    if not kept:
        return []
    row = max(kept, key=lambda r: (len(r["messages"]), r["id"]))
    lines = [f"  {'one dialogue:':18} {row['id']} (sector {row['sector']}, {len(row['messages']) // 2} rounds)"]
    for message in row["messages"]:
        text = " ".join(message["content"].split())
        text = text if len(text) <= width else text[:width - 3] + "..."
        lines.append(f"    {message['role']:>9}: {text}")
    return lines


_REPORTED_METRICS = ("step", "loss", "eval_loss", "reward_accuracy", "reward_margin", "eval_reward_accuracy",
                     "eval_reward_margin")


def _report(artifacts: dict, results: dict[str, StageResult]) -> str:
    lines = [f"  {name + ':':18} {value}" for name, value in artifacts.items()
             if value and name != "resolved_configs"]
    lines.append(f"  {'resolved configs:':18} {', '.join(artifacts['resolved_configs'])}")
    if "generate" in results:
        counts = results["generate"].counts
        statuses = {k[len('status_'):]: v for k, v in counts.items() if k.startswith("status_")}
        lines.append(f"  {'dialogues:':18} {counts['dialogues']} {statuses}")
        lines += _example_dialogue(counts["dialogues_dir"]) if "dialogues_dir" in counts else []
    if "stats" in results:
        head = results["stats"].counts["overall"]
        lines.append(f"  {'data quality:':18} avg turns {head['avg_turns']}, avg utterance tokens "
                     f"{head['avg_utterance_tokens']}, MTLD {head['mtld']}, topic similarity {head['topic_similarity']}"
                     f" (the paper's table beside it: {results['stats'].counts['report']})")
    if "preferences" in results:
        counts = results["preferences"].counts
        lines.append(f"  {'preference pairs:':18} {counts['pairs']} from {counts['prompts']} prompts "
                     f"(binarized: {counts['binarize']}; ratings {counts['calls']['ratings']})")
    for stage in ("train", "dpo"):
        final = results[stage].counts.get("final_metrics") if stage in results else None
        if final:
            shown = ", ".join(f"{key} {final[key]:.4g}" for key in _REPORTED_METRICS if final.get(key) is not None)
            lines.append(f"  {stage + ' at the end:':18} {shown}")
    if "serve" in results:
        serve = results["serve"].counts
        state = "stopped" if serve["stopped"] else "still serving"
        lines.append(f"  {'model served:':18} {serve['models'][0]} at {serve['base_url']} ({state})")
        lines.append(f"  {'prompt:':18} {serve['prompt']}")
        lines.append(f"  {'reply:':18} {serve['reply']!r}")
    if "evaluate" in results:
        head = dict(results["evaluate"].counts["headline"])
        parsed = head.pop("judge_parsed")
        shown = "; ".join(f"{name} {value}" for name, value in head.items())
        lines.append(f"  {'model quality:':18} {shown} (judge verdicts parsed {parsed}; "
                     f"{results['evaluate'].counts['report']})")
    return "\n".join(lines)

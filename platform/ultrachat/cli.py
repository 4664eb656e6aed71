"""The `ultrachat` command. Every job subcommand prints one JSON summary as its last stdout line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ultrachat.config import JOB_SCHEMAS
from ultrachat.errors import ConfigError
from ultrachat.job import EXIT_BAD_INPUT, EXIT_FAILED, run_job
from ultrachat.local_env import apply_local_env_defaults
from ultrachat.logs import setup_logging

logger = logging.getLogger("ultrachat.cli")



def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ultrachat",
        description="UltraChat on Ray: generate dialogues, fine-tune UltraLLaMA, serve it.",
        epilog="Jobs take --config FILE plus key.path=value overrides, e.g. "
               "`ultrachat generate --config configs/generate/local.yaml output_dir=/tmp/run1`.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for job in JOB_SCHEMAS:
        p = sub.add_parser(job, help=f"run the {job} job (see configs/{job}/)")
        p.add_argument("--config", required=True, help="YAML config file")
        p.add_argument("overrides", nargs="*", metavar="key.path=value", help="override config keys")
    check = sub.add_parser("check-config", help="validate a config and print it fully resolved")
    check.add_argument("--config", required=True)
    check.add_argument("--job", choices=sorted(JOB_SCHEMAS), help="default: the config's folder name")
    check.add_argument("overrides", nargs="*", metavar="key.path=value")
    tiny = sub.add_parser("tiny-model", help="build a tiny LLaMA model + tokenizer offline (HF format)")
    tiny.add_argument("--out", required=True, help="output directory (new or empty)")
    tiny.add_argument("--size", choices=["tiny", "small"], default="tiny")
    tiny.add_argument("--seed", type=int, default=0)
    sub.add_parser("doctor", help="check versions and imports on the driver and every Ray node")
    return parser


def _emit(summary: dict) -> None:
    # The machine-readable last line of stdout, for scripts and `ray job logs`.
    sys.stdout.flush()
    sys.stdout.write(json.dumps(summary, default=str) + "\n")
    sys.stdout.flush()


def _run_job(args) -> int:
    summary, code = run_job(args.command, args.config, args.overrides)
    # run_job disconnected from Ray first: Ray forwards its processes' output to ours until then, and
    # the summary must stay the last line. (Apps deployed with detach live on in the cluster.)
    _emit(vars(summary))  # shallow: counts may nest Counters, which asdict would rebuild wrongly
    return code


def _check_config(args) -> int:
    from ultrachat.config import dump_yaml, load_config

    job = args.job or Path(args.config).parent.name
    if job not in JOB_SCHEMAS:
        logger.error("cannot tell which job %s is for; pass --job (one of %s)", args.config, sorted(JOB_SCHEMAS))
        return EXIT_BAD_INPUT
    try:
        config = load_config(job, args.config, args.overrides)
    except ConfigError as err:
        logger.error("%s", err)
        return EXIT_BAD_INPUT
    sys.stdout.write(dump_yaml(config))
    return 0


def _tiny_model(args) -> int:
    from ultrachat.models.tiny import build_tiny_model

    out = build_tiny_model(args.out, size=args.size, seed=args.seed)
    _emit({"job": "tiny-model", "status": "succeeded", "output": str(out), "size": args.size, "seed": args.seed})
    return 0


def _doctor(args) -> int:
    from ultrachat.config.schema import RaySettings
    from ultrachat.doctor import check_cluster
    from ultrachat.ray_runtime import init_ray, shutdown_ray

    try:
        ray_info = init_ray(RaySettings(), "doctor")
        report = check_cluster()
    finally:
        shutdown_ray()
    status = "succeeded" if not report["problems"] else "failed"
    # Auth off beyond loopback is a warning, not a failure: the cluster works, it is only exposed.
    warnings = [ray_info["auth_warning"]] if ray_info.get("auth_warning") else []
    _emit({"job": "doctor", "status": status, "output": None, "ray": ray_info, "warnings": warnings, **report})
    return 0 if status == "succeeded" else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not os.environ.get("RAY_ADDRESS"):
        # Before any job module imports ray: some of these are read once, at `import ray`.
        apply_local_env_defaults()
    setup_logging("INFO")
    if args.command in JOB_SCHEMAS:
        return _run_job(args)
    handlers = {"check-config": _check_config, "tiny-model": _tiny_model, "doctor": _doctor}
    try:
        return handlers[args.command](args)
    except Exception as err:
        logger.error("%s", err, exc_info=not isinstance(err, (ValueError, RuntimeError, OSError)))
        _emit({"job": args.command, "status": "failed", "error": f"{type(err).__name__}: {err}"})
        return EXIT_FAILED

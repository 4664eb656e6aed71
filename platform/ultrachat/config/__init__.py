"""Typed job configs: YAML + ``a.b=value`` overrides, validated all at once (see loader.py)."""

from ultrachat.config.loader import dump_yaml, load_config, parse_override
from ultrachat.config.schema import JOB_SCHEMAS, JobSettings

__all__ = ["JOB_SCHEMAS", "JobSettings", "dump_yaml", "load_config", "parse_override"]

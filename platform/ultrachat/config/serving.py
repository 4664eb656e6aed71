"""Config of serving: which models, on what resources, behind which HTTP guard.

One ``ServedModel`` becomes one Ray Serve deployment running a vLLM engine and vLLM's own OpenAI
layer in-process (see serving/model_server.py). With several models a router in front sends each
request to the deployment named by its ``model`` field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from ultrachat.config.base import EnvVarName, Section
from ultrachat.models.source import check_model_ref
from ultrachat.storage import check_path, is_uri

REMOTE_MODEL_SCHEMES = ("s3://", "gs://", "file://")
# Ports Serve may give direct-ingress replicas on one node, from direct_port up.
DIRECT_PORTS = 100


def check_served_source(ref: str) -> str:
    """A model reference, or a URI of a model dir that each replica copies to local disk first.

    Absolute paths are not checked here: the config may be built on a node without the volume the
    replicas mount (a RayService's head); the replica checks, and `ultrachat serve` checks locally.
    """
    if ref.startswith(REMOTE_MODEL_SCHEMES):
        if len(ref.split("://", 1)[1].strip("/")) == 0:
            raise ValueError(f"{ref!r} names no folder; give the model dir, e.g. s3://bucket/run/export")
        return check_path(ref)
    if "://" in ref:
        raise ValueError(f"unsupported scheme in {ref!r}; use one of {list(REMOTE_MODEL_SCHEMES)}, "
                         f"a local model dir, a hub id, tiny:<size> or local:<name>")
    if ref.startswith("/"):
        return ref
    return check_model_ref(ref)


ServedSource = Annotated[str, AfterValidator(check_served_source)]


def check_chat_template(value: str) -> str:
    """auto / ultrachat / model, or a template file: a local path or a URI (read by each replica)."""
    return check_path(value) if is_uri(value) else value


def check_keys_file(path: str) -> str:
    # The guard re-reads the file whenever it changes (rotation without a restart); that needs a
    # local file, which is what a Kubernetes Secret mounted as a volume is.
    if is_uri(path):
        raise ValueError(f"{path!r} is a URI, but the API keys file must be a local file (it is re-read when it "
                         f"changes); fix: mount the keys as a file (e.g. a Kubernetes Secret volume) and give its "
                         f"path, or put them in an environment variable named by auth.keys_env")
    return path


class Autoscaling(Section):
    """Ray Serve autoscaling of one model's replicas (each replica is one vLLM engine)."""

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    # Ongoing requests per replica that Serve aims for; a vLLM engine batches, so this is high.
    target_ongoing_requests: float = Field(default=32, gt=0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})")
        return self


class ServedModel(Section):
    name: str = Field(min_length=1, pattern=r"^[\w.:/-]+$", description="the `model` clients send")
    source: ServedSource = Field(description="training export dir, HF model dir or hub id, tiny:<size>, local:<name>, "
                                             "or s3:// / gs:// / file:// URI of a model dir")
    # auto: the template saved with the model (a training export saves its training template) when
    # there is one, else the UltraChat format; ultrachat: always the UltraChat format; model: the
    # model's own, an error if it has none; any other value is a path or URI of a Jinja template file.
    chat_template: Annotated[str, AfterValidator(check_chat_template)] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int = Field(default=2048, ge=16)
    tensor_parallel_size: int = Field(default=1, ge=1)
    # Further vLLM engine arguments by their AsyncEngineArgs names, e.g. {gpu_memory_utilization: 0.9}.
    engine_kwargs: dict[str, Any] = {}
    accelerator: Literal["cpu", "gpu"] = "cpu"
    num_cpus_per_replica: float = Field(default=1, ge=0)
    autoscaling: Autoscaling = Autoscaling()
    # Requests one replica works on at once (vLLM batches them); beyond it the replica answers 429.
    max_ongoing_requests: int = Field(default=64, ge=1)
    # Requests Serve holds for busy replicas before answering 503; -1 = no bound (clients wait).
    max_queued_requests: int = Field(default=64, ge=-1)

    @model_validator(mode="after")
    def _engine_kwargs_not_duplicated(self):
        typed = {"model", "served_model_name", "chat_template", "dtype", "max_model_len", "tensor_parallel_size"}
        clash = sorted(typed & set(self.engine_kwargs))
        if clash:
            raise ValueError(f"engine_kwargs repeats {clash}: set them as this model's own keys instead")
        return self


class ApiAuth(Section):
    """Optional API keys: from an environment variable and/or a mounted file (a Kubernetes Secret)."""

    # Variable holding one key or several separated by commas.
    keys_env: EnvVarName | None = None
    # File with one key per line (blank lines and # comments ignored); re-read when it changes.
    keys_file: Annotated[str, AfterValidator(check_keys_file)] | None = None
    # Paths answered without a key, e.g. for load-balancer and Kubernetes probes.
    public_paths: list[str] = ["/health"]

    @property
    def enabled(self) -> bool:
        return bool(self.keys_env or self.keys_file)


class ServeStage(Section):
    models: list[ServedModel] = Field(min_length=1)
    host: str = "127.0.0.1"
    # Serve's HTTP proxy listens here.
    port: int = Field(default=8000, ge=1, le=65535)
    # proxy: client -> Serve proxy -> ingress replica (one Ray hop per stream chunk). direct: Ray
    # Serve direct ingress, the ingress replica serves HTTP itself (from direct_port up, one port per
    # replica on a node; HAProxy in front on a cluster). Measured at 32 streams: direct 1.19-1.73x a
    # bare vLLM server's tokens/s here, proxy 0.62-0.69x (docs/benchmarks.md). direct needs
    # RAY_SERVE_ENABLE_DIRECT_INGRESS=1 (or RAY_SERVE_ENABLE_HA_PROXY=1) in the cluster's environment;
    # a locally started Ray gets it from the job.
    ingress: Literal["proxy", "direct"] = "proxy"
    direct_port: int = Field(default=30000, ge=1, le=65535 - DIRECT_PORTS)
    auth: ApiAuth = ApiAuth()
    # Larger request bodies get 413 before anything parses them.
    max_request_bytes: int = Field(default=2 * 2**20, ge=1024)
    # false: `ultrachat serve` blocks until Ctrl-C and then shuts the app down; true: it deploys,
    # waits until ready and exits, leaving the app running on the cluster (like `serve deploy`).
    detach: bool = False
    ready_timeout_s: float = Field(default=600, gt=0)

    def local_ray_env(self) -> dict[str, str]:
        """Environment a locally started Ray needs for this config (read by Serve's controller)."""
        if self.ingress != "direct":
            return {}
        return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
                "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(self.direct_port),
                "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(self.direct_port + DIRECT_PORTS - 1),
                # The 30 s default gives a cluster's load balancer time to deregister a stopping
                # replica; a local Ray has none, so Ctrl-C need not wait for it.
                "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}

    @model_validator(mode="after")
    def _unique_names(self):
        names = [model.name for model in self.models]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"models: names must be unique, {repeated} repeats")
        return self

    @model_validator(mode="after")
    def _ports_apart(self):
        if self.ingress == "direct" and self.direct_port <= self.port <= self.direct_port + DIRECT_PORTS - 1:
            raise ValueError(f"port {self.port} lies in the direct-ingress port range {self.direct_port}-"
                             f"{self.direct_port + DIRECT_PORTS - 1}; move direct_port or port")
        return self

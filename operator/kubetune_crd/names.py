"""Every name and format that two kubetune processes share, owned here and nowhere else.

The API writes labels and annotations the operator and the tests read; the operator mounts
volumes at paths the trainer writes to; the API echoes, the operator expects and the trainer
stores the same model name, path, URI and format. When each computed these itself they
drifted, so each lives here once and every other module imports it.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timezone

# --- Labels and annotations -------------------------------------------------------------
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubetune"
LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT_TRAINER = "trainer"
LABEL_FINETUNEJOB = "kubetune.io/finetunejob"
"""On the Job, its pods and Services: the FineTuneJob they belong to."""
LABEL_ALIAS = "kubetune.io/alias"
"""On a pointer-publishing Job and its pod: the ModelAlias it publishes."""
COMPONENT_PUBLISHER = "publisher"
COMPONENT_PREFLIGHT = "preflight"
"""On the CPU pre-flight Job and its pod (the trainer's Job and pods say `trainer`)."""
LABEL_CREATED_BY = "kubetune.io/created-by"
CREATED_BY_API = "kubetune-api"
LABEL_IDEMPOTENCY = "kubetune.io/idempotency-key-hash"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
"""Kueue's LocalQueue label: the Job is created suspended for Kueue to admit."""

COMPONENT_METRICS = "metrics"
"""On a FineTuneJob's metric history ConfigMap (with LABEL_FINETUNEJOB)."""
METRICS_DATA_KEY = "history.json"
"""The key of the metric history in its ConfigMap (kubetune_crd.metric_history's JSON)."""


def metrics_configmap_name(job_name: str) -> str:
    """The ConfigMap holding a FineTuneJob's metric history (written by the operator)."""
    return f"{job_name}-metrics"


ANNOTATION_UID = "kubetune.io/finetunejob-uid"
ANNOTATION_JOB_ID = "kubetune.io/job-id"
ANNOTATION_IDEMPOTENCY_KEY = "kubetune.io/idempotency-key"
ANNOTATION_REQUEST_HASH = "kubetune.io/request-hash"
ANNOTATION_REQUEST = "kubetune.io/request"
ANNOTATION_OPENAI = "kubetune.io/openai"
"""The OpenAI-compatible route's own fields (suffix, hyperparameters as asked)."""

# --- The trainer pod -----------------------------------------------------------------------
TRAINER_CONTAINER = "trainer"
VOLUME_MODELS = "models"
VOLUME_DATA = "data"
VOLUME_OUTPUT = "output"
VOLUME_TMP = "tmp"
VOLUME_CACHE = "cache"
VOLUME_SHM = "dshm"
VOLUME_PROGRESS_TOKEN = "progress-token"  # noqa: S105 - a volume name

MODELS_MOUNT = "/var/lib/kubetune/models"
DATA_MOUNT = "/var/lib/kubetune/datasets"
"""The data PVC, read-only: the data root relative dataset paths resolve against."""
OUTPUT_MOUNT = "/var/lib/kubetune/output"
"""Another claim named by a PVC output (not the models claim)."""
CACHE_MOUNT = "/var/cache/kubetune"
TMP_MOUNT = "/tmp"  # noqa: S108 - an emptyDir: the root filesystem is read-only
SHM_MOUNT = "/dev/shm"  # noqa: S108 - a memory emptyDir
TOKEN_DIR = "/var/run/secrets/kubetune/progress"  # noqa: S105 - a path
TOKEN_FILE = "token"  # noqa: S105 - a file name
HF_HOME = f"{MODELS_MOUNT}/.cache/huggingface"
"""Downloaded base models are shared by every job through the models volume."""

DEFAULT_MODELS_CLAIM = "kubetune-models"
DEFAULT_DATA_CLAIM = "kubetune-data"
DEFAULT_MODELS_PATH = "models"
"""Directory inside the models claim that holds the models (the original API's `models/`)."""
CHECKPOINTS_DIR = ".checkpoints"
MODEL_MANIFEST = "kubetune-model.json"
"""Written last into every stored model: its presence means the model is complete."""

# --- Distributed training (torchrun's PET_* variables, as Kubeflow Trainer sets them) -----
ENV_NNODES = "PET_NNODES"
ENV_NPROC_PER_NODE = "PET_NPROC_PER_NODE"
ENV_NODE_RANK = "PET_NODE_RANK"
ENV_MASTER_ADDR = "PET_MASTER_ADDR"
ENV_MASTER_PORT = "PET_MASTER_PORT"
DEFAULT_MASTER_PORT = 29500
ENV_SHUTDOWN_TIMEOUT = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"
"""torch's: how long the launcher lets workers checkpoint after SIGTERM before killing them.
The operator sets it a margin below the pod's termination grace period."""
SHUTDOWN_MARGIN_SECONDS = 15
"""What the launcher keeps of the grace period to write the termination message and exit."""
JOB_COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
"""Set by an Indexed Job in each pod: the node rank."""

# --- Job ids (the original API's `ft_YYYYMMDD_HHMMSS_xxxxxx`) <-> FineTuneJob names -------
JOB_ID_RE = re.compile(r"^ft_(\d{8})_(\d{6})_([a-z0-9]{6})$")
JOB_NAME_RE = re.compile(r"^ft-(\d{8})-(\d{6})-([a-z0-9]{6})$")
DNS_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")
"""Names kubectl users may pick for a FineTuneJob (DNS-1123, at most 53 characters)."""
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


def new_job_id(now: datetime | None = None, suffix: str | None = None) -> str:
    """A fresh id in the original API's form: UTC time and 6 random [a-z0-9] characters."""
    when = (now or utc_now()).astimezone(timezone.utc)
    if suffix is None:
        suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(6))
    tail = suffix
    job_id = f"ft_{when:%Y%m%d_%H%M%S}_{tail}"
    if not JOB_ID_RE.match(job_id):
        raise ValueError(f"not a valid job id: {job_id!r}")
    return job_id


PREFLIGHT_SUFFIX = "-preflight"


def preflight_job_name(name: str) -> str:
    """The CPU pre-flight Job of FineTuneJob `name` (<= 53 + 10 = 63 characters)."""
    return f"{name}{PREFLIGHT_SUFFIX}"


def job_id_to_name(job_id: str) -> str | None:
    """The FineTuneJob name for a job id (`_` -> `-`); None when the id names no resource.

    The hyphenated form is a name, never an id, so each resource has exactly one id.
    """
    if JOB_ID_RE.match(job_id):
        return job_id.replace("_", "-")
    if JOB_NAME_RE.match(job_id):
        return None
    if DNS_NAME_RE.match(job_id):
        return job_id
    return None


def name_to_job_id(name: str) -> str:
    """The job id the API shows for a FineTuneJob name (kubectl names are their own id)."""
    if JOB_NAME_RE.match(name):
        return name.replace("-", "_")
    return name


# --- The output model ------------------------------------------------------------------------
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
MODEL_NAME_MAX = 128
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""A model's directory / prefix name (spec.output.modelName, the registry, pointers)."""
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
"""An object name (RFC 1123 subdomain): a FineTuneJob's, so its FineTunedModel's."""
_PREFIX_MAX = 60
_SUFFIX_MAX = 40


def _safe(text: str) -> str:
    return _UNSAFE_NAME_CHARS.sub("-", text).strip("-._")


def default_model_name(model: str, job_name: str, suffix: str | None = None) -> str:
    """The model's directory name when the spec names none.

    `<model alias or last path part>-finetuned[-<suffix>]-<tail>`, where the tail of a job
    created through the API (`ft-20240115-103045-abc123`) is the original API's
    `20240115_103045-abc123` and any other job's tail is its name. Filesystem-safe, at most
    128 characters, and the same whoever computes it (API echo, operator, trainer).
    """
    base = (_safe(model.rstrip("/").rsplit("/", 1)[-1]) or "model")[:_PREFIX_MAX]
    match = JOB_NAME_RE.match(job_name)
    tail = f"{match.group(1)}_{match.group(2)}-{match.group(3)}" if match else job_name
    middle = f"-{_safe(suffix)[:_SUFFIX_MAX]}" if suffix and _safe(suffix) else ""
    return f"{base}-finetuned{middle}-{tail}"[:MODEL_NAME_MAX]


FORMAT_LORA = "peft-lora"
FORMAT_FULL = "safetensors"
MERGED_SUFFIX = "+merged"


def model_format(method: str, merge_adapter: bool = False) -> str:
    """`peft-lora` (adapter), `peft-lora+merged` (adapter and merged weights) or `safetensors`."""
    if method == "full":
        return FORMAT_FULL
    return FORMAT_LORA + (MERGED_SUFFIX if merge_adapter else "")


@dataclass(frozen=True)
class ModelLocation:
    """Where a stored model lives: `path` inside its claim (PVC output only) and its URI."""

    path: str | None
    uri: str


def pvc_model_location(claim: str, models_path: str, model_name: str) -> ModelLocation:
    """`<models_path>/<name>` (the original API's `model_path`), `pvc://<claim>/<path>`."""
    path = f"{models_path.strip('/')}/{model_name}"
    return ModelLocation(path=path, uri=f"pvc://{claim}/{path}")


def s3_model_location(prefix_uri: str, model_name: str) -> ModelLocation:
    """`s3://bucket/prefix/<name>`; an S3 model has no path on a claim."""
    return ModelLocation(path=None, uri=f"{prefix_uri.rstrip('/')}/{model_name}")


def checkpoint_subdir(namespace: str, job_name: str) -> str:
    """Checkpoints of one job, relative to the volume that keeps them (so a new pod resumes)."""
    return f"{CHECKPOINTS_DIR}/{namespace}/{job_name}"


# --- Time -------------------------------------------------------------------------------------
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""RFC 3339 in UTC with second precision, as the apiserver stores `metav1.Time`."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def format_time(when: datetime) -> str:
    """`2024-01-15T10:30:45Z` (a naive datetime is taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime(TIME_FORMAT)


def now_rfc3339() -> str:
    return format_time(utc_now())


def parse_time(value: str | None) -> datetime | None:
    """An aware datetime from RFC 3339 / ISO 8601 text (naive means UTC); None if unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# --- World size and effective batch (the operator's status, the API's echo, the trainer) ------


def processes_per_node(gpus: int) -> int:
    """Training processes in one pod: one per GPU, or one CPU process for `gpus: 0`."""
    return gpus if gpus > 0 else 1


def world_size(nodes: int, gpus: int) -> int:
    """Training processes in the run: nodes x processes per node."""
    return nodes * processes_per_node(gpus)


def effective_batch_size(batch_size: int, gradient_accumulation_steps: int, world: int) -> int:
    """Sequences per optimizer step: per-process batch x accumulation steps x world size."""
    return batch_size * gradient_accumulation_steps * world


# --- FineTuneSchedule runs (the operator creates them; the API's run-now too) ----------------
LABEL_SCHEDULE = "kubetune.io/schedule"
"""On each FineTuneJob a FineTuneSchedule started: the schedule's name."""
ANNOTATION_SCHEDULED_TIME = "kubetune.io/scheduled-time"
"""The slot (RFC 3339, UTC) a schedule's FineTuneJob ran for; for a run-now, the request time."""
ANNOTATION_SCHEDULE_TRIGGER = "kubetune.io/schedule-trigger"
TRIGGER_SCHEDULE = "schedule"
TRIGGER_MANUAL = "manual"
SCHEDULE_NAME_MAX = 33
"""A schedule's name leaves room for its runs' `-now-YYYYmmddHHMMSS` within 52 characters."""


def scheduled_job_name(schedule: str, slot: datetime) -> str:
    """`<schedule>-YYYYmmddHHMM` (the slot in UTC): one name per slot, whoever creates it."""
    return f"{schedule}-{slot.astimezone(timezone.utc):%Y%m%d%H%M}"


def manual_job_name(schedule: str, when: datetime) -> str:
    """`<schedule>-now-YYYYmmddHHMMSS` (UTC): a run asked for by hand at `when`."""
    return f"{schedule}-now-{when.astimezone(timezone.utc):%Y%m%d%H%M%S}"


# --- Trainer failure messages (the trainer writes them, the operator classifies them) ---------
OUT_OF_MEMORY_MARKERS = ("out of memory", "outofmemoryerror", "cuda oom")
"""A failed trainer whose message holds one of these (lower-cased) ran out of memory: the
trainer starts its out-of-memory messages with the first, the operator reports OutOfMemory."""


# --- Hugging Face Hub sources and the shared model cache (operator env -> trainer) ------------
ENV_HF_TOKEN = "HF_TOKEN"  # noqa: S105 - a variable name (huggingface_hub's own)
"""Filled from the key of the same name in spec.hub.tokenSecretRef's Secret (valueFrom)."""
HF_TOKEN_SECRET_KEY = "HF_TOKEN"  # noqa: S105 - a key name
ENV_HF_ENDPOINT = "HF_ENDPOINT"
"""huggingface_hub's endpoint override (a mirror); the trainer checks its address first."""
ENV_HUB_ALLOW_INTERNAL = "KUBETUNE_HUB_ALLOW_INTERNAL"
""""true": the endpoint may be a loopback or private address (an in-cluster mirror, tests);
link-local and metadata addresses are refused whatever it says."""
VOLUME_MODEL_CACHE = "model-cache"
MODEL_CACHE_MOUNT = "/var/lib/kubetune/model-cache"
"""The shared model cache claim, when the operator has one (KUBETUNE_MODEL_CACHE_CLAIM)."""
DEFAULT_MODEL_CACHE_DIR = f"{MODELS_MOUNT}/.cache/kubetune-hub"
"""Without a cache claim, hf:// models are cached on the models volume instead."""
MODEL_CACHE_MARKER = ".kubetune-complete.json"
"""Written last into a cached model revision: without it the directory is never used."""
CACHE_HIT = "hit"
CACHE_MISS = "miss"

"""Job ids (`ft_YYYYMMDD_HHMMSS_xxxxxx`, the seed's form) <-> FineTuneJob names.

Kubernetes names cannot hold `_`, so the API's id maps to the resource name by swapping `_`
and `-` (DESIGN.md). Resources created with kubectl under any other DNS-1123 name keep their
name as their job id. Both directions are pure and deterministic, and they are inverses:
an id of the seed's form never is a valid name (it holds `_`), and a name of the seed's
hyphenated form always maps back to the underscored id.
"""

from __future__ import annotations

import re
import secrets
import string
from datetime import datetime, timezone

JOB_ID_RE = re.compile(r"^ft_(\d{8})_(\d{6})_([a-z0-9]{6})$")
JOB_NAME_RE = re.compile(r"^ft-(\d{8})-(\d{6})-([a-z0-9]{6})$")
# DNS-1123 subdomain-ish names kubectl users may pick (FineTuneJob names are <= 52 chars).
DNS_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")

_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


def new_job_id(now: datetime | None = None, suffix: str | None = None) -> str:
    """A fresh id in the seed's form, from the UTC time and 6 random [a-z0-9] characters."""
    when = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    tail = (
        suffix
        if suffix is not None
        else "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(6))
    )
    job_id = f"ft_{when:%Y%m%d_%H%M%S}_{tail}"
    if not JOB_ID_RE.match(job_id):
        raise ValueError(f"not a valid job id: {job_id!r}")
    return job_id


def job_id_to_name(job_id: str) -> str | None:
    """The FineTuneJob name for a job id; None when the id can name no resource."""
    if JOB_ID_RE.match(job_id):
        return job_id.replace("_", "-")
    if JOB_NAME_RE.match(job_id):
        return None  # the hyphenated form is a name, never an id: one id per resource
    if DNS_NAME_RE.match(job_id):
        return job_id
    return None


def name_to_job_id(name: str) -> str:
    """The job id the API shows for a FineTuneJob name."""
    if JOB_NAME_RE.match(name):
        return name.replace("-", "_")
    return name


def job_id_timestamp(job_id: str) -> str | None:
    """`YYYYMMDD_HHMMSS` of a seed-form id (used in model directory names)."""
    match = JOB_ID_RE.match(job_id)
    if not match:
        return None
    return f"{match.group(1)}_{match.group(2)}"

"""Idempotency-Key on job creation: same key and body, same 202 and job id; different body, 422.

Keys are per tenant. Everything is recorded in the cluster, so it survives an API restart
and holds across replicas:

* a claim ConfigMap `kubetune-idem-<sha256(tenant, key)[:40]>` in the tenant's namespace
  holds the job id and the request hash. Creating it is the atomic step: of two concurrent
  identical requests, one creates it and the other gets 409 and reads the winner's job id;
* the FineTuneJob carries the key hash as a label, the key and request hash as annotations,
  and its name derives from the claimed job id, so the second creation attempt gets 409 too.

If the API dies between the claim and the FineTuneJob, a retry with the same key finds the
claim and creates the FineTuneJob with the claimed id. The claim is owned by the
FineTuneJob (garbage-collected with it).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kubetune_crd.names import CREATED_BY_API, LABEL_MANAGED_BY, job_id_to_name, new_job_id

from kubetune_api.store.errors import ConflictError
from kubetune_api.views import JobRecord

HEADER = "Idempotency-Key"
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
CLAIM_PREFIX = "kubetune-idem-"
LABEL_CLAIM = "kubetune.io/idempotency"
"""Marks the API's claim ConfigMaps (read by nothing but the API)."""
CLAIM_LABELS = {LABEL_MANAGED_BY: CREATED_BY_API, LABEL_CLAIM: "claim"}


class IdempotencyMismatchError(Exception):
    """The key was used before with a different request body."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def valid_key(key: str) -> bool:
    """Printable ASCII without spaces, 1 to 255 characters."""
    return bool(_KEY_RE.match(key))


def key_hash(tenant: str, key: str) -> str:
    """The hex sha256 of the tenant and the key (a label value: 63 characters kept)."""
    return hashlib.sha256(f"{tenant}\x00{key}".encode()).hexdigest()[:63]


def claim_name(tenant: str, key: str) -> str:
    return CLAIM_PREFIX + key_hash(tenant, key)[:40]


def request_hash(kind: str, payload: dict[str, Any]) -> str:
    """Hash of the normalised request (defaults filled in): equal requests hash equal."""
    canonical = json.dumps(
        {"kind": kind, "request": payload}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class IdempotencyInfo:
    key: str
    key_hash: str
    request_hash: str
    claim: str

    @classmethod
    def build(cls, tenant: str, key: str, req_hash: str) -> IdempotencyInfo:
        return cls(
            key=key,
            key_hash=key_hash(tenant, key),
            request_hash=req_hash,
            claim=claim_name(tenant, key),
        )


class Jobs(Protocol):
    """What the create flow needs of the FineTuneJobs (store.finetunejobs, or a unit test's
    fake)."""

    def create(self, namespace: str, body: dict[str, Any]) -> JobRecord: ...

    def get_direct(self, namespace: str, name: str) -> JobRecord | None: ...

    def by_idempotency(self, namespace: str, key_hash: str) -> JobRecord | None: ...


class Claims(Protocol):
    """What the create flow needs of the claim ConfigMaps (store.claims, or a fake)."""

    def create(
        self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str]
    ) -> None: ...

    def read(self, namespace: str, name: str) -> dict[str, str]: ...

    def own(self, namespace: str, name: str, owner: JobRecord) -> None: ...


@dataclass(frozen=True)
class Created:
    job_id: str
    record: JobRecord | None
    replayed: bool


BuildBody = Callable[[str], dict[str, Any]]
"""job id -> the FineTuneJob object to create (deterministic for a given id and request)."""


def create_job(
    jobs: Jobs,
    claims: Claims,
    namespace: str,
    build: BuildBody,
    idem: IdempotencyInfo | None,
    *,
    make_id: Callable[[], str] = new_job_id,
) -> Created:
    """Create the FineTuneJob (or find the one this idempotency key already made)."""
    if idem is None:
        return _create_with_fresh_id(jobs, namespace, build, make_id)

    existing = jobs.by_idempotency(namespace, idem.key_hash)
    if existing is not None:
        if existing.request_hash != idem.request_hash:
            raise IdempotencyMismatchError(existing.job_id)
        return Created(existing.job_id, existing, replayed=True)

    job_id, replayed = _claim(claims, namespace, idem, make_id())
    name = job_id_to_name(job_id)
    record: JobRecord | None
    try:
        record = jobs.create(namespace, build(job_id))
    except ConflictError:
        # Created by the concurrent twin (or before a restart): it is the same job.
        record = jobs.get_direct(namespace, name) if name else None
        return Created(job_id, record, replayed=True)
    claims.own(namespace, idem.claim, record)
    return Created(job_id, record, replayed=replayed)


def _create_with_fresh_id(
    jobs: Jobs, namespace: str, build: BuildBody, make_id: Callable[[], str]
) -> Created:
    for _ in range(5):
        job_id = make_id()
        try:
            return Created(job_id, jobs.create(namespace, build(job_id)), replayed=False)
        except ConflictError:
            continue  # a random-suffix collision: draw another id
    raise ConflictError("could not find a free job id")


def _claim(claims: Claims, namespace: str, idem: IdempotencyInfo, job_id: str) -> tuple[str, bool]:
    """Claim the key for `job_id`; when it was claimed before, the claimed id (replayed)."""
    data = {"jobId": job_id, "requestHash": idem.request_hash, "idempotencyKey": idem.key}
    try:
        claims.create(namespace, idem.claim, data, CLAIM_LABELS)
    except ConflictError:
        claim = claims.read(namespace, idem.claim)
        if claim.get("requestHash") != idem.request_hash:
            raise IdempotencyMismatchError(claim.get("jobId", "")) from None
        return claim.get("jobId") or job_id, True
    return job_id, False

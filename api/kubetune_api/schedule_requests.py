"""`/api/finetune/schedules`: what a request may say, how it becomes a FineTuneSchedule, and
the answers.

A schedule request is a start request (`StartRequest`: every field, range and check of
`POST /api/finetune/start`) plus when to run it: `name`, `schedule`, `time_zone`, `suspend`,
`concurrency_policy`, `starting_deadline_seconds` and the history limits, each typed from
the contract's `FineTuneScheduleSpec`. `dataset_url` and `model_name` may hold date
placeholders (`{{ .Year }}`...): they are checked as rendered for a sample time with the job
routes' own checks, except that the dataset need not exist yet (next month's file). Every
refusal is a FieldError naming the request field (answered 422).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kubetune_crd import names
from kubetune_crd.base import DNS_LABEL
from kubetune_crd.promotion import PromotionOutcome
from kubetune_crd.resource import API_VERSION, SCHEDULE_KIND
from kubetune_crd.schedule import (
    SAMPLE_TIME,
    TEMPLATE_MODEL_NAME_PATTERN,
    FineTuneScheduleSpec,
    check_placeholders,
    render_placeholders,
)
from pydantic import BaseModel, Field, ValidationError, create_model
from pydantic.alias_generators import to_camel, to_snake

from kubetune_api.deps import AppState
from kubetune_api.idempotency import IdempotencyInfo
from kubetune_api.request_fields import RequestModel, StartRequest, constraints, field_for_error
from kubetune_api.schemas import AliasDecision
from kubetune_api.service import FieldError, build_spec, check_dataset, check_model
from kubetune_api.views import alias_decision

SCHEDULE_FIELDS = (
    "schedule",
    "time_zone",
    "suspend",
    "concurrency_policy",
    "starting_deadline_seconds",
    "successful_jobs_history_limit",
    "failed_jobs_history_limit",
)
"""The request fields that say when (named like the spec's, in snake_case)."""
REQUEST_KIND = "schedule"
"""Hashed with the body for Idempotency-Key checks."""


def _when_field(name: str) -> tuple[Any, Any]:
    """(annotation, Field) of a schedule field, read from the contract. The cron expression
    and the time zone are checked by the contract's validators (their messages are clearer
    than a pattern's)."""
    info = FineTuneScheduleSpec.model_fields[name]
    kwargs = constraints(info, pattern=name not in ("schedule", "time_zone"))
    default = ... if info.is_required() else info.get_default()
    return info.annotation, Field(default, description=info.description, **kwargs)


if TYPE_CHECKING:
    _ScheduleRequestFields = StartRequest
else:
    _ScheduleRequestFields = create_model(
        "ScheduleRequestFields",
        __base__=StartRequest,
        name=(
            str,
            Field(
                ...,
                pattern=DNS_LABEL,
                max_length=names.SCHEDULE_NAME_MAX,
                description="The schedule's name; each run is named <name>-<slot time>.",
            ),
        ),
        model_name=(
            str | None,
            Field(
                None,
                max_length=256,
                pattern=TEMPLATE_MODEL_NAME_PATTERN,
                description="Each run's model directory; may hold date placeholders.",
            ),
        ),
        **{name: _when_field(name) for name in SCHEDULE_FIELDS},
    )


class ScheduleRequest(_ScheduleRequestFields):
    """`POST /api/finetune/schedules`: a start request, plus when to run it.

    `dataset_url` and `model_name` may use `{{ .Year }}`, `{{ .Month }}`, `{{ .MonthAbbr }}`,
    `{{ .Day }}`, `{{ .Hour }}`, `{{ .Minute }}`, `{{ .PrevMonthYear }}`, `{{ .PrevMonth }}`
    and `{{ .PrevMonthAbbr }}`: the scheduled time in `time_zone`.
    """


class SuspendRequest(RequestModel):
    """`PATCH /api/finetune/schedules/{name}`: suspend (true) or resume (false)."""

    suspend: bool = Field(description="No new runs while true (a running one goes on).")


# -- from the request to the object -----------------------------------------------------------
def _placeholders(req: ScheduleRequest) -> None:
    for field in ("dataset_url", "model_name"):
        value = getattr(req, field)
        if value is not None:
            try:
                check_placeholders(value)
            except ValueError as exc:
                raise FieldError(field, str(exc), value) from None


def _template(req: ScheduleRequest, state: AppState) -> dict[str, Any]:
    """The job template: the start request's spec, checked as rendered for a sample time."""
    settings = state.settings
    _placeholders(req)
    check_model(req.model, state.catalog, settings)
    sample_url = render_placeholders(req.dataset_url, SAMPLE_TIME)
    not_yet = settings.model_copy(update={"check_dataset_exists": False})
    dataset = check_dataset(sample_url, req.dataset_format, not_yet, state.resolver)
    if dataset.url != sample_url:
        raise FieldError(
            "dataset_url",
            f"write the dataset URL as stored ({dataset.url!r} for {sample_url!r})",
            req.dataset_url,
        )
    sample_name = render_placeholders(req.model_name, SAMPLE_TIME) if req.model_name else None
    sample = req.model_copy(update={"dataset_url": sample_url, "model_name": sample_name})
    spec = build_spec(sample, dataset, settings)
    template = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    template["dataset"]["url"] = req.dataset_url
    if req.model_name:
        template["output"]["modelName"] = req.model_name
    return template


def schedule_spec(req: ScheduleRequest, state: AppState) -> FineTuneScheduleSpec:
    """The schedule's spec (FieldError, naming the request field, when it is refused)."""
    body = {to_camel(name): getattr(req, name) for name in SCHEDULE_FIELDS}
    body["jobTemplate"] = _template(req, state)
    try:
        return FineTuneScheduleSpec.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err.get("loc", ()))
        message = f"{'.'.join(str(p) for p in loc)}: {err.get('msg')}"
        field = field_for_error(loc[1:]) if loc[:1] == ("jobTemplate",) else to_snake(str(loc[0]))
        raise FieldError(field, message) from None


def schedule_object(
    req: ScheduleRequest,
    spec: FineTuneScheduleSpec,
    payload: dict[str, Any],
    idem: IdempotencyInfo | None,
) -> dict[str, Any]:
    """The FineTuneSchedule to create (the request and Idempotency-Key recorded on it)."""
    annotations = {names.ANNOTATION_REQUEST: json.dumps(payload, sort_keys=True)}
    if idem is not None:
        annotations[names.ANNOTATION_IDEMPOTENCY_KEY] = idem.key
        annotations[names.ANNOTATION_REQUEST_HASH] = idem.request_hash
    return {
        "apiVersion": API_VERSION,
        "kind": SCHEDULE_KIND,
        "metadata": {
            "name": req.name,
            "labels": {names.LABEL_CREATED_BY: names.CREATED_BY_API},
            "annotations": annotations,
        },
        "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
    }


# -- answers ------------------------------------------------------------------------------------
class ScheduleView(BaseModel):
    """One schedule: what it runs, when, and how its runs went."""

    name: str
    schedule: str
    time_zone: str
    suspend: bool
    concurrency_policy: str
    starting_deadline_seconds: int | None
    successful_jobs_history_limit: int
    failed_jobs_history_limit: int
    model: str
    dataset_url: str = Field(description="With its date placeholders, as each run renders it.")
    model_name: str | None = None
    job_template: dict[str, Any] = Field(description="The FineTuneJob spec of each run.")
    created: str | None = None
    ready: bool | None = Field(
        default=None, description="Valid and not suspended (unknown until the operator saw it)."
    )
    reason: str | None = Field(default=None, description="Why not ready: Suspended, Invalid...")
    message: str | None = None
    next_run: str | None = None
    last_schedule_time: str | None = None
    last_run: str | None = Field(default=None, description="The latest run's job id.")
    last_run_time: str | None = None
    last_result: str | None = None
    last_promotion: AliasDecision | None = Field(
        default=None, description="The latest finished run's promotion decision."
    )
    last_successful_time: str | None = None
    active: list[str] = Field(default_factory=list, description="Job ids of unfinished runs.")
    run_count: int = 0
    skipped_count: int = 0
    missed_count: int = 0


def schedule_view(obj: dict[str, Any]) -> ScheduleView:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    template = spec.get("jobTemplate") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return ScheduleView(
        name=str(meta.get("name")),
        schedule=str(spec.get("schedule")),
        time_zone=str(spec.get("timeZone", "UTC")),
        suspend=bool(spec.get("suspend", False)),
        concurrency_policy=str(spec.get("concurrencyPolicy", "Forbid")),
        starting_deadline_seconds=spec.get("startingDeadlineSeconds"),
        successful_jobs_history_limit=int(spec.get("successfulJobsHistoryLimit", 3)),
        failed_jobs_history_limit=int(spec.get("failedJobsHistoryLimit", 1)),
        model=str(template.get("model")),
        dataset_url=str((template.get("dataset") or {}).get("url")),
        model_name=(template.get("output") or {}).get("modelName"),
        job_template=template,
        created=meta.get("creationTimestamp"),
        ready=None if ready is None else ready.get("status") == "True",
        reason=None if ready is None or ready.get("status") == "True" else ready.get("reason"),
        message=status.get("message"),
        next_run=status.get("nextScheduleTime"),
        last_schedule_time=status.get("lastScheduleTime"),
        last_run=names.name_to_job_id(status["lastRunName"]) if status.get("lastRunName") else None,
        last_run_time=status.get("lastRunTime"),
        last_result=status.get("lastResult"),
        last_promotion=alias_decision(
            PromotionOutcome.model_validate(status["lastPromotion"])
            if status.get("lastPromotion")
            else None
        ),
        last_successful_time=status.get("lastSuccessfulTime"),
        active=[names.name_to_job_id(a["name"]) for a in status.get("active") or []],
        run_count=int(status.get("runCount", 0)),
        skipped_count=int(status.get("skippedCount", 0)),
        missed_count=int(status.get("missedCount", 0)),
    )


class SchedulesResponse(BaseModel):
    schedules: list[ScheduleView]
    total: int


class RunResponse(BaseModel):
    """`POST /api/finetune/schedules/{name}/run`: the run started now."""

    status: str = "started"
    job_id: str
    schedule: str
    scheduled_time: str = Field(description="The request's time: the placeholders' date.")
    dataset_url: str = Field(description="The dataset URL with its placeholders rendered.")
    model_name: str | None = None


class DeleteResponse(BaseModel):
    name: str
    deleted: bool = True
    jobs_kept: bool = Field(description="The runs were kept (keep_jobs=true); models always are.")

"""The FineTuneSchedule contract: retraining on a cron schedule, like a CronJob of FineTuneJobs.

Typed models of the spec and status (the CRD is generated from them, the API validates
requests with them, the operator reads objects with them), the date placeholders a
`jobTemplate` may use, and the one pure function that turns a schedule and a time into the
FineTuneJob to create (the operator for each slot, the API for "run now").

Placeholders use Go template syntax, as Kubernetes users know it from Helm:
`s3://data/frigo_{{ .Year }}{{ .Month }}.csv`. They are allowed in `dataset.url` and
`output.modelName` only, and render the scheduled time in the schedule's `timeZone`
(`PLACEHOLDERS` lists them). An unknown placeholder is refused by the CRD schema (a pattern
that names the known ones) and, with a clearer message, by these models.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter
from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from kubetune_crd import names
from kubetune_crd.base import CamelModel, StatusModel, StoredObject
from kubetune_crd.promotion import PromotionOutcome
from kubetune_crd.resource import API_VERSION, SCHEDULE_KIND
from kubetune_crd.resource import KIND as JOB_KIND
from kubetune_crd.spec import DatasetSpec, FineTuneJobSpec, OutputSpec
from kubetune_crd.status import Condition

# --- Date placeholders ---------------------------------------------------------------------
_MONTH_ABBR = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def _previous_month(when: datetime) -> datetime:
    return when.replace(day=1) - timedelta(days=1)


PLACEHOLDERS: dict[str, Callable[[datetime], str]] = {
    "Year": lambda t: f"{t.year:04d}",
    "Month": lambda t: f"{t.month:02d}",
    "MonthAbbr": lambda t: _MONTH_ABBR[t.month - 1],
    "Day": lambda t: f"{t.day:02d}",
    "Hour": lambda t: f"{t.hour:02d}",
    "Minute": lambda t: f"{t.minute:02d}",
    "PrevMonthYear": lambda t: f"{_previous_month(t).year:04d}",
    "PrevMonth": lambda t: f"{_previous_month(t).month:02d}",
    "PrevMonthAbbr": lambda t: _MONTH_ABBR[_previous_month(t).month - 1],
}
"""`{{ .Name }}` -> its text for the scheduled time (in the schedule's time zone).

`Prev*` name the month before the scheduled one: a run on December 1st trains on
November's data with `frigo_{{ .PrevMonthAbbr }}{{ .PrevMonthYear }}.csv` (frigo_nov2026.csv).
"""
_KNOWN = "|".join(PLACEHOLDERS)
PLACEHOLDER_RE = re.compile(r"\{\{ *\.(" + _KNOWN + r") *\}\}")
_ANY_BRACES_RE = re.compile(r"\{\{.*?\}\}|\{\{|\}\}")
# The CRD's patterns: text without whitespace or braces, and known placeholders.
_PLACEHOLDER_PATTERN = r"\{\{ *\.(?:" + _KNOWN + r") *\}\}"
TEMPLATE_URL_PATTERN = r"^(?:[^\s{}]|" + _PLACEHOLDER_PATTERN + r")+$"
TEMPLATE_MODEL_NAME_PATTERN = r"^(?:[A-Za-z0-9._-]|" + _PLACEHOLDER_PATTERN + r")+$"
SAMPLE_TIME = datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc)
"""Templates are validated as rendered for this time."""


def check_placeholders(text: str) -> str:
    """`text` when every `{{ ... }}` in it is a known placeholder; else ValueError saying which."""
    for match in _ANY_BRACES_RE.finditer(text):
        token = match.group(0)
        if not PLACEHOLDER_RE.fullmatch(token):
            known = ", ".join(f"{{{{ .{name} }}}}" for name in PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {token!r}; known placeholders: {known}")
    return text


def render_placeholders(text: str, when: datetime) -> str:
    """`text` with each placeholder replaced by its value for `when` (pure)."""
    return PLACEHOLDER_RE.sub(lambda m: PLACEHOLDERS[m.group(1)](when), text)


@functools.cache
def _field_adapter(model: type[CamelModel], field: str) -> TypeAdapter[Any]:
    """A validator of one string field with its constraints (length, pattern), built once."""
    return TypeAdapter(Annotated[(str, *model.model_fields[field].metadata)])


def _rendered_check(model: type[CamelModel], field: str, text: str) -> None:
    """The rendered `text` must satisfy `model.field`'s own constraints (a FineTuneJob's)."""
    rendered = render_placeholders(text, SAMPLE_TIME)
    try:
        _field_adapter(model, field).validate_python(rendered)
    except ValidationError as exc:
        raise ValueError(f"rendered as {rendered!r}: {exc.errors()[0]['msg']}") from None


# --- The job template: a FineTuneJob spec whose two name fields may hold placeholders --------
class TemplateDatasetSpec(DatasetSpec):
    """A FineTuneJob's dataset; `url` may hold date placeholders."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=TEMPLATE_URL_PATTERN,
        description=(
            "Dataset location, as for a FineTuneJob, with optional date placeholders for the "
            "scheduled time: {{ .Year }}, {{ .Month }}, {{ .MonthAbbr }}, {{ .Day }}, "
            "{{ .Hour }}, {{ .Minute }}, {{ .PrevMonthYear }}, {{ .PrevMonth }}, "
            "{{ .PrevMonthAbbr }} (e.g. s3://data/frigo_{{ .Year }}{{ .Month }}.csv)."
        ),
    )

    @field_validator("url", mode="before")
    @classmethod
    def _known_placeholders(cls, value: Any) -> Any:
        return check_placeholders(value) if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _valid_when_rendered(cls, value: str) -> str:
        _rendered_check(DatasetSpec, "url", value)
        return value


class TemplateOutputSpec(OutputSpec):
    """A FineTuneJob's output; `modelName` may hold date placeholders."""

    model_name: str | None = Field(
        default=None,
        max_length=256,
        pattern=TEMPLATE_MODEL_NAME_PATTERN,
        description=(
            "Directory name of each run's model, with optional date placeholders "
            "(e.g. frigo-{{ .Year }}{{ .Month }}); default <model>-finetuned-<run name>."
        ),
    )

    @field_validator("model_name", mode="before")
    @classmethod
    def _known_placeholders(cls, value: Any) -> Any:
        return check_placeholders(value) if isinstance(value, str) else value

    @field_validator("model_name")
    @classmethod
    def _valid_when_rendered(cls, value: str | None) -> str | None:
        if value is not None:
            _rendered_check(OutputSpec, "model_name", value)
        return value


class FineTuneJobTemplate(FineTuneJobSpec):
    """The spec of each FineTuneJob the schedule creates (a FineTuneJob spec, placeholders)."""

    dataset: TemplateDatasetSpec = Field(description="The training data.")
    output: TemplateOutputSpec | None = Field(
        default=None, description="Where each run's model is stored; default: the models PVC."
    )

    @model_validator(mode="after")
    def _not_cancelled(self) -> FineTuneJobTemplate:
        if self.cancel:
            raise ValueError("jobTemplate.cancel must be false (cancel a run, not the template)")
        return self


# --- The schedule ----------------------------------------------------------------------------
CRON_PATTERN = (
    r"^(?:@(?:annually|yearly|monthly|weekly|daily|midnight|hourly)"
    r"|[0-9A-Za-z*?,/#-]+(?: +[0-9A-Za-z*?,/#-]+){4})$"
)
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+./-]*$"
ConcurrencyPolicy = Literal["Forbid", "Replace", "Allow"]
ResultPhase = Literal["Succeeded", "Failed", "Cancelled"]


def cron_error(expression: str) -> str | None:
    """Why `expression` is not a usable 5-field cron expression (or macro); None if it is."""
    if not re.fullmatch(CRON_PATTERN, expression):
        return "not a 5-field cron expression (minute hour day month weekday) or @macro"
    try:
        croniter(expression, SAMPLE_TIME).get_next(datetime)
    except (CroniterError, ValueError, KeyError) as exc:
        return f"invalid cron expression: {exc}"
    return None


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; ValueError when unknown."""
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. Europe/Paris)") from exc


class FineTuneScheduleSpec(CamelModel):
    """Retrain on a schedule: a FineTuneJob from `jobTemplate` at each slot of `schedule`."""

    schedule: str = Field(
        max_length=128,
        pattern=CRON_PATTERN,
        description="Cron expression (minute hour day month weekday), e.g. 0 2 1 * * or @monthly.",
    )
    time_zone: str = Field(
        default="UTC",
        max_length=64,
        pattern=TIME_ZONE_PATTERN,
        description="IANA time zone of the schedule and of the placeholders, e.g. Europe/Paris.",
    )
    suspend: bool = Field(
        default=False, description="No new runs while true (a running one goes on)."
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        default="Forbid",
        description=(
            "When a slot comes while a run is active: Forbid skips the slot, Replace cancels "
            "the active run (its record is kept) and starts the new one, Allow runs both."
        ),
    )
    starting_deadline_seconds: int | None = Field(
        default=None,
        ge=0,
        description=(
            "A slot missed (e.g. while the operator was down) still starts this many seconds "
            "late, once; later it is counted as missed. Unset: the latest missed slot always runs."
        ),
    )
    successful_jobs_history_limit: int = Field(
        default=3, ge=0, le=100, description="Succeeded runs to keep (older ones are deleted)."
    )
    failed_jobs_history_limit: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Failed or cancelled runs to keep. Deleting a run never deletes its model.",
    )
    job_template: FineTuneJobTemplate = Field(
        description="The FineTuneJob spec of each run; dataset.url and output.modelName may "
        "hold date placeholders."
    )

    # "before": these clear messages come first, not the patterns' (the CRD's) own.
    @field_validator("schedule", mode="before")
    @classmethod
    def _valid_cron(cls, value: Any) -> Any:
        error = cron_error(value) if isinstance(value, str) else None
        if error is not None:
            raise ValueError(error)
        return value

    @field_validator("time_zone", mode="before")
    @classmethod
    def _known_zone(cls, value: Any) -> Any:
        if isinstance(value, str):
            zone(value)
        return value


class RunRef(StatusModel):
    """One FineTuneJob of the schedule."""

    name: str = Field(description="The FineTuneJob's name.")
    scheduled_time: str | None = Field(default=None, description="The slot it ran for.")


CONDITION_READY = "Ready"
"""True while the schedule is valid and not suspended; False with the reason otherwise."""


class FineTuneScheduleStatus(StatusModel):
    """Observed state of a FineTuneSchedule."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation last acted on."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Latest conditions.")
    active: list[RunRef] = Field(default_factory=list, description="Runs not finished yet.")
    last_schedule_time: str | None = Field(
        default=None, description="The latest slot that came due (run, skipped or missed)."
    )
    last_run_name: str | None = Field(default=None, description="The latest run created.")
    last_run_time: str | None = Field(default=None, description="When the latest run started.")
    last_successful_time: str | None = Field(
        default=None, description="When the latest successful run finished."
    )
    last_finished_time: str | None = Field(
        default=None, description="When the latest finished run ended (any result)."
    )
    last_promotion: PromotionOutcome | None = Field(
        default=None,
        description="The latest finished run's promotion decision: promoted or kept, both figures.",
    )
    last_result: ResultPhase | None = Field(
        default=None, description="How the latest finished run ended."
    )
    next_schedule_time: str | None = Field(default=None, description="The next slot.")
    run_count: int = Field(default=0, ge=0, description="Runs this schedule started.")
    skipped_count: int = Field(
        default=0, ge=0, description="Slots skipped: suspended, or a run still active (Forbid)."
    )
    missed_count: int = Field(
        default=0,
        ge=0,
        description="Slots that passed without a run (operator down past the starting deadline).",
    )
    message: str | None = Field(default=None, description="One line for humans.")


class FineTuneSchedule(StoredObject):
    """A FineTuneSchedule object as stored by the apiserver."""

    api_version: str = Field(default=API_VERSION)
    kind: str = Field(default=SCHEDULE_KIND)
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FineTuneScheduleSpec
    status: FineTuneScheduleStatus = Field(default_factory=FineTuneScheduleStatus)


# --- One run -----------------------------------------------------------------------------------
def render_job_spec(template: FineTuneJobTemplate, local_time: datetime) -> FineTuneJobSpec:
    """The FineTuneJob spec of the run at `local_time` (placeholders rendered; pure)."""
    spec = template.model_dump(by_alias=True, exclude_unset=True, exclude_none=True, mode="json")
    spec["dataset"]["url"] = render_placeholders(spec["dataset"]["url"], local_time)
    output = spec.get("output") or {}
    if output.get("modelName"):
        output["modelName"] = render_placeholders(output["modelName"], local_time)
    return FineTuneJobSpec.model_validate(spec)


def run_manifest(
    schedule: FineTuneSchedule, when: datetime, manual: bool = False
) -> dict[str, Any]:
    """The FineTuneJob a schedule creates for the slot `when` (or a run-now at `when`).

    Its name derives from the schedule and the time, so each slot has exactly one; it is
    labelled with the schedule's name and owned by the schedule (its uid must be known).
    """
    meta = schedule.metadata
    local_time = when.astimezone(zone(schedule.spec.time_zone))
    spec = render_job_spec(schedule.spec.job_template, local_time)
    name = (names.manual_job_name if manual else names.scheduled_job_name)(meta["name"], when)
    return {
        "apiVersion": API_VERSION,
        "kind": JOB_KIND,
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace"),
            "labels": {names.LABEL_SCHEDULE: meta["name"]},
            "annotations": {
                names.ANNOTATION_SCHEDULED_TIME: names.format_time(when),
                names.ANNOTATION_SCHEDULE_TRIGGER: (
                    names.TRIGGER_MANUAL if manual else names.TRIGGER_SCHEDULE
                ),
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": SCHEDULE_KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": spec.model_dump(by_alias=True, exclude_unset=True, exclude_none=True, mode="json"),
    }

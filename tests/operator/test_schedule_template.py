"""The FineTuneSchedule contract: placeholders, validation of the spec, and the run manifest."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from kubetune_crd import names
from kubetune_crd.schedule import (
    PLACEHOLDERS,
    FineTuneSchedule,
    FineTuneScheduleSpec,
    check_placeholders,
    render_placeholders,
    run_manifest,
)
from kubetune_operator.schedule_reconciler import invalid_reason
from pydantic import ValidationError

UTC = timezone.utc


def spec_body(url: str = "data/frigo.csv", **fields: Any) -> dict[str, Any]:
    template = {"model": "tiny", "dataset": {"url": url}, **fields.pop("template", {})}
    return {"schedule": "0 2 1 * *", "jobTemplate": template, **fields}


def errors(body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        FineTuneScheduleSpec.model_validate(body)
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in info.value.errors()]


def test_placeholders_render_the_time_given() -> None:
    when = datetime(2026, 12, 1, 2, 5, tzinfo=UTC)
    text = "s3://data/frigo_{{ .Year }}{{.Month}}{{ .Day }}-{{ .Hour }}{{ .Minute }}.csv"
    assert render_placeholders(text, when) == "s3://data/frigo_20261201-0205.csv"
    assert render_placeholders("{{ .MonthAbbr }}", when) == "dec"


def test_previous_month_placeholders_cross_the_year() -> None:
    january = datetime(2027, 1, 1, tzinfo=UTC)
    text = "frigo_{{ .PrevMonthAbbr }}{{ .PrevMonthYear }}_{{ .PrevMonth }}.csv"
    assert render_placeholders(text, january) == "frigo_dec2026_12.csv"
    march = datetime(2028, 3, 31, tzinfo=UTC)  # leap year: February has 29 days
    assert render_placeholders("{{ .PrevMonth }}", march) == "02"


def test_unknown_or_malformed_placeholders_are_named() -> None:
    assert check_placeholders("plain/{{ .Year }}.csv") == "plain/{{ .Year }}.csv"
    for bad, shown in [
        ("a_{{ .Yaer }}.csv", "{{ .Yaer }}"),
        ("a_{{ Year }}.csv", "{{ Year }}"),
        ("a_{{ .Year }.csv", "{{"),
        ("a_}}.csv", "}}"),
    ]:
        with pytest.raises(ValueError, match="unknown placeholder") as info:
            check_placeholders(bad)
        assert repr(shown)[1:-1] in str(info.value)
        assert all(f".{name} " in str(info.value) for name in PLACEHOLDERS)


def test_a_valid_spec_with_defaults() -> None:
    spec = FineTuneScheduleSpec.model_validate(spec_body("s3://data/frigo_{{ .Year }}.csv"))
    assert (spec.time_zone, spec.suspend, spec.concurrency_policy) == ("UTC", False, "Forbid")
    assert (spec.successful_jobs_history_limit, spec.failed_jobs_history_limit) == (3, 1)
    assert spec.starting_deadline_seconds is None
    assert spec.job_template.hyperparameters.epochs == 3  # the FineTuneJob defaults


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        (spec_body(schedule="61 * * * *"), "schedule", "out of range"),
        (spec_body(schedule="* * * *"), "schedule", "5-field cron"),
        (spec_body(schedule="0 0 30 2 *"), "schedule", "invalid cron"),
        (spec_body(timeZone="Mars/Olympus_Mons"), "timeZone", "unknown time zone"),
        (spec_body("data/x_{{ .Foo }}.csv"), "jobTemplate.dataset.url", "unknown placeholder"),
        (spec_body("ftp://x/{{ .Year }}.csv"), "jobTemplate.dataset.url", "rendered as"),
        (
            spec_body(
                template={"output": {"modelName": "-{{ .Year }}", "pvc": {"claimName": "m"}}}
            ),
            "jobTemplate.output.modelName",
            "rendered as '-2026'",
        ),
        (
            spec_body(template={"hyperparameters": {"epochs": 99}}),
            "jobTemplate.hyperparameters.epochs",
            "less than or equal to 20",
        ),
        (spec_body(template={"cancel": True}), "jobTemplate", "cancel must be false"),
        (spec_body(concurrencyPolicy="Sometimes"), "concurrencyPolicy", "Forbid"),
        (spec_body(startingDeadlineSeconds=-1), "startingDeadlineSeconds", "greater than"),
    ],
)
def test_invalid_specs_name_the_field(body: dict[str, Any], where: str, says: str) -> None:
    found = errors(body)
    assert any(loc == where and says in msg for loc, msg in found), found


def test_operator_condition_reasons() -> None:
    def reason(body: dict[str, Any]) -> tuple[str, str]:
        with pytest.raises(ValidationError) as info:
            FineTuneSchedule.from_k8s({"metadata": {"name": "s"}, "spec": body})
        return invalid_reason(info.value)

    assert reason(spec_body(schedule="61 * * * *"))[0] == "InvalidSchedule"
    assert reason(spec_body(timeZone="Nowhere/Land"))[0] == "InvalidTimeZone"
    assert reason(spec_body("x_{{ .Foo }}.csv"))[0] == "UnknownPlaceholder"
    found, message = reason(spec_body("ftp://x/{{ .Year }}.csv"))
    assert found == "InvalidTemplate" and message.startswith("spec.jobTemplate.dataset.url:")


def _schedule(**fields: Any) -> FineTuneSchedule:
    return FineTuneSchedule.from_k8s(
        {
            "metadata": {"name": "frigo", "namespace": "team-a", "uid": "uid-1"},
            "spec": spec_body(
                "s3://data/frigo_{{ .PrevMonthAbbr }}{{ .PrevMonthYear }}.csv",
                template={
                    "output": {
                        "modelName": "frigo-{{ .Year }}{{ .Month }}",
                        "pvc": {"claimName": "m"},
                    }
                },
                **fields,
            ),
        }
    )


def test_run_manifest_renders_the_slot_in_the_schedule_time_zone() -> None:
    # 23:30 UTC on November 30th is already December 1st in Paris
    slot = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    run = run_manifest(_schedule(timeZone="Europe/Paris"), slot)
    assert run["metadata"]["name"] == "frigo-202611302330"  # the slot in UTC
    assert run["spec"]["dataset"]["url"] == "s3://data/frigo_nov2026.csv"
    assert run["spec"]["output"]["modelName"] == "frigo-202612"
    assert run["metadata"]["namespace"] == "team-a"
    assert run["metadata"]["labels"] == {names.LABEL_SCHEDULE: "frigo"}
    assert run["metadata"]["annotations"][names.ANNOTATION_SCHEDULED_TIME] == "2026-11-30T23:30:00Z"
    owner = run["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "FineTuneSchedule",
        "frigo",
        "uid-1",
        True,
    )
    # only what the template set (the apiserver defaults the rest, as for any FineTuneJob)
    assert set(run["spec"]) == {"model", "dataset", "output"}


def test_run_manifest_is_the_same_for_the_same_slot_and_distinct_otherwise() -> None:
    schedule = _schedule()
    slot = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    assert run_manifest(schedule, slot) == run_manifest(schedule, slot)
    manual = run_manifest(schedule, datetime(2026, 12, 1, 2, 0, 7, tzinfo=UTC), manual=True)
    assert manual["metadata"]["name"] == "frigo-now-20261201020007"
    assert manual["metadata"]["annotations"][names.ANNOTATION_SCHEDULE_TRIGGER] == "manual"
    assert len(names.manual_job_name("x" * names.SCHEDULE_NAME_MAX, slot)) == 52

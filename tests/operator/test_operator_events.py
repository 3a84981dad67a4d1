"""Events name the object they are about: a FineTuneJob or a FineTuneSchedule."""

from __future__ import annotations

from kubetune_crd.resource import API_VERSION, KIND, SCHEDULE_KIND
from kubetune_operator.events import event_manifest
from kubetune_operator.transitions import Transition

RUN = Transition("Normal", "RunStarted", "slot 2026-12-01T02:00:00Z: FineTuneJob frigo-x")


def _obj(kind: str | None) -> dict[str, object]:
    obj: dict[str, object] = {
        "metadata": {"name": "frigo", "namespace": "team-a", "uid": "u-1", "resourceVersion": "7"}
    }
    if kind:
        obj |= {"apiVersion": API_VERSION, "kind": kind}
    return obj


def test_event_about_a_schedule_names_the_schedule() -> None:
    event = event_manifest(_obj(SCHEDULE_KIND), RUN, "operator-0")
    involved = event["involvedObject"]
    assert (involved["kind"], involved["apiVersion"]) == (SCHEDULE_KIND, API_VERSION)
    assert (involved["name"], involved["namespace"], involved["uid"]) == ("frigo", "team-a", "u-1")
    assert event["metadata"]["namespace"] == "team-a" and event["reason"] == "RunStarted"


def test_event_about_a_finetunejob_without_kind_defaults_to_finetunejob() -> None:
    assert event_manifest(_obj(None), RUN, "operator-0")["involvedObject"]["kind"] == KIND

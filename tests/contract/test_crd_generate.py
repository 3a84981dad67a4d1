"""The committed CRD YAML (FineTuneJob, FineTuneSchedule, FineTunedModel, ModelAlias) is
exactly what the typed models give (`make crds`), and structural."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from kubetune_crd import generate
from kubetune_crd.spec import FineTuneJobSpec


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((f"{path}.{key}", value))
            found += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _walk(value, f"{path}[{i}]")
    return found


FILENAMES = (
    "kubetune.io_finetunejobs.yaml",
    "kubetune.io_finetuneschedules.yaml",
    "kubetune.io_finetunedmodels.yaml",
    "kubetune.io_modelaliases.yaml",
)


def test_committed_crds_match_the_models() -> None:
    assert generate.main(["--check"]) == 0, "CRD YAML is stale: run `make crds`"
    targets = generate.targets()
    assert {(p.parent.parent.name, p.name) for p, _ in targets} == {
        (folder, name) for folder in ("manifests", "kubetune") for name in FILENAMES
    }
    for target, text in targets:
        assert target.read_text() == text
        assert text == generate.render(target.name)


def test_check_reports_drift(tmp_path: Any, monkeypatch: Any) -> None:
    dirs = (tmp_path / "manifests", tmp_path / "chart")
    monkeypatch.setattr(generate, "TARGET_DIRS", dirs)
    monkeypatch.setattr(generate, "REPO", tmp_path)
    assert generate.main(["--check"]) == 1  # nothing written yet
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    for name in FILENAMES:  # each CRD of each copy is checked
        for folder in dirs:
            target = folder / name
            good = target.read_text()
            target.write_text(good + "# edited by hand\n")
            assert generate.main(["--check"]) == 1, target
            target.write_text(good)
    assert generate.main(["--check"]) == 0


@pytest.mark.parametrize("filename", FILENAMES)
def test_schema_is_structural(filename: str) -> None:
    crd = yaml.safe_load(generate.render(filename))
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for path, value in _walk(schema):
        key = path.rsplit(".", 1)[-1]
        assert key not in ("$ref", "anyOf", "$defs", "title"), path
        if key == "additionalProperties":
            assert value is not False, path
    has_status = "status" in schema["properties"]
    assert has_status == (filename != "kubetune.io_finetunedmodels.yaml")  # a record: spec only
    assert version["subresources"] == ({"status": {}} if has_status else {})


def test_job_crd_columns_and_names() -> None:
    crd = yaml.safe_load(generate.render())
    version = crd["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Model"] == ".spec.model"
    assert columns["Phase"] == ".status.phase"
    assert columns["Progress"] == ".status.progress.fraction"
    assert columns["Age"] == ".metadata.creationTimestamp"
    assert crd["spec"]["names"]["shortNames"] == ["ftj"]


def test_schema_carries_validation_and_defaults() -> None:
    spec = yaml.safe_load(generate.render())["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["spec"]
    hp = spec["properties"]["hyperparameters"]["properties"]
    assert hp["epochs"] == {
        **hp["epochs"],
        "minimum": 1,
        "maximum": 20,
        "default": 3,
        "type": "integer",
    }
    assert hp["batchSize"]["maximum"] == 16 and hp["batchSize"]["default"] == 4
    assert hp["learningRate"]["default"] == 2e-5
    assert spec["properties"]["method"]["properties"]["type"]["enum"] == ["lora", "qlora", "full"]
    assert set(spec["required"]) == {"model", "dataset"}
    assert spec["properties"]["output"]["oneOf"] == [{"required": ["pvc"]}, {"required": ["s3"]}]
    assert "description" in spec["properties"]["dataset"]["properties"]["url"]
    # the defaults the apiserver applies equal the model's defaults
    assert (
        FineTuneJobSpec.model_validate(
            {"model": "tiny", "dataset": {"url": "x.csv"}}
        ).hyperparameters.epochs
        == 3
    )


def test_metadata_name_is_limited() -> None:
    schema = yaml.safe_load(generate.render())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["properties"]["metadata"]["properties"]["name"]["maxLength"] == 52


def _schedule_crd() -> dict[str, Any]:
    return dict(yaml.safe_load(generate.render("kubetune.io_finetuneschedules.yaml")))


def test_schedule_crd_columns_and_names() -> None:
    crd = _schedule_crd()
    assert crd["metadata"]["name"] == "finetuneschedules.kubetune.io"
    assert crd["spec"]["names"]["kind"] == "FineTuneSchedule"
    assert crd["spec"]["names"]["shortNames"] == ["fts"]
    version = crd["spec"]["versions"][0]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Schedule"]["jsonPath"] == ".spec.schedule"
    assert columns["Suspend"]["jsonPath"] == ".spec.suspend"
    assert columns["Last Run"]["jsonPath"] == ".status.lastRunTime"
    assert columns["Last Result"]["jsonPath"] == ".status.lastResult"
    # kubectl prints a future date column as <invalid>: the next run is shown as text
    assert columns["Next Run"] == {
        "name": "Next Run",
        "type": "string",
        "jsonPath": ".status.nextScheduleTime",
    }
    name = version["schema"]["openAPIV3Schema"]["properties"]["metadata"]["properties"]["name"]
    # <schedule>-now-YYYYmmddHHMMSS stays within a FineTuneJob name's 52 characters
    assert name["maxLength"] == 33 and 33 + len("-now-20261130064512") == 52


def test_schedule_crd_template_is_the_finetunejob_spec() -> None:
    spec = _schedule_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(spec["required"]) == {"schedule", "jobTemplate"}
    assert spec["properties"]["concurrencyPolicy"]["enum"] == ["Forbid", "Replace", "Allow"]
    assert spec["properties"]["concurrencyPolicy"]["default"] == "Forbid"
    assert spec["properties"]["timeZone"]["default"] == "UTC"
    template = spec["properties"]["jobTemplate"]
    job = yaml.safe_load(generate.render())["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["spec"]
    # the same schema as a FineTuneJob's spec, but for the two fields placeholders may fill
    assert template["properties"]["hyperparameters"] == job["properties"]["hyperparameters"]
    assert template["properties"]["resources"] == job["properties"]["resources"]
    assert template["properties"]["output"]["oneOf"] == job["properties"]["output"]["oneOf"]
    assert set(template["required"]) == set(job["required"])
    url = template["properties"]["dataset"]["properties"]["url"]["pattern"]
    model_name = template["properties"]["output"]["properties"]["modelName"]["pattern"]
    for pattern in (url, model_name):
        assert re.fullmatch(pattern, "frigo_{{ .Year }}{{.Month}}-{{ .PrevMonthAbbr }}")
        assert not re.fullmatch(pattern, "frigo_{{ .Yaer }}")
        assert not re.fullmatch(pattern, "frigo_{{ Year }}")
        assert not re.fullmatch(pattern, "frigo_{{ .Year }")
    assert not re.fullmatch(url, "data/a b.csv")

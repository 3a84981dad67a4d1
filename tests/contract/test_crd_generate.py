"""The committed CRD YAML is exactly what the typed models give (`make crds`), and structural."""

from __future__ import annotations

from typing import Any

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


def test_committed_crds_match_the_models() -> None:
    assert generate.main(["--check"]) == 0, "CRD YAML is stale: run `make crds`"
    for target in generate.TARGETS:
        assert target.read_text() == generate.render()


def test_check_reports_drift(tmp_path: Any, monkeypatch: Any) -> None:
    stale = tmp_path / "crd.yaml"
    stale.write_text("# old\n")
    monkeypatch.setattr(generate, "TARGETS", (stale,))
    monkeypatch.setattr(generate, "REPO", tmp_path)
    assert generate.main(["--check"]) == 1
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0


def test_schema_is_structural() -> None:
    crd = yaml.safe_load(generate.render())
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for path, value in _walk(schema):
        key = path.rsplit(".", 1)[-1]
        assert key not in ("$ref", "anyOf", "$defs", "title"), path
        if key == "additionalProperties":
            assert value is not False, path
    assert version["subresources"] == {"status": {}}
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
    assert spec["properties"]["method"]["properties"]["type"]["enum"] == ["lora", "full"]
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

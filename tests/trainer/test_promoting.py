"""The end of a promoting run (kubetune_trainer.promoting): the decision, the pointer written
on the models volume only when the model wins, and a pointer that cannot be written turning
into "not promoted" with the reason (the stored model is kept, the run does not fail)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubetune_crd.alias_pointer import read_pointer
from kubetune_crd.names import MODEL_MANIFEST
from kubetune_crd.spec import FineTuneJobSpec
from kubetune_crd.status import Metrics, ModelInfo
from kubetune_crd.trainer_contract import ChampionModel, TrainerRunConfig
from kubetune_trainer.promoting import promote


def _cfg(models: Path | None, policy: str, champion: ChampionModel | None = None) -> Any:
    spec = FineTuneJobSpec.model_validate(
        {
            "model": "tiny",
            "dataset": {"url": "data/frigo.jsonl"},
            "promotion": {"alias": "frigo", "policy": policy},
        }
    )
    return TrainerRunConfig(
        job_name="frigo-b",
        namespace="team-a",
        spec=spec,
        base_model="/models/tiny",
        model_name="tiny-frigo-b",
        output_dir=str(models / "models") if models else None,
        checkpoint_dir="/tmp/ckpt",
        pointer_root=str(models) if models else None,
        champion=champion,
    )


def _stored(models: Path, name: str) -> ModelInfo:
    path = f"models/{name}"
    (models / path).mkdir(parents=True)
    (models / path / MODEL_MANIFEST).write_text(json.dumps({"name": name}))
    return ModelInfo(
        name=name, path=path, uri=f"pvc://models/{path}", format="peft-lora", base_model="/tiny"
    )


CHAMPION = ChampionModel(
    alias="frigo", name="tiny-frigo-a", path="models/tiny-frigo-a", format="peft-lora"
)


def test_no_promotion_asked_no_outcome(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "always")
    cfg.spec.promotion = None
    assert promote(cfg, _stored(tmp_path, "tiny-frigo-b"), Metrics()) is None


def test_first_model_of_an_alias_is_promoted_and_pointed_at(tmp_path: Path) -> None:
    model = _stored(tmp_path, "tiny-frigo-b")
    out = promote(_cfg(tmp_path, "if-better"), model, Metrics(bits_per_byte_after=1.4))
    assert out is not None and out.promoted and out.version == 1
    assert (out.model, out.previous, out.challenger_bits_per_byte) == ("tiny-frigo-b", None, 1.4)
    pointer = read_pointer(tmp_path / "aliases" / "frigo.json")
    assert pointer is not None and (pointer.model, pointer.version) == ("tiny-frigo-b", 1)


def test_a_worse_challenger_writes_nothing(tmp_path: Path) -> None:
    model = _stored(tmp_path, "tiny-frigo-b")
    metrics = Metrics(bits_per_byte_after=3.0, champion_bits_per_byte=1.2)
    out = promote(_cfg(tmp_path, "if-better", CHAMPION), model, metrics)
    assert out is not None and not out.promoted and out.version is None
    assert (out.previous, out.champion_bits_per_byte) == ("tiny-frigo-a", 1.2)
    assert "3.0000 >= current 1.2000" in out.reason
    assert not (tmp_path / "aliases").exists()


def test_a_better_challenger_replaces_the_champion(tmp_path: Path) -> None:
    model = _stored(tmp_path, "tiny-frigo-b")
    metrics = Metrics(bits_per_byte_after=1.0, champion_bits_per_byte=1.2)
    out = promote(_cfg(tmp_path, "if-better", CHAMPION), model, metrics)
    assert out is not None and out.promoted and out.previous == "tiny-frigo-a"


def test_a_pointer_that_cannot_be_written_is_not_promoted(tmp_path: Path) -> None:
    model = ModelInfo(
        name="tiny-frigo-b",
        path="models/tiny-frigo-b",
        uri="pvc://m/b",
        format="peft-lora",
        base_model="/t",
    )
    out = promote(_cfg(tmp_path, "always"), model, Metrics(bits_per_byte_after=1.0))
    assert out is not None and not out.promoted  # no complete model there: nothing pointed at
    assert "pointer not written" in out.reason and MODEL_MANIFEST in out.reason
    out = promote(_cfg(None, "always"), model, Metrics())
    assert out is not None and not out.promoted and "no place for alias pointers" in out.reason

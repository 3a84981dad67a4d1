"""Reading and validating CSV / JSONL datasets.

Three row kinds for supervised training, picked from the columns present (the spec names the
columns): `messages` (chat, rendered with the model's chat template), `prompt` + `completion`
(loss on the completion only) and `text`. Preference training (objective dpo) reads a fourth:
`prompt` + `chosen` + `rejected`, as strings or as chat messages (trl's conversational
format: the prompt's messages, then each answer's). Every problem raises BadInputError with a
message a user can act on: the line number, the columns found, what to change.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kubetune_crd.spec import DatasetSpec

from kubetune_trainer.errors import BadInputError

RowKind = Literal["text", "prompt_completion", "messages", "preference"]
FileFormat = Literal["csv", "jsonl"]

MIN_ROWS = 10
CHAT_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


@dataclass(frozen=True)
class Row:
    """One validated row, normalised; `line` is where it starts in the file (1-based)."""

    line: int
    text: str = ""
    prompt: str = ""
    completion: str = ""
    messages: tuple[dict[str, str], ...] = ()
    chosen: str = ""
    rejected: str = ""
    chosen_messages: tuple[dict[str, str], ...] = ()
    rejected_messages: tuple[dict[str, str], ...] = ()

    @property
    def chat(self) -> bool:
        """A conversational preference row (its prompt and answers are messages)."""
        return bool(self.chosen_messages)


@dataclass
class Table:
    """A validated dataset."""

    kind: RowKind
    format: FileFormat
    columns: list[str]
    rows: list[Row] = field(default_factory=list)


def detect_format(name: str, declared: str, head: str) -> FileFormat:
    """The declared format, else the file extension, else a look at the first character."""
    if declared in ("csv", "jsonl"):
        return declared  # type: ignore[return-value]
    lower = name.lower().split("?", 1)[0]
    if lower.endswith((".jsonl", ".ndjson", ".jsonlines", ".json")):
        return "jsonl"
    if lower.endswith((".csv", ".tsv")):
        return "csv"
    return "jsonl" if head.lstrip().startswith("{") else "csv"


def decode(data: bytes, name: str) -> str:
    """UTF-8 text (a BOM is accepted); other encodings fail with the offending line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BadInputError(
            f"dataset {name} is not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}); "
            "re-save it as UTF-8"
        ) from None
    if not text.strip():
        raise BadInputError(f"dataset {name} is empty")
    return text


def _read_jsonl(text: str, name: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    columns: dict[str, None] = {}
    records: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(
                f"dataset {name}: line {number} is not valid JSON ({exc.msg} at column "
                f"{exc.colno}); each line must be one JSON object"
            ) from None
        if not isinstance(value, dict):
            raise BadInputError(
                f"dataset {name}: line {number} is a JSON {type(value).__name__}, "
                'not an object like {"text": "..."}'
            )
        for key in value:
            columns.setdefault(str(key), None)
        records.append((number, value))
    return list(columns), records


def _read_csv(text: str, name: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    csv.field_size_limit(64 * 1024 * 1024)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise BadInputError(f"dataset {name}: cannot read the CSV header ({exc})") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise BadInputError(f"dataset {name}: the first line must name the columns")
    records: list[tuple[int, dict[str, Any]]] = []
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise BadInputError(
                f"dataset {name}: line {reader.line_num} is not valid CSV ({exc}); "
                "quote fields that contain commas, quotes or newlines"
            ) from None
        if not values or (len(values) == 1 and not values[0].strip()):
            start = reader.line_num + 1
            continue
        if len(values) != len(header):
            raise BadInputError(
                f"dataset {name}: line {start} has {len(values)} fields but the header has "
                f"{len(header)} ({', '.join(header)}); quote fields that contain commas"
            )
        records.append((start, dict(zip(header, values, strict=True))))
        start = reader.line_num + 1
    return header, records


def _preference_kind(spec: DatasetSpec, columns: list[str], name: str) -> RowKind:
    found = ", ".join(repr(c) for c in columns) or "none"
    needed = (spec.prompt_column, spec.chosen_column, spec.rejected_column)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise BadInputError(
            f"dataset {name} is not preference data: method.objective dpo needs the columns "
            f"{', '.join(repr(c) for c in needed)} (set dataset.promptColumn, chosenColumn, "
            f"rejectedColumn to use other names); missing {', '.join(repr(c) for c in missing)}; "
            f"columns found: {found}"
        )
    return "preference"


def _kind(spec: DatasetSpec, columns: list[str], name: str, preference: bool) -> RowKind:
    if preference:
        return _preference_kind(spec, columns, name)
    found = ", ".join(repr(c) for c in columns) or "none"
    if spec.messages_column in columns:
        return "messages"
    has_prompt = spec.prompt_column in columns
    has_completion = spec.completion_column in columns
    if has_prompt and has_completion:
        return "prompt_completion"
    if spec.text_column not in columns and {spec.chosen_column, spec.rejected_column} <= set(
        columns
    ):
        raise BadInputError(
            f"dataset {name} holds preference pairs ({spec.chosen_column!r}, "
            f"{spec.rejected_column!r}): train on it with method.objective dpo"
        )
    if has_prompt != has_completion:
        present, missing = (
            (spec.prompt_column, spec.completion_column)
            if has_prompt
            else (spec.completion_column, spec.prompt_column)
        )
        raise BadInputError(
            f"dataset {name} has a {present!r} column but no {missing!r} column; "
            f"columns found: {found}"
        )
    if spec.text_column in columns:
        return "text"
    raise BadInputError(
        f"dataset {name} has none of the expected columns: it needs {spec.text_column!r}, "
        f"{spec.prompt_column!r} and {spec.completion_column!r}, or {spec.messages_column!r} "
        f"(set dataset.textColumn etc. to use other names); columns found: {found}"
    )


def _string(record: dict[str, Any], column: str, number: int, name: str) -> str:
    value = record.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadInputError(f"dataset {name}: line {number} has an empty {column!r}")
    if not isinstance(value, str):
        raise BadInputError(
            f"dataset {name}: line {number}: {column!r} must be a string, "
            f"not {type(value).__name__}"
        )
    return value


def _message_list(value: Any, where: str) -> list[Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BadInputError(f"{where} is not a JSON list of messages") from None
    if not isinstance(value, list) or not value:
        raise BadInputError(f"{where} must be a non-empty list of {{role, content}} messages")
    return value


def _checked_messages(
    value: list[Any], where: str, nonempty: bool = False
) -> tuple[dict[str, str], ...]:
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise BadInputError(f"{where}: message {index} needs a string 'content'")
        if nonempty and not message["content"].strip():
            raise BadInputError(f"{where}: message {index} has an empty 'content'")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise BadInputError(
                f"{where}: message {index} has role {role!r}; "
                f"use one of {', '.join(sorted(CHAT_ROLES))}"
            )
        messages.append({"role": str(role), "content": message["content"]})
    return tuple(messages)


def _messages(value: Any, column: str, number: int, name: str) -> tuple[dict[str, str], ...]:
    where = f"dataset {name}: line {number}: {column!r}"
    messages = _checked_messages(_message_list(value, where), where)
    if not any(m["role"] == "assistant" for m in messages):
        raise BadInputError(f"{where} has no assistant message to learn from")
    return messages


def _is_chat(value: Any) -> bool:
    """A list of messages, or (CSV) a JSON string of one: trl's conversational format."""
    if isinstance(value, str):
        text = value.lstrip()
        if not text.startswith("[{"):
            return False
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return False
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def _preference_row(record: dict[str, Any], spec: DatasetSpec, number: int, name: str) -> Row:
    """One pair: all strings, or all messages (a string prompt becomes the user's message)."""
    columns = (spec.prompt_column, spec.chosen_column, spec.rejected_column)
    if any(_is_chat(record.get(c)) for c in columns[1:]):
        values = []
        for column in columns:
            where = f"dataset {name}: line {number}: {column!r}"
            value = record.get(column)
            if column == spec.prompt_column and isinstance(value, str) and not _is_chat(value):
                value = [{"role": "user", "content": _string(record, column, number, name)}]
            values.append(_checked_messages(_message_list(value, where), where, nonempty=True))
        prompt, chosen, rejected = values
        for column, answer in zip(columns[1:], (chosen, rejected), strict=True):
            if not any(m["role"] == "assistant" for m in answer):
                raise BadInputError(
                    f"dataset {name}: line {number}: {column!r} has no assistant message"
                )
        if chosen == rejected:
            raise _same_answers(spec, number, name)
        return Row(number, messages=prompt, chosen_messages=chosen, rejected_messages=rejected)
    text, good, bad = (_string(record, c, number, name) for c in columns)
    if good.strip() == bad.strip():
        raise _same_answers(spec, number, name)
    return Row(number, prompt=text, chosen=good, rejected=bad)


def _same_answers(spec: DatasetSpec, number: int, name: str) -> BadInputError:
    return BadInputError(
        f"dataset {name}: line {number}: {spec.chosen_column!r} and {spec.rejected_column!r} "
        "are the same answer; a preference pair needs two different answers"
    )


def parse_table(
    data: bytes,
    name: str,
    spec: DatasetSpec,
    min_rows: int = MIN_ROWS,
    *,
    preference: bool = False,
) -> Table:
    """Decode, parse and validate a dataset file's bytes; `preference`: the run's objective is
    dpo, so the rows must be preference pairs (and only then may they be)."""
    text = decode(data, name)
    fmt = detect_format(name, spec.format, text[:64])
    columns, records = _read_jsonl(text, name) if fmt == "jsonl" else _read_csv(text, name)
    kind = _kind(spec, columns, name, preference)
    rows: list[Row] = []
    for number, record in records:
        if kind == "preference":
            rows.append(_preference_row(record, spec, number, name))
        elif kind == "messages":
            value = record.get(spec.messages_column)
            rows.append(Row(number, messages=_messages(value, spec.messages_column, number, name)))
        elif kind == "prompt_completion":
            prompt = _string(record, spec.prompt_column, number, name)
            completion = _string(record, spec.completion_column, number, name)
            rows.append(Row(number, prompt=prompt, completion=completion))
        else:
            rows.append(Row(number, text=_string(record, spec.text_column, number, name)))
    if len(rows) < min_rows:
        raise BadInputError(
            f"dataset {name} has {len(rows)} rows; at least {min_rows} are needed "
            "(some are held out for evaluation)"
        )
    if kind == "preference" and len({row.chat for row in rows}) > 1:
        first = next(row for row in rows if row.chat != rows[0].chat)
        raise BadInputError(
            f"dataset {name}: line {first.line} mixes chat messages and plain strings; "
            f"line {rows[0].line} set the format, use one for every pair"
        )
    return Table(kind=kind, format=fmt, columns=columns, rows=rows)


def load_table(
    path: Path, name: str, spec: DatasetSpec, min_rows: int = MIN_ROWS, *, preference: bool = False
) -> Table:
    """Read and validate a local dataset file; `name` is what messages call it."""
    return parse_table(path.read_bytes(), name, spec, min_rows, preference=preference)

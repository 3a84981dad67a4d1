"""Loading and validation of CSV / JSONL datasets: every bad-data case fails with a message a
user can act on."""

from __future__ import annotations

import json

import pytest
from kubetune_crd.spec import DatasetSpec
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.formats import MIN_ROWS, parse_table
from kubetune_trainer.samples import SAMPLE_FILES, sample_path

SPEC = DatasetSpec(url="data/x.csv")


def jsonl(rows: list[object]) -> bytes:
    return ("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n").encode()


def pc_rows(n: int = MIN_ROWS) -> list[dict[str, str]]:
    return [{"prompt": f"Q{i} ?", "completion": f" R{i}."} for i in range(n)]


SUPERVISED_SAMPLES = [name for name in SAMPLE_FILES if "preference" not in name]


@pytest.mark.parametrize("name", SUPERVISED_SAMPLES)
def test_every_sample_file_is_valid_and_large_enough(name: str) -> None:
    table = parse_table(sample_path(name).read_bytes(), name, SPEC)
    assert len(table.rows) >= 200
    expected = {"training": "prompt_completion", "text": "text", "chat": "messages"}
    assert table.kind == expected[name.split("_")[1].split(".")[0]]
    assert table.format == name.rsplit(".", 1)[1]


def test_kinds_are_detected_from_columns() -> None:
    assert parse_table(jsonl(pc_rows()), "d.jsonl", SPEC).kind == "prompt_completion"
    text = jsonl([{"text": f"ligne {i}"} for i in range(MIN_ROWS)])
    assert parse_table(text, "d.jsonl", SPEC).kind == "text"
    chat = jsonl(
        [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
        * MIN_ROWS
    )
    assert parse_table(chat, "d.jsonl", SPEC).kind == "messages"


def test_custom_column_names() -> None:
    spec = DatasetSpec(url="x.csv", prompt_column="question", completion_column="answer")
    data = b"question,answer\n" + b"".join(b"q%d,a%d\n" % (i, i) for i in range(MIN_ROWS))
    table = parse_table(data, "x.csv", spec)
    assert table.kind == "prompt_completion"
    assert table.rows[0].prompt == "q0" and table.rows[0].completion == "a0"
    assert table.rows[3].line == 5


def test_missing_column_names_the_columns_found() -> None:
    data = b"question,reponse\n" + b"a,b\n" * MIN_ROWS
    with pytest.raises(BadInputError) as err:
        parse_table(data, "data/x.csv", SPEC)
    message = str(err.value)
    assert "'question'" in message and "'reponse'" in message
    assert "'text'" in message and "'prompt'" in message


def test_prompt_without_completion_is_named() -> None:
    data = jsonl([{"prompt": "a"}] * MIN_ROWS)
    with pytest.raises(BadInputError, match="'prompt' column but no 'completion'"):
        parse_table(data, "x.jsonl", SPEC)


@pytest.mark.parametrize("data", [b"", b"   \n\n", b"\xef\xbb\xbf"])
def test_empty_file(data: bytes) -> None:
    with pytest.raises(BadInputError, match="is empty"):
        parse_table(data, "data/x.csv", SPEC)


def test_malformed_json_line_reports_its_number() -> None:
    lines = jsonl(pc_rows()).decode().splitlines()
    lines[6] = '{"prompt": "oops", "completion": '
    with pytest.raises(BadInputError, match="line 7 is not valid JSON"):
        parse_table(("\n".join(lines) + "\n").encode(), "x.jsonl", SPEC)


def test_json_line_that_is_not_an_object() -> None:
    data = jsonl([*pc_rows(), ["a", "b"]])
    with pytest.raises(BadInputError, match="line 11 is a JSON list"):
        parse_table(data, "x.jsonl", SPEC)


def test_wrong_encoding_reports_line() -> None:
    text = "prompt,completion\n" + "".join(f"q{i},réponse {i}\n" for i in range(MIN_ROWS))
    data = text.encode("latin-1")
    with pytest.raises(BadInputError, match=r"not UTF-8 text \(byte 0xe9 at line 2\)"):
        parse_table(data, "x.csv", SPEC)


def test_utf8_bom_is_accepted() -> None:
    data = "\ufeffprompt,completion\n".encode() + b"q,a\n" * MIN_ROWS
    assert parse_table(data, "x.csv", SPEC).columns == ["prompt", "completion"]


def test_too_few_rows() -> None:
    with pytest.raises(BadInputError, match=f"has 3 rows; at least {MIN_ROWS}"):
        parse_table(jsonl(pc_rows(3)), "x.jsonl", SPEC)


def test_csv_row_with_extra_field_reports_its_line() -> None:
    data = b"prompt,completion\n" + b"q,a\n" * 4 + b"q,a,extra\n" + b"q,a\n" * 6
    with pytest.raises(BadInputError, match="line 6 has 3 fields but the header has 2"):
        parse_table(data, "x.csv", SPEC)


def test_csv_multiline_fields_keep_line_numbers() -> None:
    data = b'prompt,completion\n"two\nlines",a\n' + b"q,\n" + b"q,a\n" * MIN_ROWS
    with pytest.raises(BadInputError, match="line 4 has an empty 'completion'"):
        parse_table(data, "x.csv", SPEC)


def test_empty_value_and_wrong_type() -> None:
    rows = pc_rows()
    rows[2]["completion"] = "  "
    with pytest.raises(BadInputError, match="line 3 has an empty 'completion'"):
        parse_table(jsonl(rows), "x.jsonl", SPEC)
    rows = pc_rows()
    rows[4]["prompt"] = 12  # type: ignore[assignment]
    with pytest.raises(BadInputError, match="line 5: 'prompt' must be a string"):
        parse_table(jsonl(rows), "x.jsonl", SPEC)


def test_bad_messages() -> None:
    user_only = [{"messages": [{"role": "user", "content": "a"}]}] * MIN_ROWS
    with pytest.raises(BadInputError, match="no assistant message"):
        parse_table(jsonl(user_only), "x.jsonl", SPEC)
    bad_role = [{"messages": [{"role": "robot", "content": "a"}]}] * MIN_ROWS
    with pytest.raises(BadInputError, match="role 'robot'"):
        parse_table(jsonl(bad_role), "x.jsonl", SPEC)
    with pytest.raises(BadInputError, match="line 2: 'messages' is not a JSON list"):
        parse_table(b"messages\n" + b"not json\n" * MIN_ROWS, "x.csv", SPEC)


def test_format_override_and_sniffing() -> None:
    data = jsonl(pc_rows())
    assert parse_table(data, "data/export.txt", SPEC).format == "jsonl"
    csv_spec = DatasetSpec(url="x", format="csv")
    assert parse_table(b"text\n" + b"bonjour\n" * MIN_ROWS, "x.data", csv_spec).format == "csv"

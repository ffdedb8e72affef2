"""Validation rules, table-driven: each row is one rule, with the field it must name."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from testing.helpers import doc
from watcher.resultfile import SCHEMA_VERSIONS, Problem, ResultFile, explain, utc_instant, validate_bytes


def check(content: bytes | dict[str, Any]) -> ResultFile | list[Problem]:
    raw = json.dumps(content).encode() if isinstance(content, dict) else content
    return validate_bytes(raw)


def fields(result: ResultFile | list[Problem]) -> list[str | None]:
    assert isinstance(result, list), f"expected a rejection, got {result!r}"
    return [p.field for p in result]


def test_valid_document_is_accepted_and_normalised() -> None:
    result = check(doc(model_id="3F2B8C1E-7D4A-4E0B-9A6F-1C2D3E4F5A6B", extra={"any": 1}))
    assert isinstance(result, ResultFile)
    assert result.model_id == "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"
    assert result.issuer == "ana@example.com"
    assert result.experiment_at == "2024-05-01T12:00:00.000000Z"


WHOLE_FILE = [
    (b"", "file is empty"),
    (b"  \n", "file is empty"),
    (b'{"model_id": "3f2b', "not valid JSON: Unterminated string starting at (line 1, column 14)"),
    (b"\xff\xfe{}", "not UTF-8 text: invalid byte at offset 0"),
    (b"[1, 2]", "top level must be a JSON object, not an array"),
    (b'"text"', "top level must be a JSON object, not a string"),
    (b"null", "top level must be a JSON object, not null"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON: nested too deeply"),
    (b"\x00\x01\x02binary", "not valid JSON: Expecting value (line 1, column 1)"),
]


@pytest.mark.parametrize(("raw", "message"), WHOLE_FILE)
def test_whole_file_problems(raw: bytes, message: str) -> None:
    assert check(raw) == [Problem(None, message)]


def test_utf8_bom_is_tolerated() -> None:
    assert isinstance(check(b"\xef\xbb\xbf" + json.dumps(doc()).encode()), ResultFile)


GOOD_UUID = "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"

FIELD_RULES: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, overrides, field named, message fragment)
    ("uuid braces", {"model_id": "{" + GOOD_UUID + "}"}, "model_id", "UUID"),
    ("uuid urn", {"model_id": "urn:uuid:" + GOOD_UUID}, "model_id", "UUID"),
    ("uuid no hyphens", {"model_id": GOOD_UUID.replace("-", "")}, "model_id", "UUID"),
    ("uuid not hex", {"model_id": "zf2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"}, "model_id", "UUID"),
    ("uuid number", {"model_id": 12}, "model_id", "valid string"),
    ("uuid missing", {"model_id": ...}, "model_id", "field required"),
    ("email display name", {"issuer": "Ann <ann@example.com>"}, "issuer", "display name"),
    ("email no at", {"issuer": "ann.example.com"}, "issuer", "e-mail"),
    ("email empty", {"issuer": ""}, "issuer", "e-mail"),
    ("email not string", {"issuer": ["a@example.com"]}, "issuer", "valid string"),
    ("date only", {"experiment_date": "2024-05-01"}, "experiment_date", "RFC 3339"),
    ("no offset", {"experiment_date": "2024-05-01T12:00:00"}, "experiment_date", "RFC 3339"),
    ("no seconds", {"experiment_date": "2024-05-01T12:00Z"}, "experiment_date", "RFC 3339"),
    ("7 fraction digits", {"experiment_date": "2024-05-01T12:00:00.1234567Z"}, "experiment_date", "RFC 3339"),
    ("space separator", {"experiment_date": "2024-05-01 12:00:00Z"}, "experiment_date", "RFC 3339"),
    ("unix number", {"experiment_date": 1714564800}, "experiment_date", "valid string"),
    ("digit string", {"experiment_date": "1714564800"}, "experiment_date", "RFC 3339"),
    ("month 13", {"experiment_date": "2024-13-01T12:00:00Z"}, "experiment_date", "impossible date"),
    ("feb 30", {"experiment_date": "2023-02-30T12:00:00Z"}, "experiment_date", "impossible date"),
    ("hour 25", {"experiment_date": "2024-05-01T25:00:00Z"}, "experiment_date", "impossible date"),
    ("empty thresholds", {"threshold_arr": [], "recall_arr": []}, "threshold_arr", "at least 1"),
    ("thresholds not list", {"threshold_arr": 0.5}, "threshold_arr", "valid list"),
    ("bool element", {"recall_arr": [1.0, 0.9, True, 0.5, 0.0]}, "recall_arr[2]", "valid number"),
    ("string element", {"recall_arr": [1.0, 0.9, "0.5", 0.5, 0.0]}, "recall_arr[2]", "valid number"),
    ("null element", {"threshold_arr": [0.0, None, 0.5, 0.75, 1.0]}, "threshold_arr[1]", "valid number"),
    ("above 1", {"recall_arr": [1.0, 0.9, 1.5, 0.5, 0.0]}, "recall_arr[2]", "less than or equal to 1"),
    ("below 0", {"threshold_arr": [-0.1, 0.25, 0.5, 0.75, 1.0]}, "threshold_arr[0]", "greater than or equal to 0"),
    ("length mismatch", {"recall_arr": [1.0, 0.5]}, "recall_arr", "has 2 values but threshold_arr has 5"),
    ("not increasing", {"threshold_arr": [0.0, 0.5, 0.5, 0.75, 1.0]}, "threshold_arr[2]", "greater than the previous"),
    ("decreasing", {"threshold_arr": [0.0, 0.6, 0.5, 0.75, 1.0]}, "threshold_arr[2]", "greater than the previous"),
]


@pytest.mark.parametrize(("case", "overrides", "field", "fragment"), FIELD_RULES, ids=[r[0] for r in FIELD_RULES])
def test_field_rules(case: str, overrides: dict[str, Any], field: str, fragment: str) -> None:
    result = check(doc(**overrides))
    assert isinstance(result, list), case
    messages = {p.field: p.message for p in result}
    assert field in messages, result
    assert fragment in messages[field]


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_numbers_name_their_element(token: bytes) -> None:
    raw = json.dumps(doc()).replace('"recall_arr": [1.0', '"recall_arr": [__X__').encode().replace(b"__X__", token)
    result = check(raw)
    assert fields(result) == ["recall_arr[0]"]
    assert isinstance(result, list) and "finite number" in result[0].message


@pytest.mark.parametrize(
    "date",
    ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.5+02:00", "2024-05-01t12:00:00.123456z", "2024-05-01T12:00:00-07:30"],
)
def test_rfc3339_forms_accepted(date: str) -> None:
    assert isinstance(check(doc(experiment_date=date)), ResultFile)


def test_instant_not_text_orders_dates() -> None:
    early = check(doc(experiment_date="2024-05-01T12:00:00+02:00"))
    late = check(doc(experiment_date="2024-05-01T11:00:00Z"))
    assert isinstance(early, ResultFile) and isinstance(late, ResultFile)
    assert early.experiment_date > late.experiment_date  # as text, the wrong way round
    assert early.experiment_at < late.experiment_at  # as instants, right


def test_every_problem_reported_not_just_the_first() -> None:
    result = check(doc(model_id="x", issuer="nope", experiment_date="yesterday", recall_arr=[1.0, 2, 0.5, 0.5, "a"]))
    assert fields(result) == ["model_id", "issuer", "experiment_date", "recall_arr[1]", "recall_arr[4]"]


def test_duplicate_keys_are_rejected() -> None:
    raw = json.dumps(doc())[:-1] + ', "issuer": "bob@example.com"}'
    assert fields(check(raw.encode())) == ["issuer"]


@pytest.mark.parametrize(
    "tail",
    [
        ', "issu\\u0065r": "bob@example.com"}',  # the key spelled with an escape
        ', "note": "x", "issuer": "bob@example.com"}',  # given twice, other keys around it
        ', "issuer": "bob@example.com", "issuer": "ana@example.com"}',  # three times
    ],
)
def test_duplicate_keys_are_found_however_written(tail: str) -> None:
    raw = json.dumps(doc())[:-1] + tail
    assert fields(check(raw.encode())) == ["issuer"]


@pytest.mark.parametrize(
    "extra",
    [{}, {"note": "x"}, {"note": 'a "quoted" word'}, {"path": "C:\\runs\\a.json"}, {"nested": {"model_id": "m"}}],
)
def test_the_quick_and_the_thorough_path_agree(extra: dict[str, Any]) -> None:
    # validate_bytes accepts most files without Python's json module; explain() is the reference.
    raw = json.dumps(doc(**extra)).encode()
    assert validate_bytes(raw) == explain(raw)
    assert isinstance(explain(raw), ResultFile)


def test_problem_count_is_capped_with_a_summary() -> None:
    result = check(doc(threshold_arr=["x"] * 200, recall_arr=[0.5] * 200))
    assert isinstance(result, list) and len(result) == 50
    assert result[-1] == Problem(None, "151 more problems not listed")


def test_recall_need_not_be_monotone_and_extra_keys_ignored() -> None:
    assert isinstance(check(doc(recall_arr=[0.2, 0.9, 0.1, 0.95, 0.0], notes="x", n=[1, 2])), ResultFile)


@pytest.mark.parametrize(
    "date",
    [
        "2024-05-01T12:00:00Z", "2024-05-01T12:00:00.5Z", "2024-05-01T12:00:00.123Z", "2024-05-01T12:00:00.123456Z",
        "2024-05-01t12:00:00.1z", "2024-05-01T14:00:00.25+02:00", "2024-12-31T23:30:00-01:00", "2024-05-01T12:00:00z",
    ],
)  # fmt: skip
def test_the_utc_shortcut_agrees_with_date_arithmetic(date: str) -> None:
    instant = datetime.fromisoformat(date.upper()).astimezone(UTC).replace(tzinfo=None)
    assert utc_instant(date) == instant.isoformat(timespec="microseconds") + "Z"


# --- schema_version ---------------------------------------------------------------------------


def test_a_file_without_schema_version_is_version_1() -> None:
    result = check(doc())
    assert isinstance(result, ResultFile) and result.schema_version == 1
    given = check(doc(schema_version=1))
    assert isinstance(given, ResultFile) and given.schema_version == 1


@pytest.mark.parametrize("version", [2, 0, -1, 10**20])
def test_a_version_this_build_does_not_read_is_rejected_with_the_versions_it_reads(version: int) -> None:
    result = check(doc(schema_version=version))
    known = ", ".join(map(str, SCHEMA_VERSIONS))
    assert result == [
        Problem("schema_version", f"version {version} is not supported; this watcher reads version {known}")
    ]


@pytest.mark.parametrize("value", ["1", "1.0", 1.0, True, None, [1], {"major": 1}])
def test_schema_version_is_a_json_integer(value: Any) -> None:
    assert fields(check(doc(schema_version=value))) == ["schema_version"]


def test_schema_version_problems_are_reported_with_every_other_one() -> None:
    result = check(doc(schema_version=2, model_id="nope", recall_arr=[1.0, 2.0, 0.5, 0.2, 0.0]))
    assert sorted(map(str, fields(result))) == ["model_id", "recall_arr[1]", "schema_version"]


@pytest.mark.parametrize(
    "raw",
    [
        # The quick path must not take a repeated optional key (json keeps the last silently).
        b'{"schema_version": 2, "schema_version": 1, "model_id": "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b", '
        b'"issuer": "a@example.com", "experiment_date": "2024-05-01T12:00:00Z", "threshold_arr": [0.0], '
        b'"recall_arr": [1.0]}',
    ],
)
def test_schema_version_given_twice_is_rejected(raw: bytes) -> None:
    assert fields(validate_bytes(raw)) == ["schema_version"]
    assert fields(explain(raw)) == ["schema_version"]

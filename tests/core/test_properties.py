"""Property-based: arbitrary bytes and mutated valid documents never crash validation or judging,
each file gets exactly one outcome, and rejections name the offending field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testing.helpers import doc
from watcher.judge import JudgeOptions, judge
from watcher.outcomes import Rejected, Scored
from watcher.resultfile import Problem, ResultFile, explain, validate_bytes

FIELDS = ["model_id", "issuer", "experiment_date", "threshold_arr", "recall_arr"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def outcome_is_well_formed(result: ResultFile | list[Problem]) -> None:
    if isinstance(result, list):
        assert result, "a rejection carries at least one reason"
        assert all(isinstance(p.message, str) and p.message for p in result)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    outcome_is_well_formed(validate_bytes(raw))


@given(st.sampled_from(FIELDS), json_values)
@pytest.mark.slow
def test_a_replaced_field_is_named_when_rejected(field: str, value: Any) -> None:
    result = validate_bytes(json.dumps(doc(**{field: value})).encode())
    outcome_is_well_formed(result)
    if isinstance(result, list):
        named = {(p.field or "").split("[")[0].split(".")[0] for p in result}
        assert field in named or (field == "threshold_arr" and "recall_arr" in named), result


@given(st.sampled_from(FIELDS))
def test_a_missing_field_is_named(field: str) -> None:
    result = validate_bytes(json.dumps(doc(**{field: ...})).encode())
    assert isinstance(result, list) and Problem(field, "field required") in result


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=400))
def test_fast_path_never_accepts_what_the_thorough_path_rejects(noise: bytes, at: int) -> None:
    text = json.dumps(doc()).encode()
    mutated = text[:at] + noise + text[at + len(noise) :]
    fast = validate_bytes(mutated)
    if isinstance(fast, ResultFile):
        assert isinstance(explain(mutated.removeprefix(b"\xef\xbb\xbf")), ResultFile)


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=500) | st.builds(lambda d: json.dumps(d).encode(), st.builds(doc)))
def test_judge_gives_exactly_one_outcome(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "f.json").write_bytes(content)
    outcome = judge("f.json", JudgeOptions(root=tmp_path, target_recall=0.85, max_file_bytes=10_000))
    assert isinstance(outcome, (Scored, Rejected))
    if isinstance(outcome, Rejected):
        assert outcome.errors

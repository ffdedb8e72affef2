"""The results-file schema and its validation. Pure: bytes in, a model or a list of problems out.

:func:`validate_bytes` is the one entry point: it decodes, parses and validates a whole document
and reports every problem it finds (capped at ``max_errors``), each naming the offending value's
path (``recall_arr[3]``) or ``None`` for a whole-file problem.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

#: Bump when the validation rules change: every stored outcome is re-judged on the next reconcile.
#: (Not bumped for ``schema_version``: a stored file that carried a version other than 1 before
#: the key was read would be judged again only when it changes; no producer wrote the key then,
#: and a bump makes every upgraded host read its whole folder again, at 100,000 files a cold scan.
#: Nor for ``precision_arr`` and ``fpr_arr``, for the same reason: a file stored before they were
#: read gets its precision and FPR (or its rejection for a bad one) when it changes, or at once
#: when ``extra_targets`` or ``extra_pickers`` are set, which changes the rules version.)
RULES_VERSION = 3

#: The results-file format versions this build reads (``schema_version``; a file without it is
#: version 1). An integer, the format's major version: a change an older reader would misread
#: takes a new one; a new optional key does not (unknown keys are ignored).
SCHEMA_VERSIONS = (1,)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# RFC 3339 section 5.6 date-time, with seconds, at most 6 fraction digits, and an explicit offset.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})")


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a file is rejected. ``field`` is a value path, or ``None`` for the whole file."""

    field: str | None
    message: str

    def as_dict(self) -> dict[str, str | None]:
        """The form stored in ``rejections.errors`` and logged."""
        return {"field": self.field, "message": self.message}


def _uuid(value: str) -> str:
    if not _UUID.fullmatch(value):
        raise PydanticCustomError("uuid", "must be a UUID in 8-4-4-4-12 hex form")
    return value.lower()


@functools.lru_cache(maxsize=4096)
def _email_problem(value: str) -> str | None:
    # Cached: a results directory holds thousands of files from a few dozen issuers, and the
    # syntax check (IDNA, unicode classes) is the costliest part of validating a file.
    # Imported on first use: a re-scan that finds nothing new never needs it.
    import email_validator

    try:
        email_validator.validate_email(value, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        return str(exc)
    return None


def _email(value: str) -> str:
    reason = _email_problem(value)
    if reason is not None:
        raise PydanticCustomError("email", "not a valid e-mail address: {reason}", {"reason": reason})
    return value


def _rfc3339(value: str) -> str:
    if not _RFC3339.fullmatch(value):
        raise PydanticCustomError(
            "rfc3339",
            "must be an RFC 3339 date-time with seconds and an offset, such as 2024-05-01T12:00:00.000Z",
        )
    try:
        datetime.fromisoformat(value.upper())
    except ValueError as exc:
        raise PydanticCustomError("rfc3339", "impossible date or time: {reason}", {"reason": str(exc)}) from None
    return value


def _schema_version(value: int) -> int:
    if value not in SCHEMA_VERSIONS:
        known = ", ".join(map(str, SCHEMA_VERSIONS))
        raise PydanticCustomError(
            "schema_version",
            "version {value} is not supported; this watcher reads version {known}",
            {"value": value, "known": known},
        )
    return value


UnitFloat = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class ResultFile(BaseModel):
    """One evaluated model. Strict: no numbers as strings, no booleans as numbers; extra keys ignored.

    Field rules live here; the rules that relate the arrays (same length, thresholds strictly
    increasing) are checked by :func:`curve_problems`, so that they are reported alongside any
    other field's problems. ``precision_arr`` and ``fpr_arr`` are optional; when given, each has
    one value in [0, 1] per threshold (``null`` is the same as leaving the key out).
    """

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    model_id: Annotated[str, AfterValidator(_uuid)]
    issuer: Annotated[str, AfterValidator(_email)]
    experiment_date: Annotated[str, AfterValidator(_rfc3339)]
    threshold_arr: list[UnitFloat] = Field(min_length=1)
    recall_arr: list[UnitFloat] = Field(min_length=1)
    schema_version: Annotated[int, AfterValidator(_schema_version)] = 1
    #: Optional: precision and false positive rate at each threshold (same length and order).
    precision_arr: list[UnitFloat] | None = None
    fpr_arr: list[UnitFloat] | None = None

    @property
    def experiment_at(self) -> str:
        """The experiment instant in UTC, fixed width, so text order is time order."""
        return utc_instant(self.experiment_date)


def utc_instant(date: str) -> str:
    """A valid RFC 3339 date-time as UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    if date[-1] == "Z" and date[10] == "T":
        # Already UTC (the usual case, once per scored file): pad the fraction, no date arithmetic.
        whole, _, fraction = date[:-1].partition(".")
        return f"{whole}.{fraction:0<6}Z"
    instant = datetime.fromisoformat(date.upper()).astimezone(UTC)
    return instant.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


#: The optional arrays, one value per threshold like ``recall_arr``.
OPTIONAL_ARRAYS = ("precision_arr", "fpr_arr")


def curve_problems(
    thresholds: list[float], recalls: list[float], limit: int, others: dict[str, list[float]] | None = None
) -> list[Problem]:
    """Cross-array rules: equal lengths (``recall_arr`` and each of ``others``, the optional arrays
    given), and each threshold greater than the one before."""
    problems: list[Problem] = []
    for name, values in {"recall_arr": recalls, **(others or {})}.items():
        if len(thresholds) != len(values):
            problems.append(Problem(name, f"has {len(values)} values but threshold_arr has {len(thresholds)}"))
    for i in range(1, len(thresholds)):
        if thresholds[i] <= thresholds[i - 1]:
            if len(problems) >= limit:
                break
            problems.append(
                Problem(f"threshold_arr[{i}]", f"must be greater than the previous threshold ({thresholds[i - 1]!r})")
            )
    return problems


def _field_path(loc: tuple[int | str, ...]) -> str | None:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or None


def _reject_constant(name: str) -> float:
    # NaN / Infinity are not JSON; keep them as NaN so validation names the field that holds one.
    return math.nan


class _DuplicateKeys(dict[str, Any]):
    """A JSON object that remembers keys given twice (json keeps the last silently)."""

    duplicates: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = _DuplicateKeys(pairs)
    obj.duplicates = []
    if len(obj) != len(pairs):
        obj.duplicates = [key for key, count in Counter(k for k, _ in pairs).items() if count > 1]
    return obj


def parse_json(raw: bytes) -> tuple[Any, list[Problem]]:
    """Decode UTF-8 (a leading BOM is tolerated) and parse JSON; a whole-file problem on failure."""
    if not raw.strip():
        return None, [Problem(None, "file is empty")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [Problem(None, f"not UTF-8 text: invalid byte at offset {exc.start}")]
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_pairs), []
    except json.JSONDecodeError as exc:
        return None, [Problem(None, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")]
    except RecursionError:
        return None, [Problem(None, "not valid JSON: nested too deeply")]


def validate_document(doc: Any, max_errors: int = 50) -> ResultFile | list[Problem]:
    """Validate a parsed document; every problem is reported, at most ``max_errors`` of them.

    When more problems exist, the last entry says how many were left out.
    """
    if not isinstance(doc, dict):
        return [Problem(None, f"top level must be a JSON object, not {_json_type(doc)}")]
    # Only the schema's own keys matter: other keys are ignored, duplicated or not.
    dups = getattr(doc, "duplicates", [])
    problems = [Problem(key, "key appears more than once") for key in dups if key in ResultFile.model_fields]
    model: ResultFile | None = None
    bad_fields: set[Any] = set()
    try:
        model = ResultFile.model_validate(doc)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        bad_fields = {e["loc"][0] for e in errors if e["loc"]}
        problems += [Problem(_field_path(e["loc"]), _message(e["type"], e["msg"])) for e in errors]
    if not bad_fields & {"threshold_arr", "recall_arr"}:
        others = {k: doc[k] for k in OPTIONAL_ARRAYS if doc.get(k) is not None and k not in bad_fields}
        problems += curve_problems(doc["threshold_arr"], doc["recall_arr"], max_errors, others)
    if not problems:
        assert model is not None
        return model
    if len(problems) > max_errors:
        left_out = len(problems) - (max_errors - 1)
        problems = [*problems[: max_errors - 1], Problem(None, f"{left_out} more problems not listed")]
    return problems


def validate_bytes(raw: bytes, max_errors: int = 50) -> ResultFile | list[Problem]:
    """Parse and validate a whole file's bytes. Never raises for any input.

    A valid file is accepted in one pass through pydantic's JSON parser; anything that pass does
    not accept goes through :func:`explain`, which is authoritative and names every problem.
    """
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    model = _accept_fast(raw)
    return model if model is not None else explain(raw, max_errors)


def explain(raw: bytes, max_errors: int = 50) -> ResultFile | list[Problem]:
    """The thorough path: Python's json module, then the schema; every problem, capped."""
    doc, problems = parse_json(raw)
    if problems:
        return problems
    return validate_document(doc, max_errors)


_BOM = b"\xef\xbb\xbf"
_KEYS = tuple(f'"{name}"'.encode() for name, field in ResultFile.model_fields.items() if field.is_required())
_OPTIONAL_KEYS = tuple(
    f'"{name}"'.encode() for name, field in ResultFile.model_fields.items() if not field.is_required()
)
_MIN_QUOTES = 2 * (len(_KEYS) + 3)  # the keys, and the values of model_id, issuer, experiment_date


def _accept_fast(raw: bytes) -> ResultFile | None:
    # A key given twice is resolved silently by the JSON parser (the last one wins): leave any
    # file where that could be to the thorough path. An escape could spell a key differently
    # (``"model\\u005fid"``), so a backslash anywhere sends the file there too.
    if b"\\" in raw:
        return None
    try:
        model = ResultFile.model_validate_json(raw)
    except ValidationError:
        return None
    # Valid, the file holds at least 8 strings: the 5 required keys and 3 string values. With no
    # escapes, each string is exactly two quote characters, so 16 quotes means nothing else, and no
    # key given twice; with more (optional or extra keys), count each key's spelling.
    if raw.count(b'"') != _MIN_QUOTES and (
        any(raw.count(key) != 1 for key in _KEYS) or any(raw.count(key) > 1 for key in _OPTIONAL_KEYS)
    ):
        return None
    t, r = model.threshold_arr, model.recall_arr
    if len(t) != len(r) or not all(map(operator.lt, t, islice(t, 1, None))):
        return None
    if (model.precision_arr is not None and len(model.precision_arr) != len(t)) or (
        model.fpr_arr is not None and len(model.fpr_arr) != len(t)
    ):
        return None
    return model


def _message(kind: str, msg: str) -> str:
    return "field required" if kind == "missing" else msg


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__

"""Report rendering (exact output) and atomic writing."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.judge import _points_json
from watcher.reports.files import write_atomic, write_reports
from watcher.reports.formats import neutralise, render, render_json, render_table, render_tables
from watcher.schema import POINT_COLUMNS, REGRESSION_REPORT_COLUMNS, REPORT_COLUMNS
from watcher.scoring import Point

_unit = st.floats(0, 1) | st.sampled_from([0, 1])  # validation keeps a whole number as it came

ROWS = [
    ("m1", "a@example.com", 0.5, 0.85, 0.85, 1, "2024-05-01T12:00:00Z", "a,b.json"),
    ("m2", "b@example.com", 0.25, 0.8, 0.85, 0, "2024-05-02T12:00:00Z", "x|y.json"),
]
COLUMNS = [
    "model_id", "issuer", "optimal_threshold", "closest_recall_value", "target_recall", "target_met",
    "experiment_date", "path",
]  # fmt: skip


def as_text(row: tuple[Any, ...]) -> list[Any]:
    """What the CSV and Markdown reports make of a row (the reference for the fast paths)."""
    cells = [("'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v) if isinstance(v, str) else v for v in row]
    cells[5] = "true" if row[5] else "false"
    return cells


def test_csv_round_trips() -> None:
    text = render("csv", ROWS)
    assert text.splitlines()[0] == (
        "model_id,issuer,optimal_threshold,closest_recall_value,target_recall,target_met,experiment_date,path"
    )
    assert text.splitlines()[2] == "m2,b@example.com,0.25,0.8,0.85,false,2024-05-02T12:00:00Z,x|y.json"
    back = list(csv.DictReader(io.StringIO(text)))
    assert back[0]["path"] == "a,b.json" and back[1]["optimal_threshold"] == "0.25" and back[0]["target_met"] == "true"


@pytest.mark.parametrize(
    "odd",
    [
        None,  # every row plain: the formatted fast path
        ("m3", 'o"ne@x.org', 0.1, 0.2, 0.85, 0, "d", "p.json"),  # a quote
        ("m3", "c@x.org", 0.1, 0.2, 0.85, 0, "d", "new\nline.json"),  # a newline
        ("m3", "c@x.org", 0.1, 0.2, 0.85, 0, "d", "cr\r.json"),  # a carriage return
        ("m3", "c@x.org", 0.1, 0.2, 0.85, 0, "d", "a,b.json"),  # a comma
        ("m3", "=2+3@x.org", 0.1, 0.2, 0.85, 0, "d", "p.json"),  # cells a spreadsheet would evaluate
        ("m3", "c@x.org", 0.1, 0.2, 0.85, 0, "d", '=HYPERLINK("http://x.org/?a=1","y").json'),
        ("m3", "+1@x.org", 0.1, 0.2, 0.85, 1, "d", "-x.json"),
        ("m3", "@x", 0.1, 0.2, 0.85, 1, "d", "\tx.json"),
        ("-m3", "c@x.org", 0.1, 0.2, 0.85, 1, "d", "x.json"),
    ],
)
def test_csv_is_what_csv_writer_writes(odd: tuple[Any, ...] | None) -> None:
    plain = [
        (f"m{i}", f"u{i}@\u00e9x.org", i / 7, 1e-07 * i, 0.85, i % 2, "2024-05-01T12:00:00Z", f"d/{i}-=+.json")
        for i in range(2500)
    ]
    rows = plain + ([odd] if odd else []) + plain[:10]  # the odd row in the third chunk of 1000
    reference = io.StringIO()
    csv.writer(reference, lineterminator="\n").writerows([COLUMNS, *map(as_text, rows)])
    assert render("csv", rows) == reference.getvalue()


def test_cells_a_spreadsheet_would_evaluate_are_neutralised_in_csv_and_markdown_only() -> None:
    rows = [("m1", "=2+3@example.com", 0.5, 0.85, 0.85, 1, "2024-05-01T12:00:00Z", '=HYPERLINK("x").json')]
    assert render("csv", rows).splitlines()[1] == (
        'm1,\'=2+3@example.com,0.5,0.85,0.85,true,2024-05-01T12:00:00Z,"\'=HYPERLINK(""x"").json"'
    )
    assert render("markdown", rows).splitlines()[2] == (
        "| m1 | '=2+3@example.com | 0.5 | 0.85 | 0.85 | true | 2024-05-01T12:00:00Z | '=HYPERLINK(\"x\").json |"
    )
    assert json.loads(render("json", rows))[0]["issuer"] == "=2+3@example.com"  # for programs: as stored
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert neutralise(start + "x") == "'" + start + "x"
    assert neutralise("a=b") == "a=b" and neutralise("") == ""


def test_json_keeps_types_and_column_order() -> None:
    data = json.loads(render("json", ROWS))
    assert data[1] == dict(zip(COLUMNS, ROWS[1], strict=True)) and list(data[0]) == COLUMNS
    assert render("json", []) == "[]\n"


def test_json_fast_path_matches_the_encoder() -> None:
    tricky = [
        (
            "m\u00e9",
            'o"ne\\@ex\u00e4mple.com',
            0.30000000000000004,
            1e-07,
            0.85,
            1,
            "2024-05-01T12:00:00Z",
            "n\nl\t.json",
        ),
        ("m2", "=\u2028@x.org", 1.0, 0.0, 1.0, 0, "d", "\U0001f600.json"),
    ]
    fast = render("json", tricky)
    objects = [{**dict(zip(REPORT_COLUMNS, row, strict=True)), "target_met": bool(row[5])} for row in tricky]
    reference = json.dumps(objects, ensure_ascii=False, separators=(",\n", ": "))
    assert fast == "[\n" + reference[1:-1] + "\n]\n"  # the same text as the json module's encoder
    assert json.loads(fast) == objects
    out = io.StringIO()
    render_json(tricky, out, columns=[*"abcdefgh"])  # other columns: the generic path
    assert json.loads(out.getvalue())[1]["h"] == "\U0001f600.json"
    generic = io.StringIO()
    render_json(tricky, generic, columns=[*COLUMNS[:-1], "file"])  # target_met still a boolean
    assert json.loads(generic.getvalue()) == [
        {("file" if k == "path" else k): v for k, v in o.items()} for o in objects
    ]


def test_markdown_escapes_pipes() -> None:
    lines = render("markdown", ROWS).splitlines()
    assert lines[0] == (
        "| model_id | issuer | optimal_threshold | closest_recall_value | target_recall | target_met | experiment_date"
        " | path |"
    )
    assert lines[1] == "|---|---|---|---|---|---|---|---|"
    assert lines[3].endswith("| x\\|y.json |")


def test_table_aligns_numbers_right() -> None:
    lines = render("table", ROWS).splitlines()
    assert lines[0].startswith("model_id  issuer         optimal_threshold")
    assert lines[2].index("0.5") + 3 == lines[3].index("0.25") + 4
    assert lines[2].split()[4:6] == ["0.85", "true"]
    assert render("table", []).splitlines()[-1] == "(no models yet)"
    out = io.StringIO()
    render_table([], out, empty="(no model matches --model x)")
    assert out.getvalue().splitlines()[-1] == "(no model matches --model x)"


def test_write_atomic_replaces_whole_file_with_private_mode(tmp_path: Path) -> None:
    target = tmp_path / "r" / "report.csv"
    write_atomic(target, lambda fh: fh.write("one\n"))
    inode = target.stat().st_ino
    write_atomic(target, lambda fh: fh.write("two\n"))
    assert target.read_text() == "two\n"
    assert target.stat().st_ino != inode  # a new file renamed over the old one
    assert target.stat().st_mode & 0o777 == 0o640
    assert os.listdir(target.parent) == ["report.csv"]  # no temp files left


def test_failed_write_leaves_old_report_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.csv"
    write_atomic(target, lambda fh: fh.write("old\n"))

    def fail(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, lambda fh: fh.write("new\n"))
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["report.csv"]


def test_write_reports_all_formats(tmp_path: Path) -> None:
    paths = write_reports(lambda: iter(ROWS), tmp_path, ["csv", "json", "markdown"])
    assert sorted(p.name for p in paths) == ["report.csv", "report.json", "report.md"]


def test_write_reports_reads_the_rows_once_for_every_format(tmp_path: Path) -> None:
    many = [
        (f"m{i:05}", "ana@example.com", i / 3000, 0.85, 0.85, 1, "2024-05-01T12:00:00Z", f"{i}.json")
        for i in range(2500)
    ]
    calls = []

    def rows() -> Iterator[tuple[Any, ...]]:
        calls.append(1)
        return iter(many)

    write_reports(rows, tmp_path, ["csv", "json", "markdown"])
    assert len(calls) == 1  # one query, several files (chunks cross the 1,000-row boundary)
    for fmt, name in (("csv", "report.csv"), ("json", "report.json"), ("markdown", "report.md")):
        assert (tmp_path / name).read_text() == render(fmt, many)
    assert json.loads((tmp_path / "report.json").read_text())[2499]["model_id"] == "m02499"


def test_write_reports_failure_leaves_every_old_file(tmp_path: Path) -> None:
    write_reports(lambda: iter(ROWS), tmp_path, ["csv", "json"])
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}

    def broken() -> Iterator[tuple[Any, ...]]:
        yield ROWS[0]
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        write_reports(broken, tmp_path, ["csv", "json"])
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before  # no temp files left either


_POINT = st.tuples(
    st.sampled_from(["recall", "max_f1", "youden"]), st.none() | _unit, _unit, _unit,
    st.none() | _unit, st.none() | _unit, st.none() | st.booleans(),
)  # fmt: skip
_CELL = st.sampled_from(["m", "=m", "a b", 'q"q', "c,d", "n\nl", "\u00e9\U0001f600", "-1", "x\\y"])


def _expanded(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The reference: each report row with its stored points text (last) as POINT_COLUMNS rows,
    the text decoded by the json module, ``met`` as true/false."""
    out = []
    for m, i, x, y, t, k, d, q, *_, stored in rows:
        for kind, target, threshold, recall, p, f, met in _points_of(t, x, y, k, stored):
            out.append((m, i, kind, target, threshold, recall, p, f, None if met is None else json.dumps(met), d, q))
    return out


def _points_of(t: float, x: float, y: float, k: int, stored: str | None) -> list[list[Any]]:
    return [["recall", t, x, y, None, None, bool(k)]] if stored is None else list(json.loads(stored))


def _json_reference(rows: list[tuple[Any, ...]]) -> str:
    """The points JSON as the json module writes it: an object per model, its points arrays."""
    objects = [
        f'{{"model_id": {json.dumps(m, ensure_ascii=False)},\n"issuer": {json.dumps(i, ensure_ascii=False)},\n'
        f'"experiment_date": {json.dumps(d, ensure_ascii=False)},\n"path": {json.dumps(q, ensure_ascii=False)},\n'
        f'"points": {json.dumps(_points_of(t, x, y, k, stored), separators=(",", ":"))}}}'
        for m, i, x, y, t, k, d, q, *_, stored in rows
    ]
    return "[\n" + ",\n".join(objects) + "\n]\n" if objects else "[]\n"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(_CELL | st.just("m"), _CELL | st.just("u@x.org"), _unit, _unit, _unit, st.sampled_from([0, 1]),
                  _CELL | st.just("2024-05-01"), _CELL | st.just("a.json"),
                  st.none() | st.lists(_POINT, min_size=1, max_size=4)),
        max_size=30,
    ),
    st.booleans(),
)  # fmt: skip
def test_points_files_cut_from_the_stored_text_are_what_the_decoded_rows_give(
    drawn: list[tuple[Any, ...]], regressions: bool
) -> None:
    """The points files rendered in the report's pass from each file's stored ``point_sets`` text
    (cut as text, no decode) are byte for byte what the decoded rows give through the generic
    templates (themselves held to csv.writer and the encoder above), with and without the
    regression columns; chunks the text paths cannot be sure of fall back to the decoded rows."""
    columns = REGRESSION_REPORT_COLUMNS if regressions else REPORT_COLUMNS
    rows = []
    for n, (m, i, x, y, t, k, d, q, points) in enumerate(drawn * 3):
        stored = None if points is None else _points_json([Point(*p) for p in points])
        extra = (0, "") if regressions else ()
        rows.append((f"{m}{n:05}", i, x, y, t, k, d, q, *extra, stored))
    rows.sort()
    for fmt in ("csv", "markdown"):
        got, reference = io.StringIO(), io.StringIO()
        render_tables(rows, {}, columns, {fmt: got})
        render_tables(_expanded(rows), {fmt: reference}, POINT_COLUMNS)
        assert got.getvalue() == reference.getvalue()
    got = io.StringIO()
    render_tables(rows, {}, columns, {"json": got})
    assert got.getvalue() == _json_reference(rows)
    # And the report files of the same pass are the report rows' own.
    report, alone = io.StringIO(), io.StringIO()
    render_tables(rows, {"csv": report}, columns, {"json": io.StringIO()})
    render_tables([r[:-1] for r in rows], {"csv": alone}, columns)
    assert report.getvalue() == alone.getvalue()


def test_points_files_of_many_chunks_and_of_a_hand_written_text() -> None:
    """Across chunks, and with a stored text the worker did not write (spaces: json.dumps' own
    separators), the points files are still the decoded rows'."""
    rows: list[tuple[Any, ...]] = [
        (f"m{n:05}", "u@x.org", n / 3000, 0.85, 0.85, n % 2, "2024-05-01", f"r/{n}.json",
         None if n % 3 == 0 else json.dumps([["recall", 0.85, n / 3000, 0.85, None, None, True],
                                             ["youden", None, 0.5, 1e-07, 0.25, 0, None]],
                                            separators=(",", ": " if n == 1700 else ":")))
        for n in range(2500)
    ]  # fmt: skip
    got, reference = io.StringIO(), io.StringIO()
    render_tables(rows, {}, REPORT_COLUMNS, {"csv": got})
    render_tables(_expanded(rows), {"csv": reference}, POINT_COLUMNS)
    assert got.getvalue() == reference.getvalue()
    assert got.getvalue().count("youden") == 2500 - 834
    got = io.StringIO()
    render_tables(rows, {}, REPORT_COLUMNS, {"json": got})
    assert got.getvalue() == _json_reference(rows)  # the hand-written text made compact


def test_point_rows_fast_path_matches_csv_writer() -> None:
    """The operating points CSV's template (POINT_COLUMNS) writes what csv.writer writes, with
    None as an empty cell; a chunk with a cell to quote or neutralise goes through csv.writer."""
    plain = [
        (f"m{i}", f"u{i}@\u00e9x.org", ("recall", "max_f1")[i % 2], None if i % 2 else 0.85, i / 7, 1e-07 * i,
         None if i % 3 else i / 11, None if i % 5 else 0.1, None if i % 2 else ("false", "true")[i % 3 % 2],
         "2024-05-01", f"d/{i}.json")
        for i in range(2500)
    ]  # fmt: skip
    for odd in (None, ("=m", 'a"b', "recall", 0.8, 0.5, 0.8, None, None, "true", "d", "p,q")):
        rows = plain + ([odd] if odd else []) + plain[:10]
        reference = io.StringIO()
        csv.writer(reference, lineterminator="\n").writerows(
            [POINT_COLUMNS, *([neutralise(v) if isinstance(v, str) else v for v in row] for row in rows)]
        )
        out = io.StringIO()
        render_tables(rows, {"csv": out}, POINT_COLUMNS)
        assert out.getvalue() == reference.getvalue()

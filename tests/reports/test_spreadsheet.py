"""The CSV report opened by a real spreadsheet engine (LibreOffice, headless): no cell a results
file controls becomes a formula (CSV injection), and the numbers stay numbers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from testing.helpers import doc, write
from watcher.reconcile import scan

SOFFICE = shutil.which("soffice")
NS = {
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
}

pytestmark = [
    pytest.mark.slow,  # a real LibreOffice
    pytest.mark.skipif(
        SOFFICE is None, reason="LibreOffice (soffice) is not installed; .ci/run installs libreoffice-calc-nogui"
    ),
]

#: Valid results files whose text a spreadsheet would evaluate: an issuer that is a valid e-mail
#: address and a formula, and file names that are formulas.
HOSTILE = {
    'a=HYPERLINK("https:example.com","click").json': doc(issuer="=2+3@example.com"),  # ('/' makes folders)
    '=HYPERLINK("https:example.com","click").json': doc(),
    "+1+1.json": doc(issuer="+1@example.com"),
    "-3+4.json": doc(issuer="-x@example.com"),
    "@SUM(1+1).json": doc(),
}


def spreadsheet_cells(csv_file: Path, work: Path) -> list[list[tuple[str, str | None, str | None]]]:
    """Open ``csv_file`` in LibreOffice and save it as ODS; per row, each cell's (text, formula,
    value type)."""
    assert SOFFICE is not None
    profile = work / "lo-profile"  # a profile of its own: never the user's, never shared
    proc = subprocess.Popen(
        [SOFFICE, "--headless", "--norestore", f"-env:UserInstallation={profile.as_uri()}",
         "--convert-to", "ods", "--outdir", str(work), str(csv_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:  # soffice starts children of its own: stop the whole group
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    ods = work / (csv_file.stem + ".ods")
    assert ods.exists(), out.decode(errors="replace")
    with zipfile.ZipFile(ods) as z:
        root = ElementTree.fromstring(z.read("content.xml"))
    rows = []
    for row in root.iter(f"{{{NS['table']}}}table-row"):
        cells = []
        for c in row.iter(f"{{{NS['table']}}}table-cell"):
            cell = ("".join(c.itertext()), c.get(f"{{{NS['table']}}}formula"), c.get(f"{{{NS['office']}}}value-type"))
            cells += [cell] * int(c.get(f"{{{NS['table']}}}number-columns-repeated", "1"))  # equal neighbours
        rows.append(cells)
    return rows


def test_no_cell_of_the_csv_report_becomes_a_formula(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings(report_formats=("csv",))
    for name, content in HOSTILE.items():
        write(settings.watch_dir / name, content)
    summary, _ = scan(settings)
    assert summary.scored == len(HOSTILE)
    rows = spreadsheet_cells(settings.report_dir / "report.csv", tmp_path)
    assert [formula for row in rows for _, formula, _ in row if formula] == []
    header = [text for text, _, _ in rows[0]]
    assert header[:8] == [
        "model_id", "issuer", "optimal_threshold", "closest_recall_value", "target_recall", "target_met",
        "experiment_date", "path",
    ]  # fmt: skip
    body = rows[1 : 1 + len(HOSTILE)]
    # What the reader sees: the text as written, after the quote that keeps it text.
    paths = sorted(row[7][0] for row in body)
    assert paths == sorted(("'" + n if n[0] in "=+-@" else n) for n in HOSTILE)
    assert "'=2+3@example.com" in {row[1][0] for row in body}
    for row in body:  # numbers stay numbers
        assert [row[i][2] for i in (2, 3, 4)] == ["float"] * 3 and row[5][0] == "true", row
        assert row[1][2] == row[7][2] == "string"

"""Writing the report files from the database: the table formats and the HTML page.

A report file is replaced by ``rename(2)`` of a fully written temp file in the same folder
(:func:`atomic_file`), so a reader sees either the old report or the new one, never a torn one.
A page in parts (:mod:`watcher.reports.page`) writes its part files first, named by a new
generation, then the page that names them; older generations go after that rename.

Used by ``watcher scan`` at its end (:func:`refresh_reports`: everything, then return) and by the
daemon's report thread (:mod:`watcher.reports.reporter`: the tables, while the page follows in a process
of its own).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, wait
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TextIO

from watcher.config import Settings
from watcher.logs import get_logger
from watcher.reports.formats import FILE_NAMES, POINT_FILE_NAMES, Row, render_tables
from watcher.reports.page import PART_FOLDER, PartFiles, columns_from_rows, render_html
from watcher.retention import KEEP_NEWEST
from watcher.schema import REGRESSION_REPORT_COLUMNS, REPORT_COLUMNS
from watcher.store import Store
from watcher.timestamps import now_iso

log = get_logger("watcher.publish")

#: The HTML page looks for a model's earlier outcomes among this many newest history entries (the
#: page is rewritten after every change); the daemon's trimming never touches them.
HISTORY_ON_PAGE = KEEP_NEWEST


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o640) -> Iterator[TextIO]:
    """A temp file in ``path``'s folder to write into; on leaving without an error it is made
    durable, ``os.replace``-d over ``path``, and the folder synced (so that the rename itself
    survives a power cut). On any failure the old file stays."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, produce: Callable[[TextIO], object], mode: int = 0o640) -> None:
    """Write ``path`` through :func:`atomic_file`; ``produce(fh)`` writes the content."""
    with atomic_file(path, mode) as fh:
        produce(fh)


def write_reports(
    rows: Callable[[], Iterable[Row]],
    report_dir: Path,
    formats: Sequence[str],
    columns: Sequence[str] = REPORT_COLUMNS,
    point_formats: Sequence[str] = (),
) -> list[Path]:
    """Regenerate each report file in ``report_dir`` (csv, json, markdown) from one pass over
    ``rows()`` (values in ``columns`` order): the query runs once however many formats there
    are. With ``point_formats``, the operating points files of those formats too, in the same
    pass: each row then carries its file's ``point_sets`` text last. Each file is replaced
    atomically."""
    targets = [report_dir / FILE_NAMES[fmt] for fmt in formats]
    point_targets = [report_dir / POINT_FILE_NAMES[fmt] for fmt in point_formats]
    with contextlib.ExitStack() as stack:
        render_tables(
            rows(),
            {fmt: stack.enter_context(atomic_file(t)) for fmt, t in zip(formats, targets, strict=True)},
            columns,
            {fmt: stack.enter_context(atomic_file(t)) for fmt, t in zip(point_formats, point_targets, strict=True)},
        )
    return targets + point_targets


def refresh_reports(
    store: Store,
    settings: Settings,
    changed: bool,
    html_in: Executor | None = None,
    meanwhile: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
) -> bool:
    """Rewrite every report file when something changed or one is missing, and return once all
    are written (``watcher scan``); True if written.

    With ``html_in`` (an executor of other processes) the HTML page is rendered there meanwhile,
    on the other core, from its own read-only connection: the page then shows a committed state
    that may be a commit newer than the tables'. Errors from either side are raised here.
    ``meanwhile()`` is entered around the tables, once the page's process has started (a fork
    must not copy the locks of a thread ``meanwhile`` may start).
    """
    html = "html" in settings.report_formats
    if not (changed or tables_missing(settings) or (html and page_missing(settings))):
        return False
    page = html_in.submit(write_html_file, settings) if html and html_in is not None else None
    try:
        with meanwhile():
            paths = write_tables(store, settings)
            if html and page is None:
                paths.append(write_html(store, settings))
    finally:
        if page is not None:
            wait([page])  # never return (or raise) while the page is still being written
    if page is not None:
        paths.append(page.result())
    log.debug("reports_written", paths=[str(p) for p in paths])
    return True


def tables_missing(settings: Settings) -> bool:
    """True when one of the table formats (CSV, JSON, Markdown) asked for has no file yet."""
    return any(not (settings.report_dir / FILE_NAMES[f]).exists() for f in settings.report_formats if f != "html")


def page_missing(settings: Settings) -> bool:
    """True when the HTML page is asked for and has no file yet."""
    return "html" in settings.report_formats and not (settings.report_dir / FILE_NAMES["html"]).exists()


def write_tables(store: Store, settings: Settings) -> list[Path]:
    """Rewrite the table formats (not the HTML page), all from the same committed state, and the
    operating points files with them (:func:`point_formats`), in one read."""
    tables = [f for f in settings.report_formats if f != "html"]
    if not tables:
        return []
    return _write_tables(store, settings, tables)


def write_points(store: Store, settings: Settings) -> list[Path]:
    """Rewrite the operating points files alone (the daemon splices ``report.*`` apart)."""
    return _write_tables(store, settings, [])


def point_formats(settings: Settings) -> list[str]:
    """The table formats whose operating points file (``points.csv``, ``.json``, ``.md``: one row
    per model and point, POINT_COLUMNS) is written: those asked for, when the settings ask for
    more points than the primary one (with the primary target alone, ``report.*`` says it all and
    no such file is written)."""
    if not (settings.extra_targets or settings.extra_pickers):
        return []
    return [f for f in settings.report_formats if f in POINT_FILE_NAMES]


def _write_tables(store: Store, settings: Settings, tables: Sequence[str]) -> list[Path]:
    points = point_formats(settings)
    if not (tables or points):
        return []
    columns = REGRESSION_REPORT_COLUMNS if settings.regressions else REPORT_COLUMNS
    read = store.report_rows_with_points if points else store.report_rows
    rows = functools.partial(read, regressions=settings.regressions)
    with store.snapshot():
        return write_reports(rows, settings.report_dir, tables, columns, points)


def write_html_file(settings: Settings) -> Path:
    """:func:`write_html` from a read-only connection of its own (runs in another process)."""
    store = Store.open_readonly(settings.db_path)
    try:
        return write_html(store, settings)
    finally:
        store.close()


def write_html(store: Store, settings: Settings) -> Path:
    """Regenerate ``report.html``: every model (up to ``html_max_models``, then the most recent
    ones), their superseded files and earlier outcomes, and every rejection, all read in one read
    transaction (one committed state) that ends before the page is rendered: a reader that holds
    a snapshot keeps the writer's checkpoints from starting the write-ahead log again, so it holds
    one only while it reads."""
    target = settings.report_dir / FILE_NAMES["html"]
    with store.snapshot():
        omitted, older_history = store.page_counts(settings.html_max_models, HISTORY_ON_PAGE)
        if omitted:
            rows = list(store.report_details(settings.html_max_models))
            cols = columns_from_rows(rows)
            if settings.regressions:  # the rows' positions are their order: one per model, by model_id
                why = store.regression_texts([row[5] for row in rows])
                cols["regressed"] = [[i, row[0], row[5], why[row[5]]] for i, row in enumerate(rows) if row[5] in why]
        else:
            cols = store.page_columns(regressions=settings.regressions)
        earlier = [] if omitted else store.earlier_outcomes(HISTORY_ON_PAGE)
        rejections = store.rejection_rows()
    note = (
        f"Only the newest {HISTORY_ON_PAGE:,} history entries were looked at; the table history holds all."
        if older_history
        else ""
    )

    folder = settings.report_dir / PART_FOLDER
    generation = _new_generation(folder)

    def write_part(name: str, text: str) -> None:
        write_atomic(settings.report_dir / name, lambda fh: fh.write(text))

    def produce(fh: TextIO) -> None:
        render_html(cols, rejections, fh, now_iso(), omitted, target=settings.target_recall,
                    earlier=earlier, history_note=note, extra_targets=settings.extra_targets,
                    part_files=PartFiles(generation, write_part, settings.html_part_models))  # fmt: skip

    try:
        write_atomic(target, produce)  # the parts are written (and synced) before the page is renamed
    except BaseException:
        _remove_parts(folder, lambda gen: gen == generation)  # the old page stays, and its parts
        raise
    remove_old_parts(folder, keep=generation)
    return target


def _generation(name: str) -> str:
    """The generation of a part file's name (``GEN-NNNN.js``, or a temp file ``.GEN-NNNN.js.*``)."""
    return name.lstrip(".").split("-", 1)[0]


def _new_generation(folder: Path) -> str:
    """A generation for the parts of the page about to be written: the clock's nanoseconds in 16 hex
    digits (so names sort by age), past any generation already in ``folder``."""
    now = time.time_ns()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            with contextlib.suppress(ValueError):
                now = max(now, int(_generation(entry.name), 16) + 1)
    return f"{now:016x}"


def remove_old_parts(folder: Path, keep: str) -> None:
    """Remove the part files of older pages, once the page of generation ``keep`` is in place: all
    but ``keep``'s and those of the newest generation before it (a page opened just before the
    rename may still be loading those; a page that loses its parts says so and asks for a reload)."""
    with contextlib.suppress(FileNotFoundError):
        older = sorted({g for name in os.listdir(folder) if (g := _generation(name)) < keep})
        kept = {keep, *older[-1:]}
        _remove_parts(folder, lambda gen: gen not in kept)


def _remove_parts(folder: Path, drop: Callable[[str], bool]) -> None:
    """Remove the part files in ``folder`` whose generation ``drop`` says."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if drop(_generation(entry.name)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

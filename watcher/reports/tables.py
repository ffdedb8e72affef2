"""The daemon's table files (CSV, JSON, Markdown), kept current by rendering again only the models
that changed.

Writing every row again after each change costs most of a second at 100,000 models (the report
view read whole, every row formatted), and the report files would lag each change by that much.
So :class:`ReportTables` remembers where each model's row lies in the files it last wrote, reads
and renders only the models that the history names since then, and writes each new file as the
old file's unchanged byte ranges (copied by the kernel) with the new rows between them: the same
bytes as :func:`watcher.reports.files.write_reports` gives from the whole view (a test holds the two
equal). What it keeps in memory is the sorted model_ids and one offset per row and format, not
the rows: about 100 bytes a model.

Which models a change can touch: every change to ``results`` appends to ``history`` in the same
transaction, so the entries after the last write's mark name every path whose row changed since.
A model's report row depends only on the model's own files, so it can change only if a changed
path belonged to it then (the path's last ``scored`` entry up to the mark says so) or belongs to
it now (``results`` says so).

Everything is read again on the first write, when the history is not the one marked (the database
was rebuilt), when a file is not the one written last (removed or replaced by someone else), and
when the changes touch a quarter of the models or more (a whole read is then the cheaper: the
rule is :meth:`SplicedFiles.splice_few`'s, the fleet's table files follow it too).
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import functools
import itertools
import os
from array import array
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from watcher.reports.files import atomic_file
from watcher.reports.formats import FILE_NAMES, TABLE_FORMATS, Row, TableFormat
from watcher.schema import REGRESSION_REPORT_COLUMNS, REPORT_COLUMNS
from watcher.store import Store

_MODEL = REPORT_COLUMNS.index("model_id")
_CHUNK = 1000  # rows rendered at once (the CSV's fast path checks a chunk at a time)
_BUFFER = 1 << 20  # bytes gathered before a write(2)


class _Written(NamedTuple):
    """What identifies a file as the one written last: inode, size, modification time."""

    inode: int
    size: int
    mtime_ns: int


def _identity(st: os.stat_result) -> _Written:
    return _Written(st.st_ino, st.st_size, st.st_mtime_ns)


class SplicedFiles:
    """Table files (``tables``: format -> :class:`~watcher.reports.formats.TableFormat`, written to
    ``targets``), and where each model's row lies in them as of the last write: written whole
    from every row, or spliced (the touched models' rows replaced, the rest copied from the files
    written last). Rows are sequences with the model_id first, in the files sorted by it. What
    reads the rows and knows which models changed is the subclass's: :class:`ReportTables` for the
    daemon, :class:`watcher.fleet.tables.FleetTables` for the fleet's publisher.

    One thread uses it. ``full_reads`` and ``partial_reads`` count how the writes read the database.
    """

    def __init__(self, tables: dict[str, TableFormat], targets: dict[str, Path]) -> None:
        self.formats = list(tables)
        self.tables = tables
        self.targets = targets
        self.order: list[str] = []  # the model_ids in the files, in order
        # Per format: each row's length in bytes with the separator that follows it (the last
        # row's too), so a row starts at the head's length plus the lengths before it. Lengths,
        # not offsets: a splice copies the unchanged runs' entries as they are (a memory copy),
        # where offsets would each have to be shifted in Python, a million of them at a million
        # models (seconds of CPU, the writer thread waiting for the interpreter meanwhile).
        self.lengths: dict[str, array[int]] = {}
        self.heads: dict[str, int] = {}  # each format's head, in bytes
        self.written: dict[str, _Written] = {}
        self.sorted = False
        self.full_reads = self.partial_reads = 0

    def _open_written(self, stack: contextlib.ExitStack) -> dict[str, int] | None:
        """Each file open for reading, if every one is still the file written last; else None."""
        fds: dict[str, int] = {}
        for fmt, target in self.targets.items():
            try:
                fd = stack.enter_context(open(target, "rb")).fileno()  # noqa: SIM115 - the stack closes it
            except OSError:
                return None
            if _identity(os.fstat(fd)) != self.written.get(fmt):
                return None
            fds[fmt] = fd
        return fds

    def splice_few(
        self, touched: set[str], rows_of: Callable[[set[str]], Sequence[Row]], sources: dict[str, int]
    ) -> bool:
        """Splice the rows of the ``touched`` model_ids (``rows_of(touched)`` reads them now) into
        the files written last (open as ``sources``) if they are fewer than a quarter of the
        models; return whether it did. Else a whole write is the cheaper and is the caller's (it
        reads every row its own way). Measured on the fleet's files at 100,000 models: a whole
        write took 0.52 s, splicing 1 / 1,000 / 10,000 / 24,000 models 0.05 / 0.09 / 0.24 / 0.48 s."""
        if 4 * len(touched) >= len(self.order):
            return False
        self._splice(touched, rows_of(touched), sources)
        self.partial_reads += 1
        return True

    def _write_whole(self, rows: Iterable[Row]) -> None:
        """Every file from ``rows`` (sorted by model_id), in one pass over them."""
        order: list[str] = []
        with contextlib.ExitStack() as stack:
            outs = {f: _Out(stack.enter_context(atomic_file(t)).fileno()) for f, t in self.targets.items()}
            lengths = {f: array("q") for f in self.formats}
            for fmt, out in outs.items():
                out.write(self.tables[fmt].head)
            it = iter(rows)
            while chunk := list(itertools.islice(it, _CHUNK)):
                for fmt, table in self.tables.items():
                    outs[fmt].units(table, table.texts(chunk), lengths[fmt], first=not order)
                order.extend(row[_MODEL] for row in chunk)
            for fmt, out in outs.items():
                _end(self.tables[fmt], out, empty=not order)
        # The rows are found by bisection, which needs Python's order of the model_ids to be the
        # file's (SQLite's BINARY collation is; anything else makes every write a whole one).
        self._written(order, lengths, all(a < b for a, b in itertools.pairwise(order)))

    def _splice(self, touched: set[str], rows: Sequence[Row], sources: dict[str, int]) -> None:
        """Every file as the last one (open as ``sources``) with the rows of the ``touched``
        model_ids replaced by ``rows`` (their rows now; none for a model with no file left)."""
        fresh = {row[_MODEL]: row for row in rows}
        # The new files as runs of unchanged rows (their old positions) and new rows, in order.
        plan: list[range | list[Row]] = []
        order: list[str] = []
        i = 0
        for model in sorted(touched):
            j = bisect.bisect_left(self.order, model, i)
            if j > i:
                plan.append(range(i, j))
                order.extend(self.order[i:j])
            if j < len(self.order) and self.order[j] == model:
                j += 1  # its old row is left out
            if model in fresh:
                if plan and isinstance(plan[-1], list):
                    plan[-1].append(fresh[model])  # rendered together
                else:
                    plan.append([fresh[model]])
                order.append(model)
            i = j
        if i < len(self.order):
            plan.append(range(i, len(self.order)))
            order.extend(self.order[i:])
        lengths = {f: array("q") for f in self.formats}
        for fmt, table in self.tables.items():
            old = self.lengths[fmt]
            sep = len(table.sep.encode())
            at, row = self.heads[fmt], 0  # where old row ``row`` starts in the old file
            with atomic_file(self.targets[fmt]) as fh:
                out = _Out(fh.fileno())
                out.write(table.head)
                for step in plan:
                    first = not lengths[fmt]
                    if isinstance(step, range):
                        at += sum(old[row : step.start])  # the rows left out or replaced before it
                        run = old[step.start : step.stop]
                        size = sum(run)
                        out.copy(sources[fmt], at, size - sep, table.sep if not first else "")
                        lengths[fmt].extend(run)
                        at, row = at + size, step.stop
                    else:
                        out.units(table, table.texts(step), lengths[fmt], first)
                _end(table, out, empty=not order)
        # Unchanged rows in their order, each touched one at its place by bisection: still sorted.
        self._written(order, lengths, self.sorted)

    def _written(self, order: list[str], lengths: dict[str, array[int]], in_order: bool) -> None:
        self.order, self.lengths, self.sorted = order, lengths, in_order
        self.heads = {f: len(t.head.encode()) for f, t in self.tables.items()}
        self.written = {f: _identity(t.stat()) for f, t in self.targets.items()}


class ReportTables(SplicedFiles):
    """The table files of ``formats`` (any others, such as ``html``, are left out) in
    ``report_dir``, kept current from the daemon's database (see the module's docstring)."""

    def __init__(self, report_dir: Path, formats: Sequence[str], regressions: bool = False) -> None:
        kept = [f for f in formats if f in TABLE_FORMATS]
        columns = REGRESSION_REPORT_COLUMNS if regressions else REPORT_COLUMNS
        super().__init__({f: TABLE_FORMATS[f](columns) for f in kept}, {f: report_dir / FILE_NAMES[f] for f in kept})
        self.regressions = regressions  # the columns of the regression checks too
        self.mark: tuple[str | None, int] | None = None  # the history's identity and last id, as written

    def reset(self) -> None:
        """Forget what was written: the next write reads everything (the database was replaced)."""
        self.mark = None

    def write(self, store: Store) -> list[Path]:
        """Bring every table file to ``store``'s newest committed state (read in one transaction);
        each file is replaced atomically, and left alone when nothing changed. Raises what the
        store and the file system raise; after any failure the next write reads everything."""
        if not self.formats:
            return []
        kept, self.mark = self.mark, None  # set again only once every file is written
        with store.snapshot(), contextlib.ExitStack() as stack:
            mark = store.report_mark()
            same = kept is not None and kept[0] == mark[0] and kept[1] <= mark[1] and self.sorted
            sources = self._open_written(stack) if same else None
            if kept is not None and sources is not None:
                if kept[1] == mark[1]:
                    self.mark = mark
                    return list(self.targets.values())
                rows_of = functools.partial(store.report_rows_of, regressions=self.regressions)
                if self.splice_few(store.report_touched(kept[1], mark[1]), rows_of, sources):
                    self.mark = mark
                    return list(self.targets.values())
            self._write_whole(store.report_rows(regressions=self.regressions))
            self.full_reads += 1
            self.mark = mark
        return list(self.targets.values())


def _end(table: TableFormat, out: _Out, empty: bool) -> None:
    """Close a file: its tail; with no row, ``empty`` alone."""
    if empty:
        out.restart()
        out.write(table.empty)
    else:
        out.write(table.tail)
    out.flush()


class _Out:
    """Bytes to a file descriptor, gathered into large writes; ``position`` is the file offset.
    Ranges of another file are copied in by the kernel where it can (``copy_file_range``)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.position, self.size = fd, 0, 0
        self.pending: list[bytes] = []

    def write(self, text: str) -> None:
        data = text.encode()
        self.pending.append(data)
        self.position += len(data)
        self.size += len(data)
        if self.size >= _BUFFER:
            self.flush()

    def units(self, table: TableFormat, texts: list[str], lengths: array[int], first: bool) -> None:
        """Rows' texts, each after the separator unless it is the file's first row; each row's
        length with one separator is appended to ``lengths``."""
        sep = table.sep.encode()
        position = self.position
        for n, text in enumerate(texts):
            if n or not first:
                self.pending.append(sep)
                position += len(sep)
            data = text.encode()
            lengths.append(len(data) + len(sep))
            self.pending.append(data)
            position += len(data)
        self.size += position - self.position
        self.position = position
        if self.size >= _BUFFER:
            self.flush()

    def copy(self, src: int, offset: int, count: int, before: str) -> None:
        """``before``, then ``count`` bytes of ``src`` from ``offset``."""
        self.write(before)
        self.flush()
        self.position += count
        while count > 0:
            try:
                done = os.copy_file_range(src, self.fd, count, offset)
            except OSError as exc:  # another file system, or none that can: copy through memory
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                done = self._copy_through(src, offset, count)
            if done == 0:
                raise OSError(errno.EIO, "report file shorter than written")
            offset, count = offset + done, count - done

    def _copy_through(self, src: int, offset: int, count: int) -> int:
        data = os.pread(src, min(count, _BUFFER), offset)
        _write_all(self.fd, data)
        return len(data)

    def restart(self) -> None:
        """Drop everything written so far."""
        self.pending, self.size, self.position = [], 0, 0
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)

    def flush(self) -> None:
        if self.pending:
            _write_all(self.fd, b"".join(self.pending))
            self.pending, self.size = [], 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]

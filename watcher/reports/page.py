"""The HTML report: one self-contained page (inline CSS, JS and data; nothing fetched), or above
``html_part_models`` models a page in parts (the first screen's models inline, the others in part
files beside it that the page's script adds as ``<script>`` elements: still no server needed).

Answers "which threshold do I ship for each model, and how sure is that?" for every model: the
page carries compact column-wise data (one JSON document inside the page) and its script draws
only the rows on screen, sorts and filters all of them, and opens a model's detail (a large chart
with axes, the target and the chosen point, the model's other experiments) or a comparison of
several. Pure rendering: rows in, text out; the script and style are package data
(``watcher/reports/assets/``).
"""

from __future__ import annotations

import array
import base64
import functools
import itertools
import json
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from importlib import resources
from typing import Any, TextIO

from watcher.scoring import STEPS

#: The layout of the data in the page; changes with it (a saved page says which it holds).
DATA_VERSION = 1

#: The folder of a page's part files, beside it.
PART_FOLDER = "report-parts"


@functools.cache
def _asset(name: str) -> str:
    return resources.files("watcher.reports").joinpath("assets", name).read_text(encoding="utf-8")


#: Where the chart's script draws the target line; with extra targets, ``report-targets.js`` (a
#: line for each of them) goes in right after it. Spliced in only then, so that the page of a single
#: target is byte for byte what it always was.
_TARGET_DRAWN = "'target recall ' + tgt);\n"


def page_script(extra_targets: Sequence[float]) -> str:
    """The page's script: ``report.js``, with the extra targets' lines when there are some."""
    script = _asset("report.js")
    if not extra_targets:
        return script
    if script.count(_TARGET_DRAWN) != 1:
        raise RuntimeError("report.js: the target line's anchor for report-targets.js is not there once")
    return script.replace(_TARGET_DRAWN, _TARGET_DRAWN + _asset("report-targets.js"))


#: Where ``report-parts.js`` (the page in parts: loading and appending the parts) goes in
#: ``report.js``, and what else changes there for a page in parts (see :func:`parts_script`).
_PARTS_SPLICES = (
    # (anchor, inserted before it: an asset's name or text, what replaces it: "" to keep it)
    # before the end's start-up: the parts' loader and merger (in the same closure)
    ("  // For scripts and tests: what the table shows", "report-parts.js", ""),
    # sorting by path or instant: by each row's rank in the whole page's order
    ("    // path, experiment_date: the data carries", "report-parts-rank.js", ""),
    # the count shown says how many models are in so far
    ("num(N) + ' shown';", "", "num(N) + ' shown' + loading();"),
    # the headline, again as the parts come in
    ("  var missed = (function () {", "  function headline() {\n", ""),
    ("' rejected files'));\n", "", "' rejected files'));\n  }\n  headline();\n"),
)


def parts_script(extra_targets: Sequence[float]) -> str:
    """The script of a page in parts: :func:`page_script` with ``report-parts.js`` spliced in."""
    script = page_script(extra_targets)
    for anchor, before, instead in _PARTS_SPLICES:
        if script.count(anchor) != 1:
            raise RuntimeError(f"report.js: the anchor {anchor!r} for report-parts.js is not there once")
        text = _asset(before) if before.endswith(".js") else before
        script = script.replace(anchor, text + (instead or anchor))
    return script


class Raw(str):
    """Text that is JSON already (built by SQLite): embedded as it is."""


class Plain(str):
    """A string of base64 and decimal digits only (so nothing :func:`script_json` escapes):
    megabytes the escaping need not search."""


def columns_from_rows(rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """What :meth:`watcher.store.Store.page_columns` returns, from rows of
    :meth:`~watcher.store.Store.report_details` (one per model, by model_id)."""
    cols = list(zip(*rows, strict=True)) or [()] * 10
    ids, issuers, thr, rec, dates, paths, targets, met, npts, curves = cols
    curves = tuple(c if isinstance(c, bytes) else b"" for c in curves)  # none before rules version 3
    dump = json.dumps
    instant = {d: _instant(d) for d in set(dates)}
    return {
        "ids": dump(ids), "issuers": dump(issuers), "thr": dump(thr), "rec": dump(rec), "dates": dump(dates),
        "paths": dump(paths), "met": "".join("1" if m else "0" for m in met), "curves": b"".join(curves),
        "npts": dump(npts), "targets": dump(targets), "lengths": dump([len(c) for c in curves]),
        "order": list(range(len(ids))), "by_path": sorted(range(len(ids)), key=paths.__getitem__),
        "by_date": sorted(range(len(ids)), key=lambda i: (instant[dates[i]], paths[i])),
    }  # fmt: skip


def page_data(
    cols: dict[str, Any],
    rejections: Iterable[dict[str, Any]],
    generated_at: str,
    target: float,
    earlier: Iterable[Sequence[Any]] = (),
    omitted: int = 0,
    history_note: str = "",
    issuer_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The page's data (see ``watcher/reports/assets/report.js`` for its reading), from ``cols`` as
    :meth:`watcher.store.Store.page_columns` returns them: every row, in table order, with
    ``order`` listing them by model_id (each model's report row first, then its superseded files);
    ``earlier`` from :meth:`~watcher.store.Store.earlier_outcomes`. ``ids``, ``issuers`` and
    ``paths`` may be lists instead of JSON text (a part's, cut from the page's).

    Compact: model_ids as 16 bytes each (base64), repeated strings (issuers, folders, threshold
    grids) stored once and indexed, a shared ``.json`` suffix cut off, and curves reduced to their
    y bytes (base64). Numbers and dates pass through as SQLite wrote them. ``issuer_names``: the
    issuers to index into (a page in parts: the whole page's), else those of ``cols``.
    """
    ids: list[str] = _list(cols["ids"])
    idb = _uuid_bytes(ids)
    issuers: list[str] = _list(cols["issuers"])
    names = _issuer_list(issuers) if issuer_names is None else list(issuer_names)
    rank = {name: k for k, name in enumerate(names)}
    paths: list[str] = _list(cols["paths"])
    cut = [p.rfind("/") + 1 for p in paths]  # where the name starts
    # Paths hold no NUL: one search over all of them at once.
    ext = ".json" if ("\0".join(paths) + "\0").count(".json\0") == len(paths) else ""
    folders = [p[:c] for p, c in zip(paths, cut, strict=True)]  # with the trailing "/"
    folder_of = {f: k for k, f in enumerate(dict.fromkeys(folders))}
    end = -len(ext) or None
    files = [p[c:end] for p, c in zip(paths, cut, strict=True)]
    full: bytes = cols["curves"]
    xs, ys = full[0::2], full[1::2]
    lengths = json.loads(cols["lengths"]) if isinstance(cols["lengths"], str) else cols["lengths"]
    if isinstance(lengths, int):  # every curve has this many bytes
        h = lengths // 2
        xlist = [xs[i : i + h] for i in range(0, len(xs), h)] if h else [b""] * len(ids)
        drawn: Any = h
    else:
        counts = [n >> 1 for n in lengths]
        starts = list(itertools.accumulate(counts, initial=0))
        xlist = [xs[a:b] for a, b in itertools.pairwise(starts)]
        # One character per curve, its number of points plus 48 ("0" for none), when all fit.
        drawn = bytes(counts).translate(_PLUS_48).decode("ascii") if max(counts, default=0) < 75 else counts
    grid_of = {g: k for k, g in enumerate(dict.fromkeys(xlist))}
    grids = list(map(grid_of.__getitem__, xlist))
    order: list[int] = cols["order"]
    winner: dict[str, int] = {}
    if earlier:
        for p in order:  # each model's report row comes first
            winner.setdefault(ids[p], p)
    return {
        "version": DATA_VERSION,
        "steps": STEPS,
        "generated": generated_at,
        "target": target,
        "omitted": omitted,
        "historyNote": history_note,
        "n": len(ids),
        "models": len(set(ids)),
        # Positions (packed integers): by model, by path, by instant.
        "order": _packed(order),
        "byPath": _packed(cols["by_path"]),
        "byDate": _packed(cols["by_date"]),
        # model_ids are lowercase UUIDs (validated): 16 bytes each.
        "idb": Plain("" if idb is None else base64.b64encode(idb).decode()),
        "ids": ids if idb is None else [],
        "issuers": names,
        "iss": _packed(list(map(rank.__getitem__, issuers))),
        "thr": Raw(cols["thr"]),
        "rec": Raw(cols["rec"]),
        "met": cols["met"],
        "dates": Raw(cols["dates"]),
        "folders": list(folder_of),
        "dir": _packed(list(map(folder_of.__getitem__, folders))),
        "names": files,
        "ext": ext,
        "npts": _number_or_raw(cols["npts"]),
        "targets": _number_or_raw(cols["targets"]),
        "grids": [base64.b64encode(g).decode() for g in grid_of],
        "grid": _packed(grids) if len(grid_of) > 1 else "",
        "drawn": drawn,
        "ys": Plain(base64.b64encode(ys).decode()),
        "earlier": _earlier(earlier, winner),
        "rejections": [
            [r["path"], r["rejected_at"], [[e["field"], e["message"]] for e in r["errors"]]] for r in rejections
        ],
    }


_PLUS_48 = bytes((b + 48) % 256 for b in range(256))


def _list(column: str | list[Any]) -> list[Any]:
    """A column as a list: a JSON array's text parsed, a list as it is."""
    return json.loads(column) if isinstance(column, str) else column


def _issuer_list(issuers: Iterable[str]) -> list[str]:
    """The distinct issuers, as the page lists them (case-insensitive order)."""
    return sorted(set(issuers), key=lambda i: (i.lower(), i))


def _earlier(earlier: Iterable[Sequence[Any]], winner: dict[str, int]) -> list[list[Any]]:
    """The earlier outcomes of the models on the page, each with its model's report row position."""
    return [[winner[m], at, path, outcome, (sha or "")[:12]] for m, at, path, outcome, sha in earlier if m in winner]


def _uuid_bytes(ids: list[str]) -> bytes | None:
    """The model_ids' 16 bytes each, if every one is a lowercase UUID (``8-4-4-4-12`` hex digits
    and dashes), else None."""
    joined, n = "".join(ids), len(ids)
    if len(joined) != 36 * n or joined.count("-") != 4 * n:
        return None
    if any(joined[k::36] != "-" * n for k in (8, 13, 18, 23)):
        return None
    digits = joined.replace("-", "")
    if digits != digits.lower():
        return None
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        return None
    # fromhex skips whitespace: each one skipped leaves a byte short.
    return raw if len(raw) == 16 * n else None


def _packed(values: list[int]) -> str:
    """Non-negative integers below 2**24, each in as few little-endian bytes as the largest needs
    (1 to 3): the width as a digit, then the bytes in base64."""
    top = max(values, default=0)
    width = 1 if top < 1 << 8 else 2 if top < 1 << 16 else 3
    words = array.array("I", values).tobytes()
    out = bytearray(width * len(values))
    for k in range(width):
        out[k::width] = words[k::4]
    return Plain(str(width) + base64.b64encode(out).decode())


def _instant(date: str) -> datetime:
    return datetime.fromisoformat(date.upper()).astimezone(UTC)


def _number_or_raw(value: Any) -> Any:
    return Raw(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class PartFiles:
    """How a page of more than ``models`` models is written in parts of that many each (by
    model_id: the first in the page itself, the first screen of the default order), and where its
    part files go: ``write(name, text)`` writes one (atomically, durably) under the page's folder,
    ``name`` being ``{folder}/{generation}-NNNN.js``. A new ``generation`` for each page written, so
    that a page only ever names part files of its own. A page of ``models`` models or fewer is one
    self-contained file, byte for byte as before pages in parts."""

    generation: str
    write: Callable[[str, str], None]
    models: int
    folder: str = PART_FOLDER

    def name(self, index: int) -> str:
        return f"{self.folder}/{self.generation}-{index:04d}.js"


@dataclass(frozen=True)
class _Cut:
    """The page's rows cut into parts (see :func:`_cut`)."""

    parts: list[dict[str, Any]]  # columns as ``cols`` holds them, one dict per part
    order: list[int]  # the rows' positions in ``cols``, in the page in parts' order
    models: list[str]  # the model_id of each row, in that order
    count: int  # models
    issuers: list[str]  # every issuer, as the page lists them

    def positions(self, rows: Iterable[int]) -> dict[int, int]:
        """Where these rows (by their positions in ``cols``) are in the page in parts."""
        wanted = set(rows)
        return {p: k for k, p in enumerate(self.order) if p in wanted}

    def winners(self, models: Iterable[str]) -> dict[str, int]:
        """Where these models' report rows (each model's first) are in the page in parts."""
        wanted, out = set(models), dict[str, int]()
        if wanted:
            for k, m in enumerate(self.models):
                if m in wanted:
                    out.setdefault(m, k)
        return out


def _cut(cols: dict[str, Any], part_models: int) -> _Cut | None:
    """``cols`` cut into parts of ``part_models`` models each, in model_id order (a model's rows
    together, its report row first), or None when they fit in one, or when a model_id is not a
    UUID (the parts carry model_ids as bytes). Within the page in parts a row's position is its
    place in that order, so that the parts are consecutive ranges of positions: the script appends
    each part to what it holds. Each row carries its rank in the whole page's path and instant
    orders (``path_rank``, ``date_rank``), so that a sort over the rows loaded so far is the
    whole page's order restricted to them. Megabytes of columns at a million models: each is
    taken part by part with one C call (:func:`_picker`), numbers as SQLite wrote them."""
    ids: list[str] = _list(cols["ids"])
    order: list[int] = cols["order"]
    n = len(ids)
    if n <= part_models:
        return None
    models = list(_picker(order)(ids))
    starts = [0, *(k for k in range(1, n) if models[k] != models[k - 1])]  # each model's first row
    if len(starts) <= part_models or _uuid_bytes(ids) is None:
        return None
    cuts = [*starts[::part_models], n]
    path_rank, date_rank = [0] * n, [0] * n
    for rank, p in enumerate(cols["by_path"]):
        path_rank[p] = rank
    for rank, p in enumerate(cols["by_date"]):
        date_rank[p] = rank
    lists = {k: json.loads(cols[k]) for k in ("issuers", "dates", "paths")}
    # Numbers hold no comma: their JSON text's items, taken as they are.
    numbers = {k: cols[k].strip()[1:-1].split(",") for k in ("thr", "rec")}
    per_row = {k: json.loads(cols[k]) for k in ("npts", "targets") if isinstance(cols[k], str)}
    lengths = json.loads(cols["lengths"]) if isinstance(cols["lengths"], str) else cols["lengths"]
    full: bytes = cols["curves"]
    if isinstance(lengths, int):
        curves = [full[i : i + lengths] for i in range(0, lengths * n, lengths)] if lengths else [b""] * n
    else:
        curves = [full[a:b] for a, b in itertools.pairwise(itertools.accumulate(lengths, initial=0))]
    dump = json.dumps
    parts = []
    for a, b in itertools.pairwise(cuts):
        rows = order[a:b]
        pick = _picker(rows)
        part: dict[str, Any] = {k: "[" + ",".join(pick(v)) + "]" for k, v in numbers.items()}
        part["dates"] = dump(pick(lists["dates"]))
        part |= {k: list(pick(lists[k])) for k in ("issuers", "paths")}  # lists: as they are
        part |= {k: dump(pick(v)) for k, v in per_row.items()}
        part |= {k: cols[k] for k in ("npts", "targets") if k not in per_row}
        part["ids"] = models[a:b]
        part["met"] = "".join(pick(cols["met"]))
        part["curves"] = b"".join(pick(curves))
        part["lengths"] = lengths if isinstance(lengths, int) else list(pick(lengths))
        part["path_rank"] = list(pick(path_rank))
        part["date_rank"] = list(pick(date_rank))
        part["order"] = list(range(b - a))
        part["by_path"] = part["by_date"] = []  # not read: the ranks say
        parts.append(part)
    return _Cut(parts, order, models, len(starts), _issuer_list(lists["issuers"]))


def _picker(rows: list[int]) -> Callable[[Sequence[Any]], Sequence[Any]]:
    """A function that takes ``rows``' items of a sequence, in that order (in one C call)."""
    get = operator.itemgetter(*rows)
    return get if len(rows) > 1 else lambda v: [get(v)]


#: What a part file carries of :func:`page_data` (the rest is the page's alone).
_PART_KEYS = ("n", "models", "idb", "iss", "thr", "rec", "met", "dates", "folders", "dir", "names", "ext", "npts",
              "targets", "grids", "grid", "drawn", "ys")  # fmt: skip


def _in_parts(data: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """``data`` (:func:`page_data` of one part) without what the page alone carries, and with each
    row's ranks in the whole page's path and instant orders."""
    out = {k: data[k] for k in _PART_KEYS}
    out["grid"] = data["grid"] or _packed([0] * data["n"])  # parts append their grids to the page's
    out["pathRank"] = _packed(part["path_rank"])
    out["dateRank"] = _packed(part["date_rank"])
    return out


def script_json(data: dict[str, Any]) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` (so
    no ``</script>`` and no ``<!--``), and no raw U+2028/2029 (line ends to old parsers)."""
    dump = functools.partial(json.dumps, ensure_ascii=True, separators=(",", ":"), allow_nan=False)

    def safe(value: Any) -> str:
        text = value if isinstance(value, Raw) else dump(value)
        if isinstance(value, Plain):
            return text
        # Only text with other than ASCII can hold U+2028/2029 (an O(1) test).
        for char, escaped in _ESCAPES if text.isascii() else _ESCAPES + _LINE_ENDS:
            text = text.replace(char, escaped)
        return text

    return "{" + ",".join(f"{dump(k)}:{safe(v)}" for k, v in data.items()) + "}"


_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"))
_LINE_ENDS = (("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def render_html(
    cols: dict[str, Any],
    rejections: Iterable[dict[str, Any]],
    out: TextIO,
    generated_at: str,
    omitted: int = 0,
    *,
    target: float = 0.85,
    earlier: Iterable[Sequence[Any]] = (),
    history_note: str = "",
    extra_targets: Sequence[float] = (),
    part_files: PartFiles | None = None,
) -> None:
    """Write the page: :func:`page_data` inside the static page (``watcher/reports/assets/report.*``).
    ``cols`` from :meth:`watcher.store.Store.page_columns` or :func:`columns_from_rows`;
    ``omitted`` counts models left out (``html_max_models``); the page says so. The headline's
    counts are written into the markup as well, so they read right without the script.
    ``extra_targets`` are drawn on the chart beside ``target`` (the data's ``extraTargets``,
    present only when there are some: a single-target page is the same as ever).

    With ``part_files``, a page of more than ``part_files.models`` models is written in parts: each
    part but the first written through ``part_files`` (before this returns: the caller renames
    the page over the old one only then), the page naming them (``parts``, ``gen``) and carrying
    the first (see ``report-parts.js``)."""
    cut = None if part_files is None else _cut(cols, part_files.models)
    regressed = cols.get("regressed")
    if cut is None:
        data = page_data(cols, rejections, generated_at, target, earlier, omitted, history_note)
        models = data["models"]
        script = page_script(extra_targets)
    else:
        assert part_files is not None
        first, *rest = cut.parts
        names = []
        for k, part in enumerate(rest, 1):
            names.append(part_files.name(k))
            body = _in_parts(page_data(part, (), generated_at, target, issuer_names=cut.issuers), part)
            body |= {"gen": part_files.generation, "index": k}
            part_files.write(names[-1], f"watcherPart({script_json(body)});\n")
        data = page_data(first, rejections, generated_at, target, (), omitted, history_note, cut.issuers)
        earlier = list(earlier)
        models = cut.count
        data |= {"earlier": _earlier(earlier, cut.winners(e[0] for e in earlier)),
                 "pathRank": _packed(first["path_rank"]), "dateRank": _packed(first["date_rank"]),
                 "gen": part_files.generation, "parts": names, "total": models}  # fmt: skip
        if regressed is not None:
            at = cut.positions(r[0] for r in regressed)
            regressed = [[at[r[0]], *r[1:]] for r in regressed]
        script = parts_script(extra_targets)
    if extra_targets:
        data["extraTargets"] = list(extra_targets)
    rejected = len(data["rejections"])
    out.write(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>watcher report</title><style>{_asset('report.css')}</style></head><body>"
        f'<header><h1>Operating points by model</h1><p class="meta" id="meta">Generated {escape(generated_at)}'
        f" &middot; target recall {target:g} &middot; {models} models &middot; {rejected} rejected files</p></header>"
        f"{_asset('report.html')}"
        '<script type="application/json" id="data">'
    )
    out.write(script_json(data))  # megabytes: written as it is, not copied into a larger string
    out.write(f"</script><script>{script}</script>")
    if regressed is not None:  # regression checks on: their marks, by a script of their own
        out.write('<script type="application/json" id="regressions">')
        out.write(script_json({"p": [r[0] for r in regressed], "rows": [r[1:] for r in regressed]}))
        out.write(f"</script><script>{_asset('regressions.js')}</script>")
    out.write("</body></html>\n")

"""The HTML report: one self-contained page (inline CSS, JS and data; nothing fetched).

Answers "which threshold do I ship for each model, and how sure is that?" for every model: the
page carries compact column-wise data (one JSON document inside the page) and its script draws
only the rows on screen, sorts and filters all of them, and opens a model's detail (a large chart
with axes, the target and the chosen point, the model's other experiments) or a comparison of
several. Pure rendering: rows in, text out; the script and style are package data
(``watcher/page/``).
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterable, Sequence
from html import escape
from importlib import resources
from typing import Any, TextIO

from watcher.scoring import STEPS

#: Bumped when the page's data layout changes (the script checks it).
DATA_VERSION = 1


@functools.cache
def _asset(name: str) -> str:
    return resources.files("watcher").joinpath("page", name).read_text(encoding="utf-8")


def page_data(
    rows: Iterable[Sequence[Any]],
    rejections: Iterable[dict[str, Any]],
    generated_at: str,
    target: float,
    earlier: Iterable[Sequence[Any]] = (),
    omitted: int = 0,
    history_note: str = "",
) -> dict[str, Any]:
    """The page's data, column-wise (see ``watcher/page/report.js`` for its reading).

    ``rows``: tuples of :meth:`watcher.store.Store.page_rows` (by model_id, each model's report
    row first, then its superseded files); ``earlier``: :meth:`~watcher.store.Store.earlier_outcomes`.
    Strings that repeat (issuers, folders, threshold grids, targets) are stored once and indexed;
    curves keep only their y bytes, base64 in one string, each after its length byte.
    """
    ids: list[str] = []
    issuer_of: dict[str, int] = {}
    iss: list[int] = []
    thr: list[float] = []
    rec: list[float] = []
    met: list[str] = []
    dates: list[str] = []
    folder_of: dict[str, int] = {"": 0}
    dirs: list[int] = []
    names: list[str] = []
    npts: list[int] = []
    grid_of: dict[bytes, int] = {}
    grids: list[int] = []
    target_of: dict[float, int] = {}
    tgs: list[int] = []
    ys: list[bytes] = []
    others: list[list[Any]] = []
    prev = None
    for model_id, issuer, t, r, date, path, tgt, ok, n, curve in rows:
        curve = curve if isinstance(curve, bytes) else b""  # rows from before rules version 3 have none
        if model_id == prev:  # a superseded file of the model just added
            others.append([len(ids) - 1, path, issuer, t, r, date, int(ok), tgt, n, base64.b64encode(curve).decode()])
            continue
        prev = model_id
        ids.append(model_id)
        iss.append(issuer_of.setdefault(issuer, len(issuer_of)))
        thr.append(t)
        rec.append(r)
        met.append("1" if ok else "0")
        dates.append(date)
        folder, _, name = path.rpartition("/")
        dirs.append(folder_of.setdefault(folder, len(folder_of)))
        names.append(name)
        npts.append(n)
        tgs.append(target_of.setdefault(tgt, len(target_of)))
        grids.append(grid_of.setdefault(curve[::2], len(grid_of)))
        y = curve[1::2]
        ys.append(bytes((len(y),)) + y)
    # Issuers sorted, so the issuer column sorts by its index.
    order = sorted(issuer_of, key=lambda i: (i.lower(), i))
    rank = [0] * len(order)
    for pos, name in enumerate(order):
        rank[issuer_of[name]] = pos
    index = {model_id: i for i, model_id in enumerate(ids)} if earlier else {}
    hist = [[index[m], at, path, outcome, (sha or "")[:12]] for m, at, path, outcome, sha in earlier if m in index]
    return {
        "version": DATA_VERSION,
        "generated": generated_at,
        "target": target,
        "omitted": omitted,
        "historyNote": history_note,
        # model_ids are canonical lowercase UUIDs (validated), 36 characters each, in sorted order.
        "ids": "".join(ids) if all(len(m) == 36 for m in ids) else ids,
        "issuers": order,
        "iss": [rank[i] for i in iss],
        "thr": thr,
        "rec": rec,
        "met": "".join(met),
        "dates": dates,
        "folders": list(folder_of),
        "dir": dirs,
        "names": names,
        "npts": npts,
        "targets": list(target_of),
        "tg": tgs if len(target_of) > 1 else [],
        "grids": [base64.b64encode(g).decode() for g in grid_of],
        "grid": grids if len(grid_of) > 1 else [],
        "ys": base64.b64encode(b"".join(ys)).decode(),
        "others": others,
        "earlier": hist,
        "rejections": [[r["path"], r["rejected_at"], [[e["field"], e["message"]] for e in r["errors"]]] for r in rejections],
    }


def script_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` (so no ``</script>``
    and no ``<!--``), and ASCII only (so no U+2028/2029 either)."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(
    rows: Iterable[Sequence[Any]],
    rejections: Iterable[dict[str, Any]],
    out: TextIO,
    generated_at: str,
    omitted: int = 0,
    *,
    target: float = 0.85,
    earlier: Iterable[Sequence[Any]] = (),
    history_note: str = "",
) -> None:
    """Write the page: :func:`page_data` inside the static page (``watcher/page/report.*``).
    ``omitted`` counts models left out (``html_max_models``); the page says so."""
    data = page_data(rows, rejections, generated_at, target, earlier, omitted, history_note)
    models, missed, rejected = len(data["npts"]), data["met"].count("0"), len(data["rejections"])
    out.write(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>watcher report</title><style>{_asset('report.css')}</style></head><body>"
        # The headline is in the markup too, so it reads right before (or without) the script.
        f'<header><h1>Operating points by model</h1><p class="meta" id="meta">Generated {escape(generated_at)}'
        f" &middot; target recall {target:g} &middot; {models} models &middot; {missed} below target &middot; "
        f"{rejected} rejected files</p></header>"
        f"{_asset('report.html')}"
        f'<script type="application/json" id="data">{script_json(data)}</script>'
        f"<script>{_asset('report.js')}</script></body></html>\n"
    )

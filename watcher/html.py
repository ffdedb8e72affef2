"""The HTML report: one self-contained page (inline CSS, SVG and a little JS; nothing fetched).

Answers "which threshold do I ship for each model, and how sure is that?": the summary table
(sortable, filterable by issuer and model), a small recall-vs-threshold curve per model with the
target line and the chosen point, a flag where the target is not met, and the rejected files with
their reasons. Pure rendering: rows in, text out. Curves arrive already downsampled (at most 33
points), so 10,000 models make a page of a few megabytes, not one per curve.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any, TextIO

from watcher.scoring import STEPS

W, H = 120, 40  # sparkline size in px

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2433}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin-top:2rem}
.meta{color:#5b6478;margin-bottom:1rem}
.controls{display:flex;gap:1rem;margin:.8rem 0;flex-wrap:wrap}
table{border-collapse:collapse;width:100%}
th,td{padding:.3rem .6rem;border-bottom:1px solid #e3e6ee;text-align:left;vertical-align:middle}
th{background:#f4f6fa;cursor:pointer;user-select:none;white-space:nowrap;position:sticky;top:0}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.id{font-family:ui-monospace,monospace;font-size:12px}td.id,td.nw{white-space:nowrap}
tr.miss td{background:#fff4f2}.flag{color:#b42318;font-weight:600}.ok{color:#067647}
tbody tr{content-visibility:auto;contain-intrinsic-size:auto 46px}
svg .curve{fill:none;stroke:#2e5aac;stroke-width:1.2;vector-effect:non-scaling-stroke}
svg .target{stroke:#b42318;stroke-dasharray:3 2}
svg .chosen{fill:#b42318}.reasons{margin:0;padding-left:1.1rem}
"""

_JS = """
(function(){
  var table=document.getElementById('models'), body=table.tBodies[0];
  var issuer=document.getElementById('issuer'), search=document.getElementById('search');
  var shown=document.getElementById('shown');
  function apply(){
    var who=issuer.value, q=search.value.trim().toLowerCase(), n=0;
    for(var i=0;i<body.rows.length;i++){
      var r=body.rows[i];
      var ok=(!who||r.dataset.issuer===who)&&(!q||r.dataset.model.indexOf(q)===0);
      r.hidden=!ok; if(ok){n++;}
    }
    shown.textContent=n;
  }
  function sort(th){
    var col=th.cellIndex, dir=th.dataset.dir==='asc'?'desc':'asc', num=th.dataset.type==='num';
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(c){delete c.dataset.dir;});
    th.dataset.dir=dir;
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=a.cells[col].dataset.v, y=b.cells[col].dataset.v;
      if(num){x=parseFloat(x);y=parseFloat(y);}
      return (x<y?-1:x>y?1:0)*(dir==='asc'?1:-1);
    });
    rows.forEach(function(r){body.appendChild(r);});
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th){
    if(th.dataset.type){th.addEventListener('click',function(){sort(th);});}
  });
  issuer.addEventListener('change',apply); search.addEventListener('input',apply);
  var params=new URLSearchParams(location.hash.slice(1));
  if(params.get('issuer')){issuer.value=params.get('issuer');}
  if(params.get('model')){search.value=params.get('model');}
  if(params.get('sort')){
    var th=table.querySelector('th[data-key="'+params.get('sort')+'"]');
    if(th){sort(th);if(params.get('dir')==='desc'){sort(th);}}
  }
  apply();
  document.body.dataset.ready='1';
})();
"""

# Columns: (key, title, type for sorting)
_COLUMNS = [
    ("model_id", "model_id", "text"),
    ("issuer", "issuer", "text"),
    ("optimal_threshold", "optimal threshold", "num"),
    ("closest_recall_value", "recall there", "num"),
    ("target_met", "target", "num"),
    ("experiment_date", "experiment date", "text"),
    ("path", "file", "text"),
    ("curve", "recall vs threshold", ""),
]


_DECIMAL = [str(i) for i in range(256)]


def xy(t: float, r: float) -> str:
    """A (threshold, recall) point in sparkline pixels."""
    return f"{t * (W - 4) + 2:.1f},{(1 - r) * (H - 4) + 2:.1f}"


def sparkline(curve: bytes, target: float, chosen: tuple[float, float]) -> str:
    """An inline SVG: the curve (from :func:`watcher.scoring.curve_bytes`), a dashed line at the target recall, a
    dot at the chosen point. The curve keeps its ``STEPS`` coordinates in a nested, stretched
    viewBox, so drawing it is joining small integers."""
    ty = f"{(1 - target) * (H - 4) + 2:.1f}"
    cx, cy = xy(*chosen).split(",")
    points = ",".join(map(_DECIMAL.__getitem__, curve))
    return (
        f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="recall against threshold">'
        f'<line class="target" x1="0" x2="{W}" y1="{ty}" y2="{ty}"/>'
        f'<svg x="2" y="2" width="{W - 4}" height="{H - 4}" viewBox="0 0 {STEPS} {STEPS}" preserveAspectRatio="none">'
        f'<polyline class="curve" points="{points}"/></svg>'
        f'<circle class="chosen" cx="{cx}" cy="{cy}" r="2.5"/></svg>'
    )


def render_html(
    rows: Iterable[Sequence[Any]],
    rejections: Iterable[dict[str, Any]],
    out: TextIO,
    generated_at: str,
    omitted: int = 0,
) -> None:
    """Write the page. ``rows`` come from :meth:`watcher.store.Store.report_details`;
    ``rejections`` from :meth:`~watcher.store.Store.rejection_rows`; ``omitted`` counts models
    left out of the page (``html_max_models``)."""
    body: list[str] = []
    issuers: set[str] = set()
    models = missed = 0
    for model_id, issuer, thr, rec, date, path, target, met, n_points, curve in rows:
        models += 1
        missed += not met
        issuers.add(issuer)
        flag = '<span class="ok">met</span>' if met else '<span class="flag">below target</span>'
        # Rows stored before curves were bytes (rules version 2) have none until re-judged.
        spark = sparkline(curve, target, (thr, rec)) if isinstance(curve, bytes) and curve else ""
        mid, who, day, file = escape(model_id), escape(issuer), escape(date), escape(path)
        row_class = "" if met else ' class="miss"'
        body.append(
            f'<tr{row_class} data-issuer="{who}" data-model="{mid}">'
            f'<td class="id" data-v="{mid}">{mid}</td><td data-v="{who}">{who}</td>'
            f'<td class="num" data-v="{thr}">{thr:.4g}</td><td class="num" data-v="{rec}">{rec:.4g}</td>'
            f'<td data-v="{int(met)}" title="target recall {target}">{flag}</td>'
            f'<td class="nw" data-v="{day}">{day}</td><td data-v="{file}" title="{n_points} points">{file}</td>'
            f"<td>{spark}</td></tr>"
        )
    rejected = [
        f'<tr><td>{escape(r["path"])}</td><td class="nw">{escape(r["rejected_at"])}</td><td><ul class="reasons">'
        + "".join(f"<li><b>{escape(e['field'] or '(file)')}</b>: {escape(e['message'])}</li>" for e in r["errors"])
        + "</ul></td></tr>"
        for r in rejections
    ]
    head = "".join(
        f'<th data-key="{k}" data-type="{t}">{escape(title)}</th>' if t else f"<th>{escape(title)}</th>"
        for k, title, t in _COLUMNS
    )
    options = "".join(f'<option value="{escape(i)}">{escape(i)}</option>' for i in sorted(issuers))
    note = f" ({omitted} older models not shown here; see report.csv or the database)" if omitted else ""
    out.write(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>watcher report</title><style>{_CSS}</style></head><body>"
        "<h1>Operating points by model</h1>"
        f'<div class="meta">Generated {escape(generated_at)} &middot; {models} models{note} &middot; '
        f'<span class="{"flag" if missed else "ok"}">{missed} below target</span> &middot; '
        f"{len(rejected)} rejected files</div>"
        '<div class="controls"><label>issuer <select id="issuer"><option value="">all</option>'
        f"{options}</select></label>"
        '<label>model_id starts with <input id="search" type="search" autocomplete="off"></label>'
        f'<span><span id="shown">{models}</span> shown</span></div>'
        f'<table id="models"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
        f"<h2>Rejected files ({len(rejected)})</h2>"
        + (
            '<table id="rejections"><thead><tr><th>file</th><th>rejected at</th><th>reasons</th></tr></thead>'
            f"<tbody>{''.join(rejected)}</tbody></table>"
            if rejected
            else "<p>None.</p>"
        )
        + f"<script>{_JS}</script></body></html>\n"
    )

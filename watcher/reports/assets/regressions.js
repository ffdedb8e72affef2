/* The report page's regression marks, on the page only with regression checks on
   (watcher/reports/page.py writes #regressions and this script after report.js; without them the
   page is as it always was). #regressions holds each regressed file's position in #data ("p") and
   its [model_id, path, reasons] ("rows"). report.js fills the rows on screen (a row element
   keeps the position it shows as row.i, its cells as row.cells); a MutationObserver sees each
   fill and marks a regressed row: tinted, "regressed" in its target cell, the reasons as its
   title. The headline counts them, and a table below the grid lists them with their reasons. */
(function () {
  'use strict';
  var R = JSON.parse(document.getElementById('regressions').textContent), why = {}, k;
  for (k = 0; k < R.p.length; k++) { why[R.p[k]] = R.rows[k][2]; }
  var style = document.createElement('style');  // here, not in report.css: that page stays as it was
  style.textContent = '#rows .row.regressed{background:#fdeceb;box-shadow:inset 4px 0 0 #b42318}';
  document.head.appendChild(style);
  var rowsEl = document.getElementById('rows'), MARK = ' \u00b7 regressed';
  function mark(row) {
    var c = row.cells && row.cells[4], text = why[row.i];
    if (!c) { return; }
    var on = text !== undefined && row.i >= 0, marked = c.textContent.slice(-MARK.length) === MARK;
    row.classList.toggle('regressed', on);
    if (on && !marked) {
      c.textContent += MARK; c.className = 'flag'; c.title = 'regressed: ' + text;
    }
  }
  function markAll() { for (var r = rowsEl.firstChild; r; r = r.nextSibling) { mark(r); } }
  new MutationObserver(markAll).observe(rowsEl, { childList: true, subtree: true, characterData: true });
  markAll();
  var meta = document.getElementById('meta'), count = document.createElement('span');
  count.className = R.p.length ? 'flag' : 'ok'; count.id = 'regressedcount';
  count.textContent = R.p.length + ' regressed';
  meta.appendChild(document.createTextNode(' \u00b7 ')); meta.appendChild(count);
  var section = document.createElement('section'), h = document.createElement('h2');
  section.id = 'regressed';
  h.textContent = 'Regressed experiments (' + R.rows.length + ')';
  section.appendChild(h);
  var table = document.createElement('table'), head = table.createTHead().insertRow();
  ['model_id', 'file', 'regression'].forEach(function (t) {
    var th = document.createElement('th'); th.textContent = t; head.appendChild(th);
  });
  var body = table.createTBody();
  R.rows.forEach(function (r) {
    var tr = body.insertRow();
    r.forEach(function (v) { tr.insertCell().textContent = v; });
  });
  section.appendChild(table);
  var rejected = document.getElementById('rejected');
  rejected.parentNode.insertBefore(section, rejected);
}());

  // ---- a page in parts (watcher/reports/page.py, render_html; spliced into report.js there) --
  // #data holds the first part (the first models by model_id) and names the others (D.parts):
  // files beside the page, each calling watcherPart() with a part laid out as #data is. They are
  // added as <script> elements after the first frame (a page opened from file:// can load
  // scripts, not fetch its neighbours), run in order, and each is appended to the columns here:
  // a row's position in the whole page is its place in model_id order, so a part is the next
  // range of positions. Until every part is in, the table works on the models loaded so far and
  // says so ("n of N models loaded"). A part of another generation (the page was rewritten
  // meanwhile) or one missing stops the loading with a note: reload.
  D.pathRank = ints(D.pathRank); D.dateRank = ints(D.dateRank);
  var parts = { next: 1, queue: [], timer: 0, failed: false, touched: false, start: location.hash, ys: ys.length };
  function loading() {
    return parts.next > D.parts.length && !parts.queue.length ? '' : ' \u00b7 ' + num(N) + ' of ' + num(D.total) + ' models loaded';
  }
  function cat(a, b, n) {  // the first n of typed array a, then b: in a larger array when it must be
    if (a.length < n + b.length) {
      var c = new a.constructor(Math.max(n + b.length, 2 * a.length)); c.set(a.subarray(0, n)); a = c;
    }
    a.set(b, n);
    return a;
  }
  function append(list, more, suffix) { for (var k = 0; k < more.length; k++) { list.push(suffix ? more[k] + suffix : more[k]); } }
  function perRow(v, n) { return typeof v === 'number' ? new Array(n).fill(v) : v; }
  function absorb(q) {  // part q appended: its rows after the D.n rows held
    var n = D.n, m = q.n, k;
    idb = cat(idb, bytes(q.idb), 16 * n); idw = new Uint32Array(idb.buffer, idb.byteOffset, idb.length >> 2);
    D.iss = cat(D.iss, ints(q.iss), n);
    var dir = ints(q.dir), f0 = D.folders.length;
    for (k = 0; k < m; k++) { dir[k] += f0; }
    append(D.folders, q.folders); D.dir = cat(D.dir, dir, n);
    var grid = ints(q.grid), g0 = grids.length;
    for (k = 0; k < m; k++) { grid[k] += g0; }
    append(grids, q.grids.map(bytes)); D.grid = cat(D.grid || new Uint32Array(n), grid, n);
    append(D.thr, q.thr); append(D.rec, q.rec); append(D.dates, q.dates);
    if (q.ext !== D.ext && D.ext) {  // file names that do not all end in .json: names in full
      for (k = 0; k < n; k++) { D.names[k] += D.ext; }
      D.ext = '';
    }
    append(D.names, q.names, D.ext ? '' : q.ext);
    D.met += q.met;
    ['npts', 'targets'].forEach(function (c) {
      if (typeof D[c] !== 'number' || D[c] !== q[c]) { D[c] = perRow(D[c], n); append(D[c], perRow(q[c], m)); }
    });
    if (typeof D.drawn !== 'number' || D.drawn !== q.drawn) {  // curves of several lengths: offsets
      if (!yoff) { yoff = new Uint32Array(n + 1); for (k = 0; k <= n; k++) { yoff[k] = k * D.drawn; } }
      var more = typeof q.drawn === 'number' ? new Uint32Array(m + 1).map(function (v, j) { return j * q.drawn; }) : offsets(q.drawn, m);
      for (k = 0; k <= m; k++) { more[k] += parts.ys; }
      yoff = cat(yoff, more.subarray(1), n + 1);
      D.drawn = [];
    }
    var y = bytes(q.ys);
    ys = cat(ys, y, parts.ys); parts.ys += y.length;
    D.pathRank = cat(D.pathRank, ints(q.pathRank), n); D.dateRank = cat(D.dateRank, ints(q.dateRank), n);
    D.n += m; D.models += q.models;
  }
  function flush() {  // the parts received so far appended, and the page shown again with them
    clearTimeout(parts.timer); parts.timer = 0;
    parts.queue.forEach(absorb); parts.queue = [];
    var all = new Uint32Array(D.n);
    for (var k = 0; k < D.n; k++) { all[k] = k; }
    rankOf = new Int32Array(D.n).fill(-1); superseded = new Map(); W = reportRows(all); N = W.length;
    SHIFT = Math.pow(2, Math.ceil(Math.log2(N + 2))); orders = {}; byId = null; grouped = null;
    window.report.models = N;
    var regressed = $('regressedcount');  // regressions.js adds its count to the headline
    headline();
    if (regressed) { $('meta').appendChild(document.createTextNode(' \u00b7 ')); $('meta').appendChild(regressed); }
    recompute();
    if (parts.next > D.parts.length && !parts.failed) {
      if (parts.start && !parts.touched) {  // the address again: it may name models not loaded at first
        if (location.hash !== parts.start) { history.replaceState(null, '', parts.start); }
        fromHash();
      }
      window.partsAt = performance.now(); document.body.dataset.parts = 'all';
      warm(SORTS.slice(1));
    }
  }
  function failed(why) {
    if (parts.failed) { return; }
    parts.failed = true; parts.next = Infinity;
    if (parts.queue.length) { flush(); } else { recompute(); }
    var note = $('note');
    note.hidden = false;
    note.textContent = (note.textContent ? note.textContent + ' ' : '') + why + ': ' + num(N) + ' of ' + num(D.total) +
      ' models are shown; reload the page for all of them (every model is in report.csv, report.json and the database).';
    document.body.dataset.parts = 'failed';
  }
  window.watcherPart = function (q) {
    if (parts.failed) { return; }
    if (q.gen !== D.gen || q.index !== parts.next) { failed('The report was rewritten while this page loaded its parts'); return; }
    parts.next++; parts.queue.push(q);
    if (parts.next > D.parts.length) { flush(); } else if (!parts.timer) { parts.timer = setTimeout(flush, 250); }
  };
  ['pointerdown', 'keydown', 'input'].forEach(function (e) { document.addEventListener(e, function () { parts.touched = true; }, true); });
  requestAnimationFrame(function () {  // after the first frame: the parts, in order
    setTimeout(function () {
      D.parts.forEach(function (src) {
        var s = document.createElement('script');
        s.src = src; s.async = false;
        s.onerror = function () { failed('A part of this page (' + src + ') is missing: the report was rewritten meanwhile'); };
        document.body.appendChild(s);
      });
    }, 0);
  });

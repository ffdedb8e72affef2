/* The report page's script. Reads the JSON document in #data (written by watcher/reports/page.py,
   page_data: column-wise arrays, one entry per model in model_id order) and draws only the rows
   on screen. Everything from the data reaches the page through textContent or setAttribute,
   never as markup. */
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('data').textContent);
  var ROW = 30, STEPS = D.steps, SVGNS = 'http://www.w3.org/2000/svg';
  var COLORS = ['#2e5aac', '#d55e00', '#009e73', '#cc79a7', '#e69f00', '#56b4e9', '#7a5195', '#000000'];
  function $(id) { return document.getElementById(id); }

  // ---- decoding: D holds every row (current and superseded files) in table order; a row is
  // named by its position p. D.order lists the positions by model_id, each model's report row
  // first: W holds those report rows, one per model, in model_id order. -------------------------
  function bytes(s) {  // base64 to bytes: the native decoder where there is one (many times faster)
    if (Uint8Array.fromBase64) { return Uint8Array.fromBase64(s); }
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out;
  }
  var idb = bytes(D.idb), HEX = [];
  for (var h = 0; h < 256; h++) { HEX.push((h < 16 ? '0' : '') + h.toString(16)); }
  function id(p) {
    if (D.ids.length) { return D.ids[p]; }
    var o = p * 16, s = '';
    for (var k = 0; k < 16; k++) { s += HEX[idb[o + k]]; if (k === 3 || k === 5 || k === 7 || k === 9) { s += '-'; } }
    return s;
  }
  var idw = new Uint32Array(idb.buffer, idb.byteOffset, idb.length >> 2);  // 4 words per model_id, to compare
  function ints(s) {  // packed integers: the width in bytes (1-3) as a digit, then base64
    var w = +s[0], b = bytes(s.slice(1)), n = b.length / w, out = new Uint32Array(n), k;
    if (w === 1) { out.set(b); } else if (w === 2) {
      for (k = 0; k < n; k++) { out[k] = b[2 * k] | b[2 * k + 1] << 8; }
    } else {
      for (k = 0; k < n; k++) { out[k] = b[3 * k] | b[3 * k + 1] << 8 | b[3 * k + 2] << 16; }
    }
    return out;
  }
  D.iss = ints(D.iss); D.dir = ints(D.dir); D.grid = D.grid ? ints(D.grid) : null;
  // The long loops over every row run in functions of their own, with local variables: in the
  // page's top-level code they would run several times slower (closure slots, no optimisation).
  var rankOf = new Int32Array(D.n).fill(-1), superseded = new Map(), W = reportRows(ints(D.order));
  function reportRows(order) {
    var n = order.length, k, ranks = rankOf;
    if (D.n === D.models) { for (k = 0; k < n; k++) { ranks[order[k]] = k; } return order; }
    var out = new Uint32Array(D.models), m = 0, last = 0, w = idw, ids = D.ids.length ? D.ids : null, later = [];
    for (k = 0; k < n; k++) {  // a superseded file follows its model's report row
      var p = order[k], a = p * 4, b = last * 4;
      if (k > 0 && (ids ? ids[p] === ids[last]
        : w[a] === w[b] && w[a + 1] === w[b + 1] && w[a + 2] === w[b + 2] && w[a + 3] === w[b + 3])) {
        later.push(last, p);
      } else { ranks[p] = m; out[m++] = p; last = p; }
    }
    for (k = 0; k < later.length; k += 2) {
      if (!superseded.has(later[k])) { superseded.set(later[k], []); }
      superseded.get(later[k]).push(later[k + 1]);
    }
    return out.subarray(0, m);
  }
  var N = W.length;
  var ys = bytes(D.ys), grids = D.grids.map(bytes), yoff = typeof D.drawn === 'number' ? null : offsets(D.drawn, D.n);
  function offsets(drawn, n) {  // where each curve's points start in ys
    var out = new Uint32Array(n + 1), q;
    if (typeof drawn === 'string') {  // one character per curve: its count plus 48
      for (q = 0; q < n; q++) { out[q + 1] = out[q] + drawn.charCodeAt(q) - 48; }
    } else { for (q = 0; q < n; q++) { out[q + 1] = out[q] + drawn[q]; } }
    return out;
  }
  function path(p) { return D.folders[D.dir[p]] + D.names[p] + D.ext; }  // folders end in '/'
  function target(p) { return typeof D.targets === 'number' ? D.targets : D.targets[p]; }
  function npts(p) { return typeof D.npts === 'number' ? D.npts : D.npts[p]; }
  function met(p) { return D.met.charCodeAt(p) === 49; }
  function issuer(p) { return D.issuers[D.iss[p]]; }
  // The drawn curve: at most 33 points, each coordinate quantised to 1/STEPS.
  function curve(p) {
    var g = grids[D.grid ? D.grid[p] : 0], off = yoff ? yoff[p] : p * D.drawn;
    var n = yoff ? yoff[p + 1] - off : D.drawn, pts = [];
    for (var k = 0; k < n; k++) { pts.push([g[k] / STEPS, 1 - ys[off + k] / STEPS]); }
    return pts;
  }
  // Fixed precision: thresholds and recalls to 4 decimals; drawn (quantised) points to 3.
  function f4(v) { return v.toFixed(4); }
  function f3(v) { return v.toFixed(3); }
  function num(n) { return String(n).replace(/\B(?=(\d{3})+$)/g, ','); }  // 12,345: as toLocaleString('en'), without its cost

  // ---- dates: sorted by instant -----------------------------------------------------------
  var DATE = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/;
  function days(y, m, d) {  // days since 1970-01-01 of a proleptic Gregorian date
    if (m <= 2) { y -= 1; }
    var era = Math.floor(y / 400), yoe = y - era * 400, mp = (m + 9) % 12;
    var doy = Math.floor((153 * mp + 2) / 5) + d - 1, doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
    return era * 146097 + doe - 719468;
  }
  function instant(s) {  // [seconds since the epoch, microseconds], or [NaN, 0]
    var m = DATE.exec(s);
    if (!m) { return [NaN, 0]; }
    var sec = days(+m[1], +m[2], +m[3]) * 86400 + (+m[4]) * 3600 + (+m[5]) * 60 + (+m[6]);
    if (m[8]) { sec -= (m[8] === '-' ? -1 : 1) * ((+m[9]) * 3600 + (+m[10]) * 60); }
    return [sec, m[7] ? +(m[7] + '000000').slice(0, 6) : 0];
  }
  function utc(s) {
    var t = instant(s);
    if (isNaN(t[0])) { return ''; }
    var d = new Date(0); d.setUTCFullYear(1970, 0, 1); d.setUTCSeconds(t[0]);
    return d.toISOString().slice(0, 19) + '.' + String(t[1]).padStart(6, '0') + 'Z';
  }

  // ---- sort orders (computed once per column and direction, over all models) ----------------
  // Orders are over the report rows only (model index i, position W[i]). Each column becomes a
  // rank per model; sorting is then one native sort of rank * SHIFT + model index packed in a
  // Float64Array (exact below 2^53): no comparator calls, and ties fall to model_id order.
  var orders = {}, SHIFT = Math.pow(2, Math.ceil(Math.log2(N + 2)));
  function ranks(values) {  // dense ranks of numbers (NaN last)
    var u = Float64Array.from(values).sort(), n = 0, i;
    for (i = 0; i < u.length; i++) { if (i === 0 || !(u[i] === u[n - 1] || (u[i] !== u[i] && u[n - 1] !== u[n - 1]))) { u[n++] = u[i]; } }
    var r = new Float64Array(values.length);
    for (i = 0; i < values.length; i++) {
      var v = values[i], lo = 0, hi = n - 1;
      if (v !== v) { r[i] = n; continue; }
      while (lo < hi) { var mid = (lo + hi) >> 1; if (u[mid] < v) { lo = mid + 1; } else { hi = mid; } }
      r[i] = lo;
    }
    return r;
  }
  function rankKey(key) {
    var a = new Float64Array(N), i;
    if (key === 'issuer') { for (i = 0; i < N; i++) { a[i] = D.iss[W[i]]; } return a; }
    if (key === 'target_met') { for (i = 0; i < N; i++) { a[i] = met(W[i]) ? 1 : 0; } return a; }
    if (key === 'optimal_threshold' || key === 'closest_recall_value') {
      var col = key === 'optimal_threshold' ? D.thr : D.rec;
      for (i = 0; i < N; i++) { a[i] = col[W[i]]; }
      return ranks(a);
    }
    // path, experiment_date: the data carries every row's position in that order (dates by
    // instant, then path)
    var j = 0;
    ints(key === 'path' ? D.byPath : D.byDate).forEach(function (p) { if (rankOf[p] >= 0) { a[rankOf[p]] = j++; } });
    return a;
  }
  function order(key, dir) {  // the report rows' positions in this order; ties by model_id
    var name = key + ' ' + dir;
    if (orders[name]) { return orders[name]; }
    var idx = new Uint32Array(N), i;
    if (key === 'model_id') {  // the data's own order
      for (i = 0; i < N; i++) { idx[i] = W[dir === 'desc' ? N - 1 - i : i]; }
    } else {
      var r = rankKey(key), top = 0, packed = new Float64Array(N);
      for (i = 0; i < N; i++) { if (r[i] > top) { top = r[i]; } }
      for (i = 0; i < N; i++) { packed[i] = (dir === 'desc' ? top - r[i] : r[i]) * SHIFT + i; }
      packed.sort();
      for (i = 0; i < N; i++) { idx[i] = W[packed[i] % SHIFT]; }
    }
    orders[name] = idx;
    return idx;
  }
  function prefixRange(v) {  // model indices [lo, hi) whose id starts with v: W is by model_id
    function lower(x) { var lo = 0, hi = N; while (lo < hi) { var mid = (lo + hi) >> 1; if (id(W[mid]) < x) { lo = mid + 1; } else { hi = mid; } } return lo; }
    return [lower(v), lower(v + '\uffff')];
  }

  // ---- state, read from and written to the address's #fragment ----------------------------
  // The fragment is read as name=value pairs split on '&' and '=', each percent-decoded; unlike
  // URLSearchParams, '+' stays '+' (issuers such as a+ml@example.com), as does '%2B'.
  var SORTS = ['model_id', 'issuer', 'optimal_threshold', 'closest_recall_value', 'target_met', 'experiment_date', 'path'];
  var state = { sort: 'model_id', dir: 'asc', issuer: '', model: '', missed: false, open: '' };
  var selected = new Set(), byId = null;
  function dec(s) { try { return decodeURIComponent(s); } catch (e) { return s; } }
  function enc(s) { return encodeURIComponent(s).replace(/%40/g, '@').replace(/%2C/gi, ','); }
  function readHash() {
    var out = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
      if (!kv) { return; }
      var j = kv.indexOf('=');
      out[dec(j < 0 ? kv : kv.slice(0, j))] = j < 0 ? '' : dec(kv.slice(j + 1));
    });
    return out;
  }
  function indexOf(model) {
    if (!byId) { byId = new Map(); for (var i = 0; i < N; i++) { byId.set(id(W[i]), W[i]); } }
    var i2 = byId.get(String(model).toLowerCase());
    return i2 === undefined ? -1 : i2;
  }
  // The address is written a moment after the last change, not in the action itself: each new
  // address costs the browser (history, the location bar) far more than the action, and typing
  // in the search box would otherwise write one per key.
  var written = null, hashTimer = 0;
  function writeHash() { if (!hashTimer) { hashTimer = setTimeout(flushHash, 250); } }
  function flushHash() {
    clearTimeout(hashTimer); hashTimer = 0;
    var p = [];
    if (state.issuer) { p.push('issuer=' + enc(state.issuer)); }
    if (state.model) { p.push('model=' + enc(state.model)); }
    if (state.missed) { p.push('missed=1'); }
    if (state.sort !== 'model_id' || state.dir !== 'asc') { p.push('sort=' + state.sort, 'dir=' + state.dir); }
    if (selected.size) { p.push('cmp=' + Array.from(selected, function (i) { return id(i); }).join(',')); }
    if (state.open) { p.push('open=' + enc(state.open)); }
    var h = p.length ? '#' + p.join('&') : '';
    if (h === (location.hash === '#' ? '' : location.hash)) { return; }
    written = h;
    try { history.replaceState(null, '', h || location.pathname + location.search); } catch (e) { location.hash = h; }
  }
  window.addEventListener('pagehide', function () { if (hashTimer) { flushHash(); } });
  function applyHash() {
    var q = readHash();
    state.issuer = q.issuer || '';
    state.model = (q.model || '').trim().toLowerCase();
    state.missed = q.missed === '1';
    state.sort = SORTS.indexOf(q.sort) >= 0 ? q.sort : 'model_id';
    state.dir = q.dir === 'desc' ? 'desc' : 'asc';
    selected = new Set();
    (q.cmp ? q.cmp.split(',') : []).forEach(function (m) { var i = indexOf(m); if (i >= 0) { selected.add(i); } });
    state.open = q.open || '';
  }

  // ---- the table: only the rows on screen exist ---------------------------------------------
  var vp = $('viewport'), sizer = $('sizer'), rowsEl = $('rows'), view = new Uint32Array(0), active = 0, pool = [];
  var issuerEl = $('issuer'), search = $('search'), missedEl = $('missed');
  function whoIndex() {
    if (!state.issuer) { return -1; }
    var k = D.issuers.indexOf(state.issuer);
    if (k < 0) { var low = state.issuer.toLowerCase(); k = D.issuers.findIndex(function (x) { return x.toLowerCase() === low; }); }
    return k < 0 ? -2 : k;  // -2: an issuer no model has, so nothing matches
  }
  function recompute() {
    var ord = order(state.sort, state.dir), who = whoIndex(), lo = 0, hi = N;
    if (state.model) { var r = prefixRange(state.model); lo = r[0]; hi = r[1]; }
    if (who === -1 && !state.model && !state.missed) { view = ord; } else {
      var out = new Uint32Array(Math.min(N, hi - lo)), n = 0, iss = D.iss;
      for (var j = 0; j < N; j++) {
        var i = ord[j], r = rankOf[i];
        if (r < lo || r >= hi || (who !== -1 && iss[i] !== who) || (state.missed && met(i))) { continue; }
        out[n++] = i;
      }
      view = out.subarray(0, n);
    }
    active = Math.min(active, Math.max(0, view.length - 1));
    $('shown').textContent = num(view.length) + ' of ' + num(N) + ' shown';
    document.querySelectorAll('.head button').forEach(function (b) {
      if (b.dataset.key === state.sort) { b.dataset.dir = state.dir; } else { delete b.dataset.dir; }
      b.setAttribute('aria-sort', b.dataset.key === state.sort ? (state.dir === 'asc' ? 'ascending' : 'descending') : 'none');
    });
    $('grid').setAttribute('aria-rowcount', String(view.length + 1));
    sizer.style.height = view.length * ROW + 'px';
    draw();
  }
  function cell(row, cls) { var c = document.createElement('span'); c.setAttribute('role', 'gridcell'); if (cls) { c.className = cls; } row.appendChild(c); return c; }
  function makeRow() {
    var row = document.createElement('div');
    row.className = 'row'; row.setAttribute('role', 'row');
    var box = document.createElement('input');
    box.type = 'checkbox'; box.setAttribute('aria-label', 'select for comparison'); box.tabIndex = -1;
    cell(row, 'sel').appendChild(box);
    row.cells = [cell(row, 'id'), cell(row), cell(row, 'num'), cell(row, 'num'), cell(row), cell(row), cell(row)];
    cell(row, 'curve');  // the curves are drawn on one canvas over this column (see sparks)
    row.box = box; row.i = -1; row.pos = -1;
    rowsEl.appendChild(row);
    return row;
  }
  function fill(row, i, pos) {
    if (row.hidden) { row.hidden = false; }
    if (row.pos !== pos) { row.setAttribute('aria-rowindex', String(pos + 2)); row.pos = pos; }
    row.classList.toggle('active', pos === active);
    row.box.checked = selected.has(i);
    if (row.i === i) { return; }  // the same model as drawn: nothing else changes
    row.i = i;
    var c = row.cells, d = D.dates[i], ok = met(i), p = path(i), who = issuer(i);
    row.classList.toggle('miss', !ok);
    c[0].textContent = id(i); c[1].textContent = who; c[1].title = who;
    c[2].textContent = f4(D.thr[i]); c[3].textContent = f4(D.rec[i]);
    c[4].textContent = ok ? 'met' : 'below target'; c[4].className = ok ? 'ok' : 'flag';
    c[4].title = 'target recall ' + target(i);
    c[5].textContent = d; c[5].title = 'UTC ' + utc(d);
    c[6].textContent = p; c[6].title = p + ' (' + npts(i) + ' points)';
  }
  // The sparklines: one canvas beside the rows (same offset), a 120x26 curve per row, so that a
  // redraw costs a few canvas strokes instead of an SVG per row to restyle, lay out and paint.
  var spark = document.createElement('canvas'), sctx = spark.getContext('2d'), SW = 120, SH = 26;
  spark.className = 'sparks'; spark.setAttribute('aria-hidden', 'true');
  sizer.appendChild(spark);
  function sparks(first, count) {
    var rows = Math.max(0, Math.min(count, view.length - first));
    var dpr = window.devicePixelRatio || 1, w = Math.round(SW * dpr), h = Math.round(rows * ROW * dpr);
    if (spark.width !== w || spark.height !== h) {
      spark.width = w; spark.height = h; spark.style.height = rows * ROW + 'px';
    }
    sctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    sctx.clearRect(0, 0, SW, rows * ROW);
    for (var k = 0; k < rows; k++) {
      var i = view[first + k], top = k * ROW + (ROW - 1 - SH) / 2, pts = curve(i);
      var tg = top + 2 + (1 - target(i)) * 22;
      sctx.beginPath(); sctx.setLineDash([3, 2]); sctx.strokeStyle = '#b42318'; sctx.lineWidth = 1;
      sctx.moveTo(0, tg); sctx.lineTo(SW, tg); sctx.stroke(); sctx.setLineDash([]);
      sctx.beginPath(); sctx.strokeStyle = '#2e5aac'; sctx.lineWidth = 1.2;
      for (var q = 0; q < pts.length; q++) { sctx.lineTo(2 + pts[q][0] * 116, top + 2 + (1 - pts[q][1]) * 22); }
      sctx.stroke();
      sctx.beginPath(); sctx.fillStyle = '#b42318';
      sctx.arc(2 + D.thr[i] * 116, top + 2 + (1 - D.rec[i]) * 22, 2.5, 0, 2 * Math.PI); sctx.fill();
    }
  }
  // The viewport's height and scroll offset are kept here (from ResizeObserver and scroll events)
  // rather than read in draw(): a read after the DOM changed would force a layout in the action.
  var vpH = Math.max(120, window.innerHeight - 272), vpTop = 0, drawnRows = 0;
  function rowsFor(h) { return Math.ceil(h / ROW) + 1; }  // with a partly shown row at each end
  function draw() {
    var count = rowsFor(vpH), first = Math.floor(vpTop / ROW);
    first = Math.max(0, Math.min(first, view.length - count + 1));
    var shift = 'translateY(' + first * ROW + 'px)';
    rowsEl.style.transform = shift; spark.style.transform = shift;
    while (pool.length < count) { pool.push(makeRow()); }
    for (var k = 0; k < pool.length; k++) {
      var pos = first + k;
      if (k < count && pos < view.length) { fill(pool[k], view[pos], pos); } else if (!pool[k].hidden) { pool[k].hidden = true; }
    }
    sparks(first, count);
    drawnRows = count;
  }
  var pending = false;
  vp.addEventListener('scroll', function () {
    vpTop = vp.scrollTop;
    if (!pending) { pending = true; requestAnimationFrame(function () { pending = false; draw(); }); }
  });
  if (window.ResizeObserver) {
    new ResizeObserver(function () {
      // With fewer rows than fit, the viewport shrinks to them: that height is not the one to
      // draw for (the rows would be added again, one layout later, when the list grows back).
      var h = vp.clientHeight;
      vpH = h < view.length * ROW ? h : Math.max(vpH, h);
      if (rowsFor(vpH) > drawnRows || Math.round(SW * (window.devicePixelRatio || 1)) !== spark.width) { draw(); }
    }).observe(vp);
  } else {
    window.addEventListener('resize', function () { vpH = vp.clientHeight; draw(); });
  }
  function scrollList(top) { vpTop = Math.max(0, top); vp.scrollTop = vpTop; }
  function moveTo(pos) {
    if (!view.length) { return; }
    active = Math.max(0, Math.min(view.length - 1, pos));
    var top = active * ROW;
    if (top < vpTop) { scrollList(top); } else if (top + ROW > vpTop + vpH) { scrollList(top + ROW - vpH); }
    draw();
  }
  vp.addEventListener('keydown', function (e) {
    var page = Math.max(1, Math.floor(vpH / ROW) - 1), moves = { ArrowDown: 1, ArrowUp: -1, PageDown: page, PageUp: -page };
    if (e.key in moves) { moveTo(active + moves[e.key]); }
    else if (e.key === 'Home') { moveTo(0); } else if (e.key === 'End') { moveTo(view.length - 1); }
    else if (e.key === 'Enter' && view.length) { openDetail(view[active]); }
    else if (e.key === ' ' && view.length) { toggle(view[active]); }
    else { return; }
    e.preventDefault();
  });
  rowsEl.addEventListener('click', function (e) {
    var row = e.target.closest('.row');
    if (!row || row.hidden) { return; }
    var i = row.i;
    active = row.pos;
    if (e.target.type === 'checkbox') { toggle(i); } else { openDetail(i); }
  });
  function toggle(i) {
    if (selected.has(i)) { selected.delete(i); } else { selected.add(i); }
    selectionChanged();
  }
  function selectionChanged() {
    $('compare').disabled = selected.size < 2;
    $('compare').textContent = 'Compare selected (' + selected.size + ')';
    $('clear').disabled = selected.size === 0;
    writeHash();
    for (var k = 0; k < pool.length; k++) {  // the ticks, and the keyboard's row
      var row = pool[k];
      if (!row.hidden) { row.box.checked = selected.has(row.i); row.classList.toggle('active', row.pos === active); }
    }
  }
  document.querySelectorAll('.head button').forEach(function (b) {
    b.addEventListener('click', function () {
      var key = b.dataset.key;
      state.dir = state.sort === key && state.dir === 'asc' ? 'desc' : 'asc';
      state.sort = key;
      recompute(); writeHash();
    });
  });
  function controls() {
    state.issuer = issuerEl.value; state.model = search.value.trim().toLowerCase(); state.missed = missedEl.checked;
    if (vpTop) { scrollList(0); }
    active = 0;
    recompute(); writeHash();
  }
  if (D.issuers.length > 2000) {  // too many for a list: an exact (any case) e-mail instead
    var input = document.createElement('input');
    input.type = 'search'; input.id = 'issuer'; input.placeholder = 'exact e-mail';
    issuerEl.replaceWith(input); issuerEl = input;
    issuerEl.addEventListener('change', controls);
  } else {
    var frag = document.createDocumentFragment();
    D.issuers.forEach(function (x) { var o = document.createElement('option'); o.value = x; o.textContent = x; frag.appendChild(o); });
    issuerEl.appendChild(frag);
    issuerEl.addEventListener('change', controls);
  }
  search.addEventListener('input', controls);
  missedEl.addEventListener('change', controls);
  $('compare').addEventListener('click', function () { openCompare(); });
  $('clear').addEventListener('click', function () { selected.clear(); selectionChanged(); });

  // ---- the chart: axes with ticks, the target line, curves, chosen points, a hover read-out ----
  var CW = 720, CH = 440, ML = 58, MR = 20, MT = 18, MB = 50;
  var chart = $('chart'), readout = $('readout'), points = [], mainPts = [], cursor = -1, axes = null;
  function px(t) { return ML + t * (CW - ML - MR); }
  function py(r) { return MT + (1 - r) * (CH - MT - MB); }
  function el(name, attrs, text, parent) {
    var e = document.createElementNS(SVGNS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    (parent || chart).appendChild(e);
    return e;
  }
  function drawChart(series, tgt) {
    points = []; cursor = -1;
    if (!axes) {  // the grid, ticks and axis titles never change: built once, kept
      axes = el('g', { 'class': 'axes' });
      var grid = el('g', { 'class': 'grid' }, undefined, axes);
      for (var k = 0; k <= 10; k++) {
        var v = k / 10;
        el('line', { x1: px(v), x2: px(v), y1: py(0), y2: py(1) }, undefined, grid);
        el('line', { x1: px(0), x2: px(1), y1: py(v), y2: py(v) }, undefined, grid);
        el('text', { x: px(v), y: py(0) + 18, 'text-anchor': 'middle' }, v.toFixed(1), axes);
        el('text', { x: px(0) - 8, y: py(v) + 4, 'text-anchor': 'end' }, v.toFixed(1), axes);
      }
      el('path', { 'class': 'axis', d: 'M' + px(0) + ' ' + py(1) + 'V' + py(0) + 'H' + px(1), fill: 'none' }, undefined, axes);
      el('text', { 'class': 'title', x: (px(0) + px(1)) / 2, y: CH - 8, 'text-anchor': 'middle' }, 'threshold', axes);
      el('text', { 'class': 'title', transform: 'translate(16 ' + (py(0) + py(1)) / 2 + ') rotate(-90)', 'text-anchor': 'middle' }, 'recall', axes);
    }
    while (chart.lastChild && chart.lastChild !== axes) { chart.removeChild(chart.lastChild); }
    el('line', { 'class': 'tline', x1: px(0), x2: px(1), y1: py(tgt), y2: py(tgt) });
    el('text', { 'class': 'tlabel', x: px(1) - 4, y: py(tgt) - 6, 'text-anchor': 'end' }, 'target recall ' + tgt);
    series.forEach(function (s, n) {
      el('polyline', { 'class': 'series', stroke: s.color, 'stroke-width': s.main ? 2.5 : 1.8,
        points: s.pts.map(function (p) { return px(p[0]).toFixed(1) + ',' + py(p[1]).toFixed(1); }).join(' ') });
      s.pts.forEach(function (p, k) { points.push({ s: s, t: p[0], r: p[1], k: k, n: s.pts.length, drawn: true }); });
      if (s.chosen) {
        points.push({ s: s, t: s.chosen[0], r: s.chosen[1], drawn: false });
        el('circle', { 'class': 'pt chosen', cx: px(s.chosen[0]), cy: py(s.chosen[1]), r: s.main ? 6 : 4.5, fill: s.color, 'data-series': n });
        if (s.main) {
          var right = s.chosen[0] < 0.6;
          el('text', { x: px(s.chosen[0]) + (right ? 10 : -10), y: py(s.chosen[1]) + 18, 'text-anchor': right ? 'start' : 'end', 'class': 'title' },
            'chosen: threshold ' + f4(s.chosen[0]) + ', recall ' + f4(s.chosen[1]));
        }
      }
    });
    mainPts = points.filter(function (p) { return p.s === series[0] && p.drawn; });
    var legend = $('serieslegend');
    legend.textContent = '';
    series.forEach(function (s) {
      var item = document.createElement('span'), sw = document.createElement('span');
      sw.className = 'swatch'; sw.style.background = s.color; item.appendChild(sw);
      item.appendChild(document.createTextNode(s.label + (s.main ? ' (the report row)' : '')));
      legend.appendChild(item);
    });
    el('line', { 'class': 'cross', id: 'crossx', visibility: 'hidden' });
    el('circle', { 'class': 'hover', id: 'hover', r: 8, visibility: 'hidden' });
    readout.textContent = 'Hover or tap a point (or use the arrow keys on the chart) to read its threshold and recall.';
    delete readout.dataset.threshold; delete readout.dataset.recall;
  }
  function show(p) {
    var h = $('hover'), x = $('crossx');
    h.setAttribute('cx', px(p.t)); h.setAttribute('cy', py(p.r)); h.setAttribute('visibility', 'visible');
    x.setAttribute('x1', px(p.t)); x.setAttribute('x2', px(p.t)); x.setAttribute('y1', py(0)); x.setAttribute('y2', py(1));
    x.setAttribute('visibility', 'visible');
    var who = p.s.label ? p.s.label + ': ' : '';
    readout.textContent = p.drawn
      ? who + 'threshold ' + f3(p.t) + ', recall ' + f3(p.r) + ' (drawn point ' + (p.k + 1) + ' of ' + p.n + ', to within 0.002)'
      : who + 'chosen point: threshold ' + f4(p.t) + ', recall ' + f4(p.r);
    readout.dataset.threshold = String(p.t); readout.dataset.recall = String(p.r);
  }
  function nearest(e) {
    var box = chart.getBoundingClientRect(), scale = CW / box.width;
    var x = (e.clientX - box.left) * scale, y = (e.clientY - box.top) * scale, best = null, bd = Infinity;
    points.forEach(function (p) {
      var d = Math.pow(px(p.t) - x, 2) + Math.pow(py(p.r) - y, 2) - (p.drawn ? 0 : 30);  // the chosen point wins near ties
      if (d < bd) { bd = d; best = p; }
    });
    if (best) { show(best); }
  }
  chart.addEventListener('pointermove', nearest);
  chart.addEventListener('pointerdown', nearest);
  chart.addEventListener('keydown', function (e) {
    var step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
    if (!step || !mainPts.length) { return; }
    cursor = Math.max(0, Math.min(mainPts.length - 1, cursor < 0 ? (step > 0 ? 0 : mainPts.length - 1) : cursor + step));
    show(mainPts[cursor]); e.preventDefault();
  });

  // ---- a model's detail, and the comparison of several ----------------------------------------
  var dialog = $('detail'), grouped = null;
  function fact(dl, name, value, title) {
    var dt = document.createElement('dt'), dd = document.createElement('dd');
    dt.textContent = name; dd.textContent = value; if (title) { dd.title = title; }
    dl.appendChild(dt); dl.appendChild(dd);
  }
  function table(parent, head, rows) {
    var t = document.createElement('table'), tr = t.createTHead().insertRow(), body = t.createTBody();
    head.forEach(function (h) { var th = document.createElement('th'); th.textContent = h; tr.appendChild(th); });
    rows.forEach(function (r) {
      var row = body.insertRow();
      r.forEach(function (v) { var c = row.insertCell(); if (v instanceof Node) { c.appendChild(v); } else { c.textContent = v; } });
    });
    parent.appendChild(t);
    return t;
  }
  function group() {  // other experiments by model index, built on first use
    if (grouped) { return grouped; }
    grouped = new Map();
    function add(k, kind, v) { if (!grouped.has(k)) { grouped.set(k, { others: [], earlier: [] }); } grouped.get(k)[kind].push(v); }
    superseded.forEach(function (ps, w) { ps.forEach(function (p) { add(w, 'others', p); }); });
    D.earlier.forEach(function (h) { add(h[0], 'earlier', h); });
    return grouped;
  }
  function openDialog(title) {
    $('dtitle').textContent = title; $('dfacts').textContent = ''; $('dlegend').textContent = ''; $('dothers').textContent = '';
  }
  function showDialog() {  // after its content is in: showModal lays the page out once, with it
    if (!dialog.open) { dialog.showModal(); }
    if (document.activeElement !== chart) { chart.focus(); }
  }
  function openDetail(i) {
    state.open = id(i); writeHash();
    openDialog('model ' + id(i));
    var dl = $('dfacts'), d = D.dates[i], tg = target(i);
    fact(dl, 'issuer', issuer(i)); fact(dl, 'file', path(i));
    fact(dl, 'chosen threshold', f4(D.thr[i]), 'stored value ' + D.thr[i]); fact(dl, 'recall there', f4(D.rec[i]), 'stored value ' + D.rec[i]);
    fact(dl, 'target recall', String(tg)); fact(dl, 'target', met(i) ? 'met' : 'below target');
    fact(dl, 'experiment date', d, 'UTC ' + utc(d)); fact(dl, 'points', npts(i) + ' (' + curve(i).length + ' drawn)');
    var mine = group().get(i) || { others: [], earlier: [] };
    var series = [{ label: path(i), color: COLORS[0], pts: curve(i), chosen: [D.thr[i], D.rec[i]], main: true }];
    var extra = mine.others.map(function (o, k) {
      return { label: path(o), color: COLORS[1 + k % (COLORS.length - 1)], pts: curve(o), chosen: [D.thr[o], D.rec[o]], on: true };
    });
    function redraw() { drawChart(series.concat(extra.filter(function (s) { return s.on; })), tg); }
    var box = $('dothers');
    if (extra.length) {
      var h = document.createElement('h3'); h.textContent = 'Other files of this model (superseded by the file above)'; box.appendChild(h);
      table(box, ['overlay', 'file', 'issuer', 'experiment date', 'threshold', 'recall', 'target'], mine.others.map(function (o, k) {
        var c = document.createElement('input'); c.type = 'checkbox'; c.checked = true;
        c.setAttribute('aria-label', 'overlay ' + path(o));
        c.addEventListener('change', function () { extra[k].on = c.checked; redraw(); });
        var sw = document.createElement('span'); sw.className = 'swatch'; sw.style.background = extra[k].color;
        var lab = document.createElement('label'); lab.appendChild(c); lab.appendChild(sw);
        return [lab, path(o), issuer(o), D.dates[o], f4(D.thr[o]), f4(D.rec[o]), met(o) ? 'met' : 'below target'];
      }));
    }
    if (mine.earlier.length) {
      var h2 = document.createElement('h3'); h2.textContent = 'Earlier outcomes (history; no longer in the folder as recorded)'; box.appendChild(h2);
      table(box, ['at', 'outcome', 'file', 'content (sha256)'], mine.earlier.map(function (e) { return [e[1], e[3], e[2], e[4]]; }));
      var p = document.createElement('p'); p.className = 'hint';
      p.textContent = 'The database keeps no curve or point for content since replaced or removed.' + (D.historyNote ? ' ' + D.historyNote : '');
      box.appendChild(p);
    }
    if (!extra.length && !mine.earlier.length) {
      var none = document.createElement('p'); none.className = 'hint'; none.textContent = 'No other experiments of this model.'; box.appendChild(none);
    }
    redraw();
    showDialog();
  }
  function openCompare() {
    if (selected.size < 2) { return; }
    state.open = 'compare'; writeHash();
    var list = Array.from(selected);
    openDialog('Comparing ' + list.length + ' models');
    var series = list.map(function (i, k) {
      return { label: id(i), color: COLORS[k % COLORS.length], pts: curve(i), chosen: [D.thr[i], D.rec[i]] };
    });
    drawChart(series, target(list[0]));
    table($('dlegend'), ['', 'model_id', 'issuer', 'threshold', 'recall', 'target', 'file'], list.map(function (i, k) {
      var sw = document.createElement('span'); sw.className = 'swatch'; sw.style.background = series[k].color;
      return [sw, id(i), issuer(i), f4(D.thr[i]), f4(D.rec[i]), met(i) ? 'met' : 'below target', path(i)];
    })).id = 'legend';
    showDialog();
  }
  dialog.addEventListener('close', function () { state.open = ''; writeHash(); vp.focus(); });

  // ---- rejected files: all of them, searchable, shown a page at a time ------------------------
  var rej = D.rejections, rejHay = null, rejMatch = [], rejLimit = 200, rejBody = $('rejections').tBodies[0];
  $('rejcount').textContent = num(rej.length);
  function rejFilter() {
    var q = $('rejsearch').value.trim().toLowerCase();
    if (q && !rejHay) { rejHay = rej.map(function (r) { return (r[0] + '\n' + r[2].map(function (e) { return (e[0] || '') + ': ' + e[1]; }).join('\n')).toLowerCase(); }); }
    rejMatch = [];
    for (var i = 0; i < rej.length; i++) { if (!q || rejHay[i].indexOf(q) >= 0) { rejMatch.push(i); } }
    rejLimit = 200; rejDraw();
  }
  function rejDraw() {
    rejBody.textContent = '';
    rejMatch.slice(0, rejLimit).forEach(function (i) {
      var r = rej[i], tr = rejBody.insertRow(), ul = document.createElement('ul');
      tr.insertCell().textContent = r[0];
      var at = tr.insertCell(); at.textContent = r[1]; at.className = 'nw';
      ul.className = 'reasons';
      r[2].forEach(function (e) {
        var li = document.createElement('li'), b = document.createElement('b');
        b.textContent = e[0] || '(file)'; li.appendChild(b); li.appendChild(document.createTextNode(': ' + e[1])); ul.appendChild(li);
      });
      tr.insertCell().appendChild(ul);
    });
    $('rejshown').textContent = num(rejMatch.length) + ' match' + (rejMatch.length > rejLimit ? ', first ' + rejLimit + ' listed' : '');
    $('rejmore').hidden = rejMatch.length <= rejLimit;
  }
  $('rejsearch').addEventListener('input', rejFilter);
  $('rejmore').addEventListener('click', function () { rejLimit += 200; rejDraw(); });

  // ---- start ------------------------------------------------------------------------------
  function fromHash() {
    applyHash();
    issuerEl.value = state.issuer;
    if (state.issuer && issuerEl.value !== state.issuer && issuerEl.tagName === 'SELECT') {  // not one listed
      var k = whoIndex();
      if (k >= 0) { issuerEl.value = D.issuers[k]; } else {
        var o = document.createElement('option'); o.value = state.issuer; o.textContent = state.issuer + ' (no models)';
        issuerEl.appendChild(o); issuerEl.value = state.issuer;
      }
    }
    search.value = state.model; missedEl.checked = state.missed;
    recompute(); selectionChanged();
    if (state.open === 'compare') { openCompare(); } else if (state.open) {
      var i = indexOf(state.open);
      if (i >= 0) { openDetail(i); } else { state.open = ''; writeHash(); }
    } else if (dialog.open) { dialog.close(); }
  }
  window.addEventListener('hashchange', function () { if (location.hash !== written) { fromHash(); } });
  var missed = (function () { var m = 0, k; for (k = 0; k < N; k++) { if (D.met.charCodeAt(W[k]) !== 49) { m++; } } return m; })();
  var meta = $('meta');
  meta.textContent = 'Generated ' + D.generated + ' \u00b7 target recall ' + D.target + ' \u00b7 ' + num(N) + ' models \u00b7 ';
  var flag = document.createElement('span'); flag.className = missed ? 'flag' : 'ok'; flag.id = 'missedcount';
  flag.textContent = num(missed) + ' below target'; meta.appendChild(flag);
  meta.appendChild(document.createTextNode(' \u00b7 ' + num(rej.length) + ' rejected files'));
  if (D.omitted) {
    $('note').hidden = false;
    $('note').textContent = num(D.omitted) + ' older models are not on this page (html_max_models); every model is in report.csv, report.json and the database.';
  }
  // For scripts and tests: what the table shows, in its order, over all the rows it holds.
  window.report = {
    models: N,
    count: function () { return view.length; },
    ids: function (from, to) {
      var out = [];
      for (var k = from; k < Math.min(to, view.length); k++) { out.push(id(view[k])); }
      return out;
    }
  };
  fromHash();
  rejFilter();
  // Ready once the first screen's frame is done (the task after its rendering), as the benchmark
  // times actions; a second requestAnimationFrame would add up to a frame's wait to the figure.
  requestAnimationFrame(function () { setTimeout(function () { window.readyAt = performance.now(); document.body.dataset.ready = '1'; warm(SORTS.slice(1)); }, 0); });
  // Then, while the page is idle, each column's ascending order, one column per idle moment: a
  // first click on a header finds its order ready instead of computing it.
  function warm(keys) {
    var idle = window.requestIdleCallback || function (f) { return setTimeout(f, 50); };
    if (keys.length) { idle(function () { order(keys[0], 'asc'); warm(keys.slice(1)); }); }
  }
})();

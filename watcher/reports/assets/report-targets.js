    (D.extraTargets || []).forEach(function (t) {  // the other targets (extra_targets): a line each
      el('line', { 'class': 'tline extra', x1: px(0), x2: px(1), y1: py(t), y2: py(t) });
      el('text', { 'class': 'tlabel extra', x: px(0) + 4, y: py(t) - 6, 'text-anchor': 'start' }, 'target recall ' + t);
    });

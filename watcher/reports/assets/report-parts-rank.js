    if (D.pathRank) {  // a page in parts: each row's rank in the whole page's order (report-parts.js)
      var pr = key === 'path' ? D.pathRank : D.dateRank;
      for (i = 0; i < N; i++) { a[i] = pr[W[i]]; }
      return a;
    }

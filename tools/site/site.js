// The offline docs site's behaviour (tools/docs.py copies it to _static/): typesets the maths with KaTeX and runs
// the search box over a lunr index of every page's sections. Nothing here reaches outside the site.
(function () {
  'use strict';
  var root = document.body.getAttribute('data-root') || '';

  // Maths: tools/docs.py leaves each formula's original TeX in a <span class="math inline|display">.
  function typeset() {
    document.querySelectorAll('span.math').forEach(function (el) {
      katex.render(el.textContent, el, {displayMode: el.classList.contains('display'), throwOnError: false});
    });
  }

  // Search: the documents (one per section of each page) are in _static/search-index.js, loaded on first use.
  var index = null, docs = null, loading = null;
  function load(src) {
    return new Promise(function (ok, fail) {
      var s = document.createElement('script');
      s.src = root + src; s.onload = ok; s.onerror = function () { fail(new Error('could not load ' + src)); };
      document.head.appendChild(s);
    });
  }
  function ready() {
    if (!loading) loading = Promise.all([load('_static/lunr.min.js'), load('_static/search-index.js')]).then(function () {
      // Words are letters, digits, '_' and '.' (lunr's default splits on spaces and '-' only, so code such as
      // `weights_only=False)[0][5]` was one term).
      lunr.tokenizer.separator = /[^\p{L}\p{N}_.]+/u;
      // lunr 2.3.9 merges equal suffixes of its terms by a key of each node, its edges' labels followed by their
      // nodes' ids: with digits among the labels two different nodes can get the same key (edges '1' to node 23 and
      // '5' to node 7 read as '1' to node 2 and '3' to node 57), the index then answers a prefix with terms it does
      // not hold, and the query throws (typing 'w', or '1', on these pages). Keys with delimiters:
      lunr.TokenSet.prototype.toString = function () {
        if (this._str) return this._str;
        var str = this.final ? '1' : '0', labels = Object.keys(this.edges).sort();
        for (var i = 0; i < labels.length; i++) str += labels[i] + ',' + this.edges[labels[i]].id + ';';
        return str;
      };
      docs = window.SEARCH_DOCS;
      index = lunr(function () {
        this.ref('i');
        this.field('t', {boost: 10}); this.field('p', {boost: 3}); this.field('b');
        this.metadataWhitelist = ['position'];
        for (var i = 0; i < docs.length; i++) this.add({i: i, t: docs[i].t, p: docs[i].p, b: docs[i].b});
      });
    });
    return loading;
  }
  function find(q) {
    var terms = lunr.tokenizer(q);
    if (!terms.length) return [];
    return index.query(function (query) {
      terms.forEach(function (tok) {
        var t = tok.toString();
        query.term(t, {boost: 10});   // the word itself, stemmed like the index
        query.term(t, {usePipeline: false, wildcard: lunr.Query.wildcard.TRAILING, boost: 1});   // as a prefix, while typing
      });
    });
  }
  function snippet(text, q) {
    var i = text.toLowerCase().indexOf(q.toLowerCase().split(/\s+/)[0]);
    var s = Math.max(0, i - 60);
    return (s > 0 ? '… ' : '') + text.slice(s, s + 160) + (s + 160 < text.length ? ' …' : '');
  }
  function setupSearch() {
    var box = document.getElementById('search-box'), list = document.getElementById('search-results');
    if (!box) return;
    var active = -1;
    function show(q) {
      list.innerHTML = '';
      active = -1;
      if (!q.trim()) { list.classList.remove('open'); return; }
      var hits = find(q).slice(0, 12);
      if (!hits.length) {
        var li = document.createElement('li'); li.className = 'none'; li.textContent = 'No results for “' + q + '”';
        list.appendChild(li);
      }
      hits.forEach(function (h) {
        var d = docs[+h.ref], li = document.createElement('li'), a = document.createElement('a');
        a.href = root + d.u;
        [['where', d.p], ['title', d.t], ['snippet', snippet(d.b, q)]].forEach(function (x) {
          if (!x[1] || (x[0] === 'title' && x[1] === d.p)) return;
          var div = document.createElement('div'); div.className = x[0]; div.textContent = x[1]; a.appendChild(div);
        });
        li.appendChild(a); list.appendChild(li);
      });
      list.classList.add('open');
    }
    function update() { var q = box.value; ready().then(function () { if (box.value === q) show(q); }); }
    box.addEventListener('focus', function () { ready(); if (box.value) update(); });
    box.addEventListener('input', update);
    box.addEventListener('keydown', function (e) {
      var links = list.querySelectorAll('a');
      if (e.key === 'Escape') { list.classList.remove('open'); box.blur(); return; }
      if (!links.length) return;
      if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault();
        if (active >= 0) links[active].classList.remove('active');
        active = (active + (e.key === 'ArrowDown' ? 1 : links.length - 1 + (active < 0 ? 1 : 0))) % links.length;
        links[active].classList.add('active'); links[active].scrollIntoView({block: 'nearest'});
      } else if (e.key === 'Enter') {
        e.preventDefault(); window.location.href = links[Math.max(active, 0)].href;
      }
    });
    document.addEventListener('click', function (e) { if (!e.target.closest('.search')) list.classList.remove('open'); });
    document.addEventListener('keydown', function (e) {
      if (e.key === '/' && document.activeElement !== box) { e.preventDefault(); box.focus(); }
    });
  }

  typeset();
  setupSearch();
})();

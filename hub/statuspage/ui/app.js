// Backhaul status page. Plain DOM, no framework, no build step: the hub
// embeds this file as is. It draws only the rows or tiles on screen, so a
// fleet of 10,000 clusters costs what a screenful does; data comes from
// /status/api/clusters (polled with If-None-Match) and, for the clusters
// on screen only, /status/api/history. Everything from the hub is put in
// the page with textContent, never parsed as HTML.
'use strict';
(() => {
  // Must match app.css.
  const ROW_H = 34, TILE_MIN_W = 232, TILE_H = 140, GAP = 12, OVERSCAN = 6;
  const TOKEN_KEY = 'backhaul-status-token';
  const HISTORY_TTL_MS = 60000, HISTORY_BATCH = 100, HOUR_S = 3600;
  const SVG = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);

  const state = {
    clusters: [], shown: [], etag: '', pollMs: 5000, timer: 0, lastOK: 0,
    view: 'table', query: '', filter: 'all', sort: { key: 'name', desc: false },
    history: new Map(), wanted: new Set(), historyTimer: 0, historyBusy: false,
    drawn: false, frame: 0,
  };

  // --- credentials -----------------------------------------------------
  const token = () => sessionStorage.getItem(TOKEN_KEY) || '';
  function headers(extra) {
    const h = Object.assign({}, extra);
    const t = token();
    if (t) h.Authorization = 'Bearer ' + t;
    return h;
  }

  function showLogin(message) {
    clearTimeout(state.timer);
    $('app').hidden = true;
    $('login').hidden = false;
    $('who').textContent = '';
    $('summary').replaceChildren();
    const err = $('login-error');
    err.textContent = message || '';
    err.hidden = !message;
    $('token').focus();
  }

  async function errorText(res) {
    try {
      const st = await res.json();
      if (st && st.message) return st.message;
    } catch (_) { /* not a Status */ }
    return res.status + ' ' + res.statusText;
  }

  // --- polling ---------------------------------------------------------
  async function poll() {
    clearTimeout(state.timer);
    try {
      const t0 = performance.now();
      const res = await fetch('/status/api/clusters', {
        headers: headers(state.etag ? { 'If-None-Match': state.etag } : {}),
        cache: 'no-store', credentials: 'same-origin',
      });
      if (res.status === 401) {
        const had = !!token();
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin(had ? 'The hub did not accept that token.' : '');
        return;
      }
      if (res.status !== 304) {
        if (!res.ok) throw new Error(await errorText(res));
        const text = await res.text();
        const t1 = performance.now();
        const data = JSON.parse(text);
        const t2 = performance.now();
        apply(data, res.headers.get('ETag') || '');
        const t3 = performance.now();
        performance.measure('status-fetch', { start: t0, end: t1 });
        performance.measure('status-parse', { start: t1, end: t2 });
        performance.measure('status-apply', { start: t2, end: t3 });
      }
      state.lastOK = Date.now();
      showError('');
    } catch (e) {
      showError('Cannot reach the hub: ' + e.message + ' — showing the last data.');
    }
    updated();
    state.timer = setTimeout(poll, state.pollMs);
  }

  function showError(msg) {
    const el = $('error');
    el.textContent = msg;
    el.hidden = !msg;
  }

  function updated() {
    const el = $('updated');
    if (!state.lastOK) { el.textContent = ''; return; }
    const age = Math.round((Date.now() - state.lastOK) / 1000);
    el.textContent = 'checked ' + (age < 2 ? 'just now' : age + 's ago');
    el.classList.toggle('stale', Date.now() - state.lastOK > 3 * state.pollMs);
  }

  function apply(data, etag) {
    state.etag = etag;
    state.pollMs = Math.max(1000, (data.pollSeconds || 5) * 1000);
    for (const c of data.clusters) {
      c.state = !c.connected ? 'disconnected' : (c.ready ? 'connected' : 'notready');
      c.search = [c.name, c.agentVersion, c.kubernetesVersion, (c.replicas || []).join(' '),
        c.lastDisconnectReason, c.lastRefusalReason, c.readyMessage, c.state,
        c.flapping ? 'flapping' : ''].join('\n').toLowerCase();
    }
    state.clusters = data.clusters;
    $('who').textContent = data.user + ' · via ' + data.replica;
    $('login').hidden = true;
    $('app').hidden = false;
    $('signout').hidden = !token();
    summary();
    refilter();
  }

  // --- summary, filter, sort -------------------------------------------
  function summary() {
    const n = { total: 0, connected: 0, disconnected: 0, notready: 0, flapping: 0 };
    for (const c of state.clusters) {
      n.total++;
      n[c.state === 'notready' ? 'notready' : c.state]++;
      if (c.state === 'notready') n.connected++;
      if (c.flapping) n.flapping++;
    }
    const item = (label, v, cls) => {
      const d = document.createElement('span');
      d.className = 'count' + (v && cls ? ' ' + cls : '');
      const b = document.createElement('b');
      b.textContent = String(v);
      d.append(b, label);
      return d;
    };
    $('summary').replaceChildren(item('clusters', n.total), item('connected', n.connected),
      item('disconnected', n.disconnected, 'bad'), item('not ready', n.notready, 'warn'),
      item('flapping', n.flapping, 'warn'));
  }

  const filters = {
    all: () => true,
    connected: (c) => c.connected,
    disconnected: (c) => !c.connected,
    notready: (c) => c.state === 'notready',
    flapping: (c) => !!c.flapping,
  };
  const rank = { disconnected: 0, notready: 1, connected: 2 };
  const keys = {
    name: (c) => c.name,
    state: (c) => rank[c.state] * 2 + (c.flapping ? 0 : 1),
    rtt: (c) => c.rttMicros || 0,
    streams: (c) => c.streams || 0,
    bytes: (c) => (c.bytesTx || 0) + (c.bytesRx || 0),
    reconnects: (c) => c.reconnects || 0,
    agent: (c) => c.agentVersion || '',
  };

  function refilter() {
    const q = state.query.trim().toLowerCase();
    const f = filters[state.filter] || filters.all;
    const shown = state.clusters.filter((c) => f(c) && (!q || c.search.includes(q)));
    // The hub sends the fleet sorted by name: the default order is free.
    if (state.sort.key !== 'name' || state.sort.desc) {
      const key = keys[state.sort.key] || keys.name;
      const dir = state.sort.desc ? -1 : 1;
      shown.sort((a, b) => {
        const x = key(a), y = key(b);
        return (x < y ? -1 : x > y ? 1 : (a.name < b.name ? -1 : 1)) * dir;
      });
    }
    state.shown = shown;
    $('shown').textContent = shown.length === state.clusters.length
      ? shown.length + ' shown' : shown.length + ' of ' + state.clusters.length + ' shown';
    render();
  }

  // --- drawing ---------------------------------------------------------
  function render() {
    if (state.view === 'table') renderTable(); else renderTiles();
    if (!state.drawn && state.shown.length) {
      state.drawn = true;
      performance.mark('status-first-rows');
    }
  }

  function scheduleRender() {
    if (state.frame) return;
    state.frame = requestAnimationFrame(() => { state.frame = 0; render(); });
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function spacerRow(px) {
    const tr = el('tr', 'spacer');
    const td = el('td');
    td.colSpan = 10;
    tr.style.height = px + 'px';
    tr.append(td);
    return tr;
  }

  function renderTable() {
    const sc = $('table-view');
    const n = state.shown.length;
    const first = Math.max(0, Math.floor(Math.max(0, sc.scrollTop - ROW_H) / ROW_H) - OVERSCAN);
    const last = Math.min(n, first + Math.ceil(sc.clientHeight / ROW_H) + 2 * OVERSCAN);
    const frag = document.createDocumentFragment();
    if (!n) {
      const tr = el('tr');
      const td = el('td', 'empty', state.clusters.length ? 'No cluster matches.' : 'No cluster is registered.');
      td.colSpan = 10;
      tr.append(td);
      frag.append(tr);
    } else {
      frag.append(spacerRow(first * ROW_H));
      for (let i = first; i < last; i++) frag.append(tableRow(state.shown[i]));
      frag.append(spacerRow((n - last) * ROW_H));
    }
    $('rows').replaceChildren(frag);
    wantHistory(state.shown.slice(first, last));
  }

  function stateCell(c) {
    const s = el('span', 'state');
    s.append(el('span', 'dot ' + c.state), stateWords[c.state]);
    if (c.flapping) s.append(el('span', 'badge', 'flapping'));
    return s;
  }

  function tableRow(c) {
    const tr = el('tr', 'row' + (c.flapping ? ' flapping' : ''));
    tr.dataset.name = c.name;
    tr.dataset.state = c.state;
    if (c.flapping) tr.dataset.flapping = 'true';
    const td = (content, cls, title) => {
      const d = el('td', cls);
      if (content instanceof Node) d.append(content); else d.textContent = content;
      if (title) d.title = title;
      tr.append(d);
    };
    td(c.name, 'name', c.name);
    td(stateCell(c), '', c.readyMessage || '');
    td(dur(c.rttMicros), '', c.rttP99Micros ? 'p99 ' + dur(c.rttP99Micros) : '');
    td(sparkline(c.name));
    td(String(c.streams || 0));
    td(bytes(c.bytesTx) + ' / ' + bytes(c.bytesRx));
    td(String(c.reconnects || 0));
    td(c.agentVersion || '—', '', c.kubernetesVersion ? 'Kubernetes ' + c.kubernetesVersion : '');
    td((c.replicas || []).join(', ') || '—');
    td(disconnect(c), '', refusal(c));
    return tr;
  }

  function renderTiles() {
    const sc = $('tiles-view');
    const grid = $('tiles');
    const n = state.shown.length;
    // As many columns as fit, stretched to the width.
    const cols = Math.max(1, Math.floor((sc.clientWidth - GAP) / (TILE_MIN_W + GAP)));
    const w = Math.floor((sc.clientWidth - GAP) / cols) - GAP;
    const rows = Math.ceil(n / cols);
    const step = TILE_H + GAP;
    grid.style.height = (rows * step + GAP) + 'px';
    const firstRow = Math.max(0, Math.floor(sc.scrollTop / step) - 1);
    const lastRow = Math.min(rows, Math.ceil((sc.scrollTop + sc.clientHeight) / step) + 1);
    const frag = document.createDocumentFragment();
    const visible = [];
    for (let r = firstRow; r < lastRow; r++) {
      for (let col = 0; col < cols; col++) {
        const c = state.shown[r * cols + col];
        if (!c) break;
        const t = tile(c);
        t.style.width = w + 'px';
        t.style.transform = 'translate(' + (GAP + col * (w + GAP)) + 'px,' + (GAP + r * step) + 'px)';
        frag.append(t);
        visible.push(c);
      }
    }
    if (!n) frag.append(el('p', 'muted', state.clusters.length ? 'No cluster matches.' : 'No cluster is registered.'));
    grid.replaceChildren(frag);
    wantHistory(visible);
  }

  const stateWords = { connected: 'connected', notready: 'not ready', disconnected: 'disconnected' };

  function tile(c) {
    const t = el('div', 'tile ' + c.state + (c.flapping ? ' flapping' : ''));
    t.dataset.name = c.name;
    t.dataset.state = c.state;
    if (c.flapping) t.dataset.flapping = 'true';
    const title = el('div', 'title');
    title.append(el('span', 'dot ' + c.state), el('span', 'name', c.name));
    if (c.flapping) title.append(el('span', 'badge', 'flapping'));
    title.title = c.name;
    const facts = (text, tip) => { const f = el('div', 'facts', text); if (tip) f.title = tip; return f; };
    const status = c.connected
      ? stateWords[c.state] + ' · up ' + since(c.connectedSince) + (c.readyMessage ? ' · ' + c.readyMessage : '')
      : 'disconnected · ' + disconnect(c);
    t.append(title,
      facts(status, [c.readyMessage, refusal(c)].filter(Boolean).join('\n')),
      facts('RTT ' + dur(c.rttMicros) + (c.rttP99Micros ? ' · p99 ' + dur(c.rttP99Micros) : '') +
        ' · ' + plural(c.reconnects || 0, 'reconnect')),
      facts(plural(c.streams || 0, 'stream') + ' · ↑' + bytes(c.bytesTx) + ' ↓' + bytes(c.bytesRx)),
      facts('agent ' + (c.agentVersion || '—') + ' · ' + ((c.replicas || []).join(', ') || 'no replica')),
      sparkline(c.name));
    return t;
  }

  // --- history ----------------------------------------------------------
  function sparkline(name) {
    const h = state.history.get(name);
    if (h && !h.samples.length) {
      const none = el('span', 'spark', 'no samples');
      none.title = 'no round trip measured through this hub replica in the last hour';
      return none;
    }
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', '0 0 60 20');
    svg.setAttribute('preserveAspectRatio', 'none');
    const base = document.createElementNS(SVG, 'line');
    for (const [k, v] of [['x1', 0], ['y1', 19.5], ['x2', 60], ['y2', 19.5]]) base.setAttribute(k, v);
    svg.append(base);
    const tip = document.createElementNS(SVG, 'title');
    if (!h) {
      tip.textContent = 'loading…';
      svg.append(tip);
      return svg;
    }
    const samples = h.samples;
    const now = Date.now() / 1000;
    let max = 1, min = Infinity;
    for (const [, us] of samples) { max = Math.max(max, us); min = Math.min(min, us); }
    const pts = samples.map(([at, us]) => {
      const x = Math.min(60, Math.max(0, 60 - (now - at) / HOUR_S * 60));
      const y = 19 - (us / max) * 17;
      return x.toFixed(1) + ',' + y.toFixed(1);
    });
    if (pts.length === 1) pts.push(pts[0].replace(/^[^,]*/, (x) => String(Math.min(60, +x + 1))));
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('points', pts.join(' '));
    line.setAttribute('vector-effect', 'non-scaling-stroke');
    tip.textContent = 'RTT, last hour (one sample a minute): ' + dur(min) + ' – ' + dur(max);
    svg.append(line, tip);
    return svg;
  }

  function wantHistory(clusters) {
    const now = Date.now();
    for (const c of clusters) {
      const h = state.history.get(c.name);
      if (!h || now - h.at > HISTORY_TTL_MS) state.wanted.add(c.name);
    }
    if (state.wanted.size && !state.historyTimer) state.historyTimer = setTimeout(fetchHistory, 150);
  }

  async function fetchHistory() {
    state.historyTimer = 0;
    if (state.historyBusy) { state.historyTimer = setTimeout(fetchHistory, 150); return; }
    const names = Array.from(state.wanted).slice(0, HISTORY_BATCH);
    names.forEach((n) => state.wanted.delete(n));
    if (!names.length) return;
    state.historyBusy = true;
    const at = Date.now();
    try {
      const q = names.map((n) => 'cluster=' + encodeURIComponent(n)).join('&');
      const res = await fetch('/status/api/history?' + q, { headers: headers({}), cache: 'no-store', credentials: 'same-origin' });
      const data = res.ok ? await res.json() : {};
      for (const n of names) state.history.set(n, { at, samples: data[n] || [] });
    } catch (_) {
      // Try these again after the TTL rather than in a loop.
      for (const n of names) state.history.set(n, { at, samples: [] });
    } finally {
      state.historyBusy = false;
    }
    scheduleRender();
    if (state.wanted.size) state.historyTimer = setTimeout(fetchHistory, 0);
  }

  // --- formatting --------------------------------------------------------
  function dur(us) {
    if (!us) return '—';
    if (us < 1000) return us + ' µs';
    if (us < 1e6) return (us / 1000).toFixed(us < 1e4 ? 2 : 1) + ' ms';
    return (us / 1e6).toFixed(2) + ' s';
  }
  function bytes(n) {
    if (!n) return '0 B';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + ' ' + u[i];
  }
  function ago(ts) {
    const t = Date.parse(ts || '');
    if (!t) return '—';
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 90) return s + 's ago';
    if (s < 5400) return Math.round(s / 60) + 'm ago';
    if (s < 172800) return Math.round(s / 3600) + 'h ago';
    return Math.round(s / 86400) + 'd ago';
  }
  function plural(n, word) {
    return n + ' ' + word + (n === 1 ? '' : 's');
  }
  function since(ts) {
    const a = ago(ts);
    return a.endsWith(' ago') ? a.slice(0, -4) : a;
  }
  function disconnect(c) {
    if (!c.lastDisconnect) return c.connected ? '—' : 'never connected here';
    return ago(c.lastDisconnect) + (c.lastDisconnectReason ? ': ' + c.lastDisconnectReason : '');
  }
  function refusal(c) {
    return c.lastRefusal ? 'last refused ' + ago(c.lastRefusal) + ': ' + (c.lastRefusalReason || '') : '';
  }

  // --- controls ----------------------------------------------------------
  function setView(v) {
    state.view = v;
    $('table-view').hidden = v !== 'table';
    $('tiles-view').hidden = v !== 'tiles';
    $('view-table').setAttribute('aria-pressed', String(v === 'table'));
    $('view-tiles').setAttribute('aria-pressed', String(v === 'tiles'));
    saveHash();
    render();
  }

  // The view, filter and search live in the URL's fragment, so a wall
  // screen can be pointed at "#view=tiles&filter=flapping". The fragment
  // never reaches the hub.
  function saveHash() {
    const p = new URLSearchParams();
    if (state.view !== 'table') p.set('view', state.view);
    if (state.filter !== 'all') p.set('filter', state.filter);
    if (state.query) p.set('q', state.query);
    const h = p.toString();
    history.replaceState(null, '', h ? '#' + h : location.pathname);
  }
  function loadHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    if (p.get('view') === 'tiles') state.view = 'tiles';
    if (filters[p.get('filter')]) state.filter = p.get('filter');
    state.query = p.get('q') || '';
    $('filter').value = state.filter;
    $('search').value = state.query;
  }

  function init() {
    loadHash();
    $('search').addEventListener('input', (e) => { state.query = e.target.value; saveHash(); refilter(); });
    $('filter').addEventListener('change', (e) => { state.filter = e.target.value; saveHash(); refilter(); });
    $('view-table').addEventListener('click', () => setView('table'));
    $('view-tiles').addEventListener('click', () => setView('tiles'));
    $('table-view').addEventListener('scroll', scheduleRender, { passive: true });
    $('tiles-view').addEventListener('scroll', scheduleRender, { passive: true });
    window.addEventListener('resize', scheduleRender);
    for (const th of document.querySelectorAll('th[data-sort]')) {
      th.addEventListener('click', () => {
        const k = th.dataset.sort;
        state.sort = { key: k, desc: state.sort.key === k ? !state.sort.desc : false };
        for (const o of document.querySelectorAll('th[data-sort]')) o.classList.remove('sorted', 'desc');
        th.classList.add('sorted');
        th.classList.toggle('desc', state.sort.desc);
        refilter();
      });
    }
    document.querySelector('th[data-sort=name]').classList.add('sorted');
    document.addEventListener('keydown', (e) => {
      if (e.key === '/' && document.activeElement !== $('search') && !$('app').hidden) {
        e.preventDefault();
        $('search').focus();
      }
    });
    $('login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const t = $('token').value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      $('token').value = '';
      state.etag = '';
      poll();
    });
    $('signout').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      state.etag = '';
      state.clusters = [];
      state.history.clear();
      showLogin('');
    });
    setView(state.view);
    setInterval(updated, 1000);
    poll();
  }

  document.addEventListener('DOMContentLoaded', init);
})();

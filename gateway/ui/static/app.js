// orchd ops page. The DOM contract (ids and data-* attributes) is documented
// in the package comment of gateway/ui (ui.go); keep the two in step.
//
// Rules kept here: the control key is read from the URL fragment (and removed
// from the address bar at once) or from the form, sent only in the
// Authorization header of POST /v1/ui/session, and then dropped: it never goes
// into a URL, storage or a cookie of ours. All data reaches the DOM through
// textContent and attributes, never as HTML.
'use strict';

(function () {
  const EVENT_TYPES = ['hello', 'breaker', 'replica', 'drain', 'reload', 'config', 'message'];
  const MAX_EVENTS = 50;
  const POLL_MS = 2000;
  const DEBOUNCE_MS = 200;
  const DEBOUNCE_MAX_MS = 1000; // a steady stream of events still refreshes
  const RECONNECT_MS = 3000;

  // Before anything else: take the key out of the fragment and the address bar.
  let fragmentKey = takeKeyFromHash();

  const st = {
    signedIn: false,
    es: null,
    poll: 0,
    debounce: 0,
    debounceSince: 0,
    reconnect: 0,
    fetching: false,
    again: false,
  };

  function $(id) { return document.getElementById(id); }

  // takeKeyFromHash returns the key of a `#key=K` fragment (other fragment
  // parameters are kept) and removes it from the URL without a navigation.
  function takeKeyFromHash() {
    const h = window.location.hash;
    if (!h || h.length < 2) return '';
    const parts = h.slice(1).split('&');
    let key = '';
    const rest = [];
    for (const p of parts) {
      if (p.startsWith('key=')) {
        try { key = decodeURIComponent(p.slice(4)); } catch (_) { key = p.slice(4); }
      } else if (p !== '') {
        rest.push(p);
      }
    }
    if (key === '' && rest.length === parts.length) return '';
    const url = window.location.pathname + window.location.search + (rest.length ? '#' + rest.join('&') : '');
    window.history.replaceState(window.history.state, '', url);
    return key.trim();
  }

  // cls turns a value into a safe CSS class suffix.
  function cls(v) {
    return String(v == null ? '' : v).toLowerCase().replace(/[^a-z0-9_-]/g, '_');
  }

  function mk(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text != null) e.textContent = String(text);
    return e;
  }

  function pad(n, w) { return String(n).padStart(w || 2, '0'); }

  function clock(d, ms) {
    const s = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
    return ms ? s + '.' + pad(d.getMilliseconds(), 3) : s;
  }

  function num(v) { return typeof v === 'number' && isFinite(v); }

  function fmtMs(v) {
    if (!num(v)) return '—';
    return v >= 100 ? String(Math.round(v)) : v.toFixed(1);
  }

  function fmtNum(v) {
    if (!num(v)) return v == null ? '—' : String(v);
    return Number.isInteger(v) ? String(v) : v.toFixed(3).replace(/0+$/, '').replace(/\.$/, '');
  }

  function setConn(state) {
    const c = $('conn');
    c.textContent = state;
    c.dataset.state = state;
    c.className = 'conn conn-' + cls(state);
  }

  function setError(msg) { $('error').textContent = msg || ''; }

  async function errorText(resp) {
    let detail = '';
    try {
      const text = await resp.text();
      try {
        const j = JSON.parse(text);
        detail = [j.code, j.message].filter(Boolean).join(': ');
      } catch (_) {
        detail = text.slice(0, 200).trim();
      }
    } catch (_) { /* body unreadable: the status says enough */ }
    return 'HTTP ' + resp.status + (detail ? ' — ' + detail : '');
  }

  // exchange trades the key for the HttpOnly session cookie; the key goes
  // in a header of a POST to our own origin and nowhere else.
  async function exchange(key) {
    let resp;
    try {
      resp = await fetch('/v1/ui/session', {
        method: 'POST',
        headers: { 'Authorization': 'Bearer ' + key },
        credentials: 'same-origin',
        cache: 'no-store',
        redirect: 'error',
        referrerPolicy: 'no-referrer',
      });
    } catch (e) {
      return 'cannot reach orchd: ' + e.message;
    }
    if (resp.ok) return '';
    const why = await errorText(resp);
    if (resp.status === 401 || resp.status === 403) return 'key rejected (' + why + ')';
    return 'sign-in failed (' + why + ')';
  }

  // fetchSets reads /v1/replicasets once: 'ok', 'auth' (cookie refused) or
  // 'error' (shown in #error).
  async function fetchSets() {
    let resp;
    try {
      resp = await fetch('/v1/replicasets', {
        credentials: 'same-origin',
        cache: 'no-store',
        headers: { 'Accept': 'application/json' },
      });
    } catch (e) {
      setError('cannot reach orchd: ' + e.message);
      return 'error';
    }
    if (resp.status === 401 || resp.status === 403) {
      await resp.text().catch(() => '');
      return 'auth';
    }
    if (!resp.ok) {
      setError('GET /v1/replicasets: ' + await errorText(resp));
      return 'error';
    }
    let body;
    try {
      body = await resp.json();
    } catch (e) {
      setError('GET /v1/replicasets: unreadable JSON: ' + e.message);
      return 'error';
    }
    setError('');
    render(body);
    $('updated').textContent = 'updated ' + clock(new Date(), false);
    return 'ok';
  }

  // refresh runs fetchSets, one at a time; a call during a fetch makes one
  // more fetch afterwards, so the last change is always shown.
  async function refresh() {
    if (!st.signedIn) return;
    if (st.fetching) { st.again = true; return; }
    st.fetching = true;
    try {
      do {
        st.again = false;
        if (await fetchSets() === 'auth') {
          signOut('Your session ended (the cookie was refused). Enter the control key again.');
          return;
        }
      } while (st.again && st.signedIn);
    } finally {
      st.fetching = false;
    }
  }

  function scheduleRefresh() {
    const now = Date.now();
    if (st.debounce) {
      if (now - st.debounceSince >= DEBOUNCE_MAX_MS) return; // let the pending one fire
      clearTimeout(st.debounce);
    } else {
      st.debounceSince = now;
    }
    st.debounce = setTimeout(() => { st.debounce = 0; refresh(); }, DEBOUNCE_MS);
  }

  // ---- rendering ---------------------------------------------------------

  function render(body) {
    const sets = body && Array.isArray(body.replicasets) ? body.replicasets : [];
    const frag = document.createDocumentFragment();
    if (sets.length === 0) frag.append(mk('p', 'muted', 'no pools configured'));
    for (const set of sets) frag.append(poolCard(set || {}));
    $('pools').replaceChildren(frag);
  }

  function fact(dl, label, value, title) {
    const dt = mk('dt', '', label);
    const dd = mk('dd', '', value);
    if (title) dd.title = title;
    dl.append(dt, dd);
  }

  function joinCounts(obj) {
    if (!obj || typeof obj !== 'object') return '';
    return Object.keys(obj).map((k) => k.replace(/^requests_/, '') + ' ' + fmtNum(obj[k])).join(' · ');
  }

  // flatten lists the leaves of a small object as "a.b value" pairs.
  function flatten(obj, prefix, out) {
    if (out.length >= 12) return out;
    if (obj !== null && typeof obj === 'object' && !Array.isArray(obj)) {
      for (const k of Object.keys(obj)) flatten(obj[k], prefix ? prefix + '.' + k : k, out);
    } else {
      out.push(prefix + ' ' + fmtNum(obj));
    }
    return out;
  }

  function poolCard(set) {
    const sec = mk('section', 'pool');
    sec.dataset.pool = String(set.pool_id || '');

    const head = mk('div', 'pool-head');
    head.append(mk('h3', '', set.pool_id || '(unnamed pool)'));
    head.append(mk('span', 'badge ' + (set.ready ? 'ok' : 'bad'), set.ready ? 'ready' : 'unready'));
    if (set.draining) head.append(mk('span', 'badge warn', 'draining'));
    sec.append(head);

    const dl = mk('dl', 'facts');
    fact(dl, 'engine', set.engine || '—');
    fact(dl, 'model', set.model || '—');
    fact(dl, 'engine version', set.engine_version || '—');
    let q = fmtNum(set.queue_depth);
    const queue = set.queue && typeof set.queue === 'object' ? set.queue : null;
    if (queue && num(queue.capacity)) q += ' / ' + fmtNum(queue.capacity);
    if (queue && queue.by_priority) {
      const by = joinCounts(queue.by_priority);
      if (by) q += ' (' + by + ')';
    }
    fact(dl, 'queue depth', q);
    const t = set.slo && set.slo.ttft_ms ? set.slo.ttft_ms : {};
    const none = !(t.p50 > 0 || t.p95 > 0 || t.p99 > 0);
    fact(dl, 'TTFT p50 / p95 / p99',
      none ? '— (no samples yet)' : fmtMs(t.p50) + ' / ' + fmtMs(t.p95) + ' / ' + fmtMs(t.p99) + ' ms');
    if (set.slo_attainment && typeof set.slo_attainment === 'object') {
      const parts = flatten(set.slo_attainment, '', []);
      if (parts.length) fact(dl, 'SLO attainment', parts.join(' · '));
    }
    sec.append(dl);

    const table = mk('table', 'replicas');
    const thead = mk('thead');
    const hr = mk('tr');
    for (const h of ['replica', 'url', 'state', 'breaker', 'inflight / slots', 'engine load', 'last error']) {
      hr.append(mk('th', '', h));
    }
    thead.append(hr);
    const tbody = mk('tbody');
    const reps = Array.isArray(set.replicas) ? set.replicas : [];
    for (const r of reps) tbody.append(replicaRow(set.pool_id, r || {}));
    if (reps.length === 0) {
      const tr = mk('tr');
      const td = mk('td', 'muted', 'no replicas');
      td.colSpan = 7;
      tr.append(td);
      tbody.append(tr);
    }
    table.append(thead, tbody);
    const wrap = mk('div', 'table-wrap');
    wrap.append(table);
    sec.append(wrap);
    return sec;
  }

  function replicaRow(poolID, r) {
    const state = String(r.state || 'unknown');
    const breaker = String(r.breaker || 'unknown');
    const tr = mk('tr', 'replica state-' + cls(state) + ' breaker-' + cls(breaker));
    tr.dataset.pool = String(poolID || '');
    tr.dataset.replica = String(r.id || '');
    tr.dataset.breaker = breaker;
    tr.dataset.state = state;

    const id = mk('td', 'id', r.id || '—');
    if (r.engine_version) id.title = 'engine version ' + r.engine_version;
    const url = mk('td', 'url mono', r.url || '—');
    const stTd = mk('td', 'state');
    stTd.append(mk('span', 'badge state-' + cls(state), state));
    const br = mk('td', 'breaker breaker-' + cls(breaker));
    br.dataset.breaker = breaker;
    br.append(mk('span', 'badge breaker-' + cls(breaker), breaker));
    const load = mk('td', 'load', fmtNum(r.inflight) + ' / ' + fmtNum(r.slots));
    const eng = mk('td', 'engine-load');
    const loadKeys = r.engine_load && typeof r.engine_load === 'object' ? Object.keys(r.engine_load) : [];
    // processing before deferred (JSON objects from Go come sorted by key).
    loadKeys.sort((a, b) => (b === 'requests_processing') - (a === 'requests_processing') || (a < b ? -1 : a > b ? 1 : 0));
    for (const k of loadKeys) eng.append(mk('span', 'kv', k.replace(/^requests_/, '') + ' ' + fmtNum(r.engine_load[k])));
    if (loadKeys.length === 0) eng.textContent = '—';
    const err = mk('td', 'last-error', r.last_error || '—');
    if (r.last_error) err.title = String(r.last_error);
    tr.append(id, url, stTd, br, load, eng, err);
    return tr;
  }

  function summary(type, d) {
    const s = (v) => (v == null ? '' : String(v));
    switch (type) {
      case 'hello':
        return 'connected to the event feed';
      case 'breaker':
        return s(d.from || '?') + ' → ' + s(d.to || '?');
      case 'replica':
        return 'state ' + s(d.state || '?') + (d.last_error ? ': ' + s(d.last_error) : '');
      case 'drain':
        return 'draining' + (num(d.deadline_ms) ? ', deadline ' + d.deadline_ms + ' ms' : '');
      case 'reload':
        return 'model ' + s(d.model || '?') + (d.ok ? ' ok' : ' failed') + (d.reason ? ': ' + s(d.reason) : '');
      case 'config':
        return (d.ok ? 'applied' : 'rejected') + (d.reason ? ': ' + s(d.reason) : '') +
          (Array.isArray(d.changes) && d.changes.length ? ' (' + d.changes.map(s).join(', ') + ')' : '');
      default: {
        const rest = {};
        for (const k of Object.keys(d)) {
          if (!['type', 'at', 'pool_id', 'replica_id'].includes(k)) rest[k] = d[k];
        }
        const j = JSON.stringify(rest);
        return j === '{}' ? '' : j.length > 300 ? j.slice(0, 300) + '…' : j;
      }
    }
  }

  function addEvent(sseType, raw) {
    let d;
    try {
      d = JSON.parse(raw);
    } catch (_) {
      d = { data: String(raw) };
    }
    if (!d || typeof d !== 'object' || Array.isArray(d)) d = { data: d };
    const type = typeof d.type === 'string' && d.type ? d.type : sseType;

    const li = mk('li', 'ev ev-' + cls(type));
    li.dataset.type = type;
    if (d.pool_id) li.dataset.pool = String(d.pool_id);
    if (d.replica_id) li.dataset.replica = String(d.replica_id);
    if (type === 'breaker' && d.to) li.dataset.to = String(d.to);

    const at = d.at ? new Date(d.at) : new Date();
    const time = mk('time', 'ev-at', isNaN(at.getTime()) ? String(d.at) : clock(at, true));
    if (d.at) time.dateTime = String(d.at);
    const where = [d.pool_id, d.replica_id].filter(Boolean).map(String).join(' / ');
    const what = mk('span', 'ev-what', summary(type, d));
    if (type === 'breaker' && d.to) what.classList.add('breaker-' + cls(d.to));
    li.append(time, mk('span', 'badge ev-type', type), mk('span', 'ev-where', where), what);

    const list = $('events');
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
    $('events-empty').hidden = true;
  }

  // ---- live feed ---------------------------------------------------------

  function closeEvents() {
    if (st.reconnect) { clearTimeout(st.reconnect); st.reconnect = 0; }
    if (st.es) { st.es.close(); st.es = null; }
  }

  function openEvents() {
    closeEvents();
    const es = new EventSource('/v1/events');
    st.es = es;
    es.onopen = () => {
      if (st.es !== es) return;
      setConn('live');
      scheduleRefresh(); // catch up on what changed while the feed was down
    };
    es.onerror = () => {
      if (st.es !== es) return;
      setConn('reconnecting');
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (an answer that was not an event stream): try
        // again later; the poll signs out if the cookie was refused.
        es.close();
        st.es = null;
        st.reconnect = setTimeout(() => {
          st.reconnect = 0;
          if (st.signedIn) openEvents();
        }, RECONNECT_MS);
      }
    };
    for (const type of EVENT_TYPES) {
      es.addEventListener(type, (ev) => {
        if (st.es !== es) return;
        addEvent(type, ev.data);
        scheduleRefresh();
      });
    }
  }

  // ---- sign-in -----------------------------------------------------------

  function showLogin(msg) {
    $('login').hidden = false;
    $('login-msg').textContent = msg || '';
    $('key').focus();
  }

  function signOut(msg) {
    st.signedIn = false;
    closeEvents();
    if (st.poll) { clearInterval(st.poll); st.poll = 0; }
    if (st.debounce) { clearTimeout(st.debounce); st.debounce = 0; }
    setConn('signed out');
    $('main').hidden = true;
    $('pools').replaceChildren();
    showLogin(msg);
  }

  function startLive() {
    st.signedIn = true;
    $('login').hidden = true;
    $('login-msg').textContent = '';
    $('main').hidden = false;
    setConn('connecting');
    openEvents();
    if (!st.poll) st.poll = setInterval(refresh, POLL_MS);
  }

  // enter checks that the cookie works, then goes live; else shows the form.
  async function enter(failMsg) {
    const r = await fetchSets();
    if (r === 'auth') {
      signOut(failMsg);
      return;
    }
    startLive();
  }

  async function onLogin(ev) {
    ev.preventDefault();
    const input = $('key');
    const key = input.value.trim();
    input.value = '';
    if (!key) {
      $('login-msg').textContent = 'Enter a control key.';
      return;
    }
    const button = $('login').querySelector('button');
    button.disabled = true;
    try {
      const why = await exchange(key);
      if (why) {
        $('login-msg').textContent = why;
        input.focus();
        return;
      }
      await enter('Signed in, but orchd refused the session cookie (are cookies blocked?).');
    } finally {
      button.disabled = false;
    }
  }

  async function boot() {
    $('login').addEventListener('submit', onLogin);
    const key = fragmentKey;
    fragmentKey = '';
    if (key) {
      const why = await exchange(key);
      if (why) {
        signOut(why);
        return;
      }
    }
    await enter('');
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', boot);
  } else {
    boot();
  }
})();

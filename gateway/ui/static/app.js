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
  const EVENT_TYPES = ['hello', 'breaker', 'replica', 'drain', 'reload', 'config', 'model_state', 'model_verification', 'message'];
  // Events that change the model catalog: they re-fetch /v1/catalog/models.
  const MODEL_EVENTS = ['model_state', 'model_verification'];
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
    reconnect: 0,
    modelsStale: true, // the catalog was never read, or the last read failed
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

  // fetchModels reads /v1/catalog/models once and renders the Models panel;
  // a failure is shown in the panel (#models-error) and leaves the last
  // rows in place. Answers like fetchSets.
  async function fetchModels() {
    const fail = (msg) => {
      st.modelsStale = true;
      $('models-error').textContent = 'GET /v1/catalog/models: ' + msg;
    };
    let resp;
    try {
      resp = await fetch('/v1/catalog/models', {
        credentials: 'same-origin',
        cache: 'no-store',
        headers: { 'Accept': 'application/json' },
      });
    } catch (e) {
      fail('cannot reach orchd: ' + e.message);
      return 'error';
    }
    if (!resp.ok) {
      fail(await errorText(resp));
      return resp.status === 401 || resp.status === 403 ? 'auth' : 'error';
    }
    let body;
    try {
      body = await resp.json();
    } catch (e) {
      fail('unreadable JSON: ' + e.message);
      return 'error';
    }
    if (!st.signedIn) return 'ok'; // signed out meanwhile: show nothing
    st.modelsStale = false;
    $('models-error').textContent = '';
    renderModels(body);
    return 'ok';
  }

  // serial returns a runner of fetch (an async function answering 'ok',
  // 'auth' or 'error'), one run at a time: a call during a run makes one more
  // run afterwards, so the last change is always shown. A run answering
  // 'auth' signs out when onAuth is set.
  function serial(fetch, onAuth) {
    let running = false;
    let again = false;
    return async function run() {
      if (!st.signedIn) return;
      if (running) { again = true; return; }
      running = true;
      try {
        do {
          again = false;
          if (await fetch() === 'auth' && onAuth) {
            onAuth();
            return;
          }
        } while (again && st.signedIn);
      } finally {
        running = false;
      }
    };
  }

  // debounced returns a scheduler of fn: calls within DEBOUNCE_MS of each
  // other make one call, at most DEBOUNCE_MAX_MS after the first of them (a
  // steady stream of events still refreshes). cancel() drops a pending call.
  function debounced(fn) {
    let timer = 0;
    let since = 0;
    const schedule = () => {
      const now = Date.now();
      if (timer) {
        if (now - since >= DEBOUNCE_MAX_MS) return; // let the pending one fire
        clearTimeout(timer);
      } else {
        since = now;
      }
      timer = setTimeout(() => { timer = 0; fn(); }, DEBOUNCE_MS);
    };
    schedule.cancel = () => {
      if (timer) { clearTimeout(timer); timer = 0; }
    };
    return schedule;
  }

  const refresh = serial(fetchSets,
    () => signOut('Your session ended (the cookie was refused). Enter the control key again.'));
  const scheduleRefresh = debounced(refresh);
  // A refused cookie on the catalog is only reported in the panel: the
  // replica sets poll decides about the session.
  const refreshModels = serial(fetchModels, null);
  const scheduleModels = debounced(refreshModels);

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

  // ---- models ------------------------------------------------------------

  // What each lifecycle state means for traffic (shown under the badge).
  const STATE_NOTES = {
    Deprecated: 'new sessions refused',
    Retired: 'all requests refused',
  };

  // shortDigest is the first 12 hex digits of a "sha256:<hex>" digest (other
  // forms: their first 19 characters).
  function shortDigest(d) {
    const s = String(d);
    if (s.startsWith('sha256:')) return s.slice(7, 19);
    return s.length > 19 ? s.slice(0, 19) + '…' : s;
  }

  // when renders an RFC 3339 time as a <time>: the clock for today, the date
  // and minute otherwise; the exact value in the title.
  function when(iso, className) {
    const d = new Date(iso);
    const t = mk('time', className);
    if (isNaN(d.getTime())) {
      t.textContent = String(iso);
      return t;
    }
    const now = new Date();
    const today = d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate();
    t.textContent = today ? clock(d, false)
      : d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + pad(d.getHours()) + ':' + pad(d.getMinutes());
    t.dateTime = String(iso);
    t.title = String(iso);
    return t;
  }

  function fmtBytes(n) {
    if (!num(n)) return '';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(v) : v.toFixed(1)) + ' ' + units[i];
  }

  // displayRef is an artifact ref fit for the screen: a URL's query (which
  // may hold a presigned credential), user info and fragment are dropped, as
  // the gateway does in its logs.
  function displayRef(ref) {
    const r = String(ref);
    if (!/^https?:\/\//i.test(r)) return r;
    try {
      const u = new URL(r);
      u.username = '';
      u.password = '';
      u.search = '';
      u.hash = '';
      return u.href;
    } catch (_) {
      return r.replace(/[?#].*$/, '');
    }
  }

  function renderModels(body) {
    const policy = body && typeof body.trust_policy === 'string' ? body.trust_policy : '';
    const tp = $('trust-policy');
    tp.dataset.policy = policy;
    tp.replaceChildren(mk('span', 'muted', 'trust policy '),
      mk('span', 'badge policy-' + cls(policy), policy || 'unknown'));
    if (policy === 'permissive') tp.append(mk('span', 'muted', ' (unsigned artifacts may serve)'));
    if (policy === 'strict') tp.append(mk('span', 'muted', ' (only signed, verified artifacts serve)'));

    const models = body && Array.isArray(body.models) ? body.models : [];
    if (models.length === 0) {
      $('models').replaceChildren(mk('p', 'muted models-empty', 'no models in the catalog'));
      return;
    }
    const table = mk('table', 'replicas models');
    const thead = mk('thead');
    const hr = mk('tr');
    for (const h of ['model', 'state', 'latest verification', 'digest', 'sessions until']) hr.append(mk('th', '', h));
    thead.append(hr);
    const tbody = mk('tbody');
    for (const m of models) tbody.append(modelRow(m || {}));
    table.append(thead, tbody);
    const wrap = mk('div', 'table-wrap');
    wrap.append(table);
    $('models').replaceChildren(wrap);
  }

  function modelRow(m) {
    const state = String(m.state || 'unknown');
    const tr = mk('tr', 'model mstate-' + cls(state));
    tr.dataset.model = String(m.id || '');
    tr.dataset.state = state;
    if (state === 'Deprecated' || state === 'Retired') tr.classList.add('model-warn');

    const id = mk('td', 'id', m.id || '—');
    const ref = [m.ref ? 'ref ' + displayRef(m.ref) : '', m.engine ? 'engine ' + m.engine : ''].filter(Boolean).join('\n');
    if (ref) id.title = ref;

    const stTd = mk('td', 'state');
    stTd.append(mk('span', 'badge mstate-' + cls(state), state));
    if (STATE_NOTES[state]) stTd.append(mk('span', 'state-note', STATE_NOTES[state]));

    const ver = mk('td', 'verification');
    const v = m.verification && typeof m.verification === 'object' ? m.verification : null;
    if (v) {
      const result = String(v.result || 'unknown');
      ver.dataset.result = result;
      ver.append(mk('span', 'badge verify-' + cls(result), result));
      if (v.reason) ver.append(mk('span', 'reason', ' ' + v.reason));
      if (v.at) ver.append(' ', when(v.at, 'ver-at muted'));
      const detail = [v.message, v.key_id ? 'key ' + v.key_id : '', v.resolved_digest ? 'read ' + v.resolved_digest : '',
        num(v.bytes) ? fmtBytes(v.bytes) : ''].filter(Boolean).map(String);
      if (detail.length) ver.title = detail.join('\n');
    } else {
      ver.dataset.result = 'none';
      ver.append(mk('span', 'muted', 'never verified'));
    }

    const dig = mk('td', m.digest ? 'digest mono' : 'digest', m.digest ? shortDigest(m.digest) : '—');
    if (m.digest) {
      dig.title = String(m.digest);
      dig.dataset.digest = String(m.digest);
    }

    const until = mk('td', 'sessions-until');
    if (m.sessions_until) until.append(when(m.sessions_until, ''));
    else until.textContent = '—';

    tr.append(id, stTd, ver, dig, until);
    return tr;
  }

  // ---- events ------------------------------------------------------------

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
      case 'model_state':
        return s(d.model || '?') + ': ' + (d.from ? s(d.from) + ' → ' + s(d.to || '?') : 'registered (' + s(d.to || '?') + ')') +
          (num(d.deadline_ms) && d.deadline_ms > 0 ? ', sessions may continue ' + fmtDuration(d.deadline_ms) : '');
      case 'model_verification':
        return s(d.model || '?') + ': ' + (d.ok ? 'verified' : 'verification failed') + (d.reason ? ' (' + s(d.reason) + ')' : '');
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

  // fmtDuration renders milliseconds as "for 90 s", "for 5 min", "for 2 h".
  function fmtDuration(ms) {
    if (ms < 60000) return 'for ' + fmtNum(Math.round(ms / 100) / 10) + ' s';
    if (ms < 3600000) return 'for ' + fmtNum(Math.round(ms / 6000) / 10) + ' min';
    return 'for ' + fmtNum(Math.round(ms / 360000) / 10) + ' h';
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
    if (d.model && (type === 'model_state' || type === 'model_verification')) li.dataset.model = String(d.model);
    if (type === 'model_state' && d.to) li.dataset.to = String(d.to);
    if (type === 'model_verification') li.dataset.ok = d.ok ? 'true' : 'false';

    const at = d.at ? new Date(d.at) : new Date();
    const time = mk('time', 'ev-at', isNaN(at.getTime()) ? String(d.at) : clock(at, true));
    if (d.at) time.dateTime = String(d.at);
    const where = [d.pool_id, d.replica_id].filter(Boolean).map(String).join(' / ');
    const what = mk('span', 'ev-what', summary(type, d));
    if (type === 'breaker' && d.to) what.classList.add('breaker-' + cls(d.to));
    if (type === 'model_state' && d.to) what.classList.add('mstate-' + cls(d.to));
    if (type === 'model_verification') what.classList.add(d.ok ? 'verify-pass' : 'verify-fail');
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
      // Catch up on what changed while the feed was down.
      scheduleRefresh();
      scheduleModels();
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
        if (MODEL_EVENTS.includes(type)) {
          scheduleModels();
        } else {
          scheduleRefresh();
        }
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
    scheduleRefresh.cancel();
    scheduleModels.cancel();
    setConn('signed out');
    $('main').hidden = true;
    $('pools').replaceChildren();
    $('models').replaceChildren();
    $('models-error').textContent = '';
    $('trust-policy').replaceChildren();
    st.modelsStale = true;
    showLogin(msg);
  }

  // tick is the poll: the replica sets every time, the catalog only while
  // it is stale (its changes come as events; a failed read is retried).
  function tick() {
    refresh();
    if (st.modelsStale) refreshModels();
  }

  function startLive() {
    st.signedIn = true;
    $('login').hidden = true;
    $('login-msg').textContent = '';
    $('main').hidden = false;
    setConn('connecting');
    openEvents();
    refreshModels();
    if (!st.poll) st.poll = setInterval(tick, POLL_MS);
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

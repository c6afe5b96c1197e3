/*
 * ccmon wallboard: plain ES2017, no framework, no external resources.
 *
 * Built for a floor TV that runs for days on a cheap stick, so:
 *  - each tile / agent row / alert is built once and then updated in place
 *    (text nodes and attributes, written only when they change);
 *  - tiles, rows and alerts that vanish from the payload are removed;
 *  - the only state kept per message is the latest payload and clock offset;
 *  - one 1 s setInterval drives the clock, ticking ages, staleness,
 *    the stream watchdog and TV page rotation.
 * Everything that comes from the payload is written with textContent /
 * Text.data / setAttribute, never innerHTML: queue names, reasons and alert
 * summaries are untrusted.
 * Colours come only from the server's status strings (CSS attribute
 * selectors on data-status); every coloured value has a text label next to it.
 */
(function () {
  'use strict';

  var STREAM_PATH = '/wallboard/stream';
  var STALE_AFTER_MS = 3000;     // no message for longer than this: stale
  var WATCHDOG_MS = 15000;       // open stream silent this long: reconnect
  var BACKOFF_MIN_MS = 1000;
  var BACKOFF_MAX_MS = 30000;
  var ROTATE_EVERY_TICKS = 10;   // TV page rotation, in 1 s ticks
  var DASH = '\u2014';
  var STATUS_LABEL = {
    ok: '\u2714\uFE0E OK',
    warn: '\u25C6 WARN',
    breach: '\u25B2 BREACH',
    none: ''
  };
  var TILE_LABEL = {
    ok: '\u2714\uFE0E OK',
    warn: '\u25C6 WARN',
    breach: '\u25B2 BREACH',
    none: '\u25CB N/A'
  };
  var hasOwn = Object.prototype.hasOwnProperty;

  // ---- options from the page URL -------------------------------------
  var params = new URLSearchParams(window.location.search);
  var tvParam = params.get('tv');
  var TV = tvParam === '1' || tvParam === 'true' || tvParam === 'yes';
  var VIEW = params.get('view') === 'agents' ? 'agents' : 'tiles';
  var TOKEN = params.get('token');
  var FILTER = parseQueueFilter(params.get('queues'));
  var SHOW_TILES = VIEW === 'tiles';
  var SHOW_AGENTS = VIEW === 'agents' || !TV;

  function parseQueueFilter(raw) {
    if (raw === null) return null;
    var set = new Set();
    raw.split(',').forEach(function (s) {
      s = s.trim();
      if (s) set.add(s);
    });
    return set.size ? set : null;
  }

  // ---- test / debug hook ----------------------------------------------
  var hook = { messages: 0, loadedAt: Date.now(), lastPayload: null };
  window.ccmon = hook;

  // ---- DOM references ---------------------------------------------------
  var doc = document;
  var body, html, mainEl, healthEl, healthText, healthReason, pagerEl, pagerText;
  var clockText, alertsEl, tilesView, tilesEl, tilesEmptyEl, tilesEmptyText;
  var agentsView, agentsBody, agentsCountText, agentsEmptyEl, agentsEmptyText;

  // ---- state -----------------------------------------------------------
  var S = {
    offset: 0,             // server epoch seconds minus client epoch seconds
    haveData: false,
    lastMsgMono: 0,        // performance.now() of the last message
    lastActivityMono: 0,   // last message or stream open (watchdog)
    lastServerTime: 0,     // server_time of the last message
    serverStale: false,
    serverReason: null,
    commitAge: null,
    conn: 'connecting',    // 'connecting' | 'open' | 'error'
    dataStale: true,
    staleSince: null,      // epoch seconds (server clock), while stale
    health: '',
    healthLevel: '',
    gen: 0,
    layoutDirty: true,
    rotateTicks: 0,
    page: 0,
    pages: 1,
    rafPending: false
  };
  var tiles = new Map();   // queue name -> tile record
  var agents = new Map();  // agent id -> row record
  var alerts = new Map();  // "rule|queue" -> alert record
  var es = null;
  var retryTimer = 0;
  var backoff = BACKOFF_MIN_MS;

  // ---- small helpers --------------------------------------------------
  function el(tag, cls) {
    var e = doc.createElement(tag);
    if (cls) e.className = cls;
    return e;
  }
  function textIn(parent, s) {
    var t = doc.createTextNode(s || '');
    parent.appendChild(t);
    return t;
  }
  function staticText(parent, tag, cls, s) {
    var e = el(tag, cls);
    e.textContent = s;
    parent.appendChild(e);
    return e;
  }
  function setData(t, s) {
    if (t.data !== s) t.data = s;
  }
  function isNum(v) {
    return typeof v === 'number' && isFinite(v);
  }
  function pad2(n) {
    return n < 10 ? '0' + n : String(n);
  }
  function serverNow() {
    return Date.now() / 1000 + S.offset;
  }
  function hms(epochSeconds) {
    var d = new Date(epochSeconds * 1000);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  }
  // Service levels: never round up past a target ("80%" while at 79.6%).
  function pctDown(v) {
    return isNum(v) ? Math.floor(v * 100 + 1e-6) + '%' : DASH;
  }
  // Abandon rate: never round a bad figure down to a better-looking one.
  function pctUp(v) {
    return isNum(v) ? Math.ceil(v * 100 - 1e-6) + '%' : DASH;
  }
  function count(v) {
    return isNum(v) ? String(Math.round(v)) : DASH;
  }
  function dur(s) {
    if (!isNum(s)) return DASH;
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + 's';
    var m = Math.floor(s / 60);
    if (m < 60) return m + 'm\u00A0' + pad2(s % 60) + 's';
    var h = Math.floor(m / 60);
    if (h < 24) return h + 'h\u00A0' + pad2(m % 60) + 'm';
    return Math.floor(h / 24) + 'd\u00A0' + (h % 24) + 'h';
  }
  function secs(v) {
    return isNum(v) ? dur(Math.round(v)) : DASH;
  }
  function normStatus(s) {
    return typeof s === 'string' && s ? s : 'none';
  }
  function statusLabel(table, s) {
    if (hasOwn.call(table, s)) return table[s];
    return '\u25CF ' + s.toUpperCase();
  }
  function rawJson(v) {
    var r = JSON.stringify(v === undefined ? null : v);
    return r === undefined ? 'null' : r;
  }

  // A displayed metric: <span class="m" data-field=F data-value=RAW [data-status]>
  //   <span class="v">shown</span> [<span class="lbl">label</span>]</span>
  function metric(parent, field, label, coloured) {
    var e = el('span', coloured ? 'm c' : 'm');
    e.setAttribute('data-field', field);
    e.setAttribute('data-value', 'null');
    var v = el('span', 'v');
    var rec = { el: e, vt: textIn(v, DASH), raw: 'null', status: null };
    e.appendChild(v);
    if (label) {
      e.appendChild(doc.createTextNode(' '));
      staticText(e, 'span', 'lbl', label);
    }
    parent.appendChild(e);
    return rec;
  }
  function setMetric(m, raw, shown) {
    var r = rawJson(raw);
    if (r !== m.raw) {
      m.raw = r;
      m.el.setAttribute('data-value', r);
    }
    setData(m.vt, shown);
  }
  function setMetricStatus(m, s) {
    if (s !== m.status) {
      m.status = s;
      m.el.setAttribute('data-status', s);
    }
  }
  // A state label: <span class="st" data-status=S>▲ BREACH</span>
  function badge(parent, table) {
    var e = el('span', 'st');
    var rec = { el: e, t: textIn(e, ''), status: null, table: table };
    e.setAttribute('data-status', 'none');
    parent.appendChild(e);
    return rec;
  }
  function setBadge(b, s) {
    if (s !== b.status) {
      b.status = s;
      b.el.setAttribute('data-status', s);
      b.t.data = statusLabel(b.table, s);
    }
  }
  function sep(parent, s) {
    staticText(parent, 'span', 'sep', s);
  }
  // A run of text that wraps as a whole.
  function chunk(parent) {
    var c = el('span', 'nw');
    parent.appendChild(c);
    return c;
  }
  function cell(parent, field, label) {
    var c = el('div', 'cell');
    var m = metric(c, field, null, false);
    staticText(c, 'span', 'cap', label);
    parent.appendChild(c);
    return m;
  }

  // ---- tiles -------------------------------------------------------------
  function buildTile(name) {
    var t = {
      name: name, gen: 0, status: null, since: null, lws: null,
      ticketsOn: false, f: {}, b: {}
    };
    var f = t.f;
    var sec = el('section', 'tile');
    sec.setAttribute('data-queue', name);
    sec.setAttribute('data-status', 'none');
    sec.setAttribute('aria-label', 'Queue ' + name);
    t.el = sec;

    var head = el('header', 'tile-head');
    var h = staticText(head, 'h2', 'tile-name', name);
    h.title = name;
    t.b.tile = badge(head, TILE_LABEL);
    t.b.tile.el.className = 'st tile-badge';
    sec.appendChild(head);

    var hero = el('div', 'hero');
    var c1 = el('div', 'hero-cell');
    f.calls_waiting = metric(c1, 'calls_waiting', null, false);
    staticText(c1, 'div', 'cap', 'waiting');
    hero.appendChild(c1);
    var c2 = el('div', 'hero-cell');
    f.longest_wait_seconds = metric(c2, 'longest_wait_seconds', null, true);
    var cap2 = staticText(c2, 'div', 'cap', 'longest wait ');
    t.b.longest_wait = badge(cap2, STATUS_LABEL);
    hero.appendChild(c2);
    sec.appendChild(hero);

    var rows = el('div', 'rows');
    var r;
    r = row(rows, 'SL today');
    f.service_level_today = metric(r.val, 'service_level_today', null, true);
    var ch = chunk(r.val);
    sep(ch, ' \u00B7 target ');
    f.sl_target = metric(ch, 'sl_target', null, false);
    t.b.sl_today = badge(r.st, STATUS_LABEL);

    r = row(rows, 'SL 15m');
    f.service_level_15m = metric(r.val, 'service_level_15m', null, true);
    ch = chunk(r.val);
    sep(ch, ' \u00B7 target ');
    var tgt = el('span', 'target');
    t.slTarget2 = textIn(tgt, DASH);
    ch.appendChild(tgt);
    t.b.sl_15m = badge(r.st, STATUS_LABEL);

    r = row(rows, 'ASA');
    f.asa_seconds = metric(r.val, 'asa_seconds', null, true);
    t.asaTargetWrap = el('span', 'nw');
    sep(t.asaTargetWrap, ' \u00B7 target ');
    f.asa_target_seconds = metric(t.asaTargetWrap, 'asa_target_seconds', null, false);
    r.val.appendChild(t.asaTargetWrap);
    t.b.asa = badge(r.st, STATUS_LABEL);

    r = row(rows, 'Abandoned');
    f.abandoned_today = metric(chunk(r.val), 'abandoned_today', 'today', false);
    ch = chunk(r.val);
    sep(ch, ' \u00B7 ');
    f.abandon_rate_15m = metric(ch, 'abandon_rate_15m', 'in 15m', true);
    t.b.abandon = badge(r.st, STATUS_LABEL);

    r = row(rows, 'Forecast');
    f.predicted_service_level = metric(r.val, 'predicted_service_level', null, true);
    ch = chunk(r.val);
    sep(ch, ' \u00B7 needs ');
    f.agents_required = metric(ch, 'agents_required', null, false);
    ch = chunk(r.val);
    sep(ch, ' (');
    var st2 = el('span', 'm');
    t.staffed2 = textIn(st2, DASH);
    ch.appendChild(st2);
    sep(ch, ' staffed)');
    t.b.forecast = badge(r.st, STATUS_LABEL);
    sec.appendChild(rows);

    var ag = el('div', 'strip agents-strip');
    f['agents.available'] = cell(ag, 'agents.available', 'available');
    f['agents.on_call'] = cell(ag, 'agents.on_call', 'on call');
    f['agents.wrap_up'] = cell(ag, 'agents.wrap_up', 'wrap-up');
    f['agents.away'] = cell(ag, 'agents.away', 'away');
    f['agents.staffed'] = cell(ag, 'agents.staffed', 'staffed');
    sec.appendChild(ag);

    // Tickets: built once, attached only while the payload has tickets.
    var tk = el('div', 'strip tickets-strip');
    staticText(tk, 'div', 'strip-title', 'Tickets');
    f['tickets.open'] = cell(tk, 'tickets.open', 'open');
    f['tickets.backlog'] = cell(tk, 'tickets.backlog', 'backlog');
    f['tickets.sla_breached'] = cell(tk, 'tickets.sla_breached', 'SLA breached');
    f['tickets.sla_due_soon'] = cell(tk, 'tickets.sla_due_soon', 'due soon');
    t.ticketsEl = tk;
    return t;
  }

  function row(parent, label) {
    var r = el('div', 'row');
    staticText(r, 'span', 'row-label', label);
    var val = el('span', 'row-val');
    r.appendChild(val);
    var st = el('span', 'row-st');
    r.appendChild(st);
    parent.appendChild(r);
    return { val: val, st: st };
  }

  function waitText(t) {
    if (t.since !== null) return dur(serverNow() - t.since);
    return dur(t.lws);
  }

  function updateTile(t, q) {
    var f = t.f;
    var b = t.b;
    var st = q.status && typeof q.status === 'object' ? q.status : {};
    var tileStatus = normStatus(st.tile);
    if (tileStatus !== t.status) {
      t.status = tileStatus;
      t.el.setAttribute('data-status', tileStatus);
    }
    setBadge(b.tile, tileStatus);

    setMetric(f.calls_waiting, q.calls_waiting, count(q.calls_waiting));
    t.since = isNum(q.oldest_waiting_since) ? q.oldest_waiting_since : null;
    t.lws = isNum(q.longest_wait_seconds) ? q.longest_wait_seconds : null;
    setMetric(f.longest_wait_seconds, q.longest_wait_seconds, waitText(t));
    var lw = normStatus(st.longest_wait);
    setMetricStatus(f.longest_wait_seconds, lw);
    setBadge(b.longest_wait, lw);

    var sl = normStatus(st.service_level);
    var target = pctDown(q.sl_target);
    // The server may rate today's SL on its own; else one status for both.
    var slToday = typeof st.service_level_today === 'string' ? normStatus(st.service_level_today) : sl;
    setMetric(f.service_level_today, q.service_level_today, pctDown(q.service_level_today));
    setMetricStatus(f.service_level_today, slToday);
    setMetric(f.service_level_15m, q.service_level_15m, pctDown(q.service_level_15m));
    setMetricStatus(f.service_level_15m, sl);
    setMetric(f.sl_target, q.sl_target, target);
    setData(t.slTarget2, target);
    setBadge(b.sl_today, slToday);
    setBadge(b.sl_15m, sl);

    var asa = normStatus(st.asa);
    setMetric(f.asa_seconds, q.asa_seconds, secs(q.asa_seconds));
    setMetricStatus(f.asa_seconds, asa);
    var hasAsaTarget = isNum(q.asa_target_seconds);
    if (t.asaTargetWrap.hidden === hasAsaTarget) t.asaTargetWrap.hidden = !hasAsaTarget;
    setMetric(f.asa_target_seconds, q.asa_target_seconds, secs(q.asa_target_seconds));
    setBadge(b.asa, asa);

    var ab = normStatus(st.abandon);
    setMetric(f.abandoned_today, q.abandoned_today, count(q.abandoned_today));
    setMetricStatus(f.abandoned_today, ab);
    setMetric(f.abandon_rate_15m, q.abandon_rate_15m, pctUp(q.abandon_rate_15m));
    setMetricStatus(f.abandon_rate_15m, ab);
    setBadge(b.abandon, ab);

    var fc = normStatus(st.forecast);
    setMetric(f.predicted_service_level, q.predicted_service_level, pctDown(q.predicted_service_level));
    setMetricStatus(f.predicted_service_level, fc);
    setMetric(f.agents_required, q.agents_required, count(q.agents_required));
    setMetricStatus(f.agents_required, fc);
    setBadge(b.forecast, fc);

    var ag = q.agents && typeof q.agents === 'object' ? q.agents : {};
    setMetric(f['agents.available'], ag.available, count(ag.available));
    setMetric(f['agents.on_call'], ag.on_call, count(ag.on_call));
    setMetric(f['agents.wrap_up'], ag.wrap_up, count(ag.wrap_up));
    setMetric(f['agents.away'], ag.away, count(ag.away));
    setMetric(f['agents.staffed'], ag.staffed, count(ag.staffed));
    setData(t.staffed2, count(ag.staffed));

    var tk = q.tickets;
    if (tk && typeof tk === 'object') {
      if (!t.ticketsOn) {
        t.el.appendChild(t.ticketsEl);
        t.ticketsOn = true;
        S.layoutDirty = true;
      }
      setMetric(f['tickets.open'], tk.open, count(tk.open));
      setMetric(f['tickets.backlog'], tk.backlog, count(tk.backlog));
      setMetric(f['tickets.sla_breached'], tk.sla_breached, count(tk.sla_breached));
      setMetric(f['tickets.sla_due_soon'], tk.sla_due_soon, count(tk.sla_due_soon));
    } else if (t.ticketsOn) {
      t.el.removeChild(t.ticketsEl);
      t.ticketsOn = false;
      S.layoutDirty = true;
    }
  }

  function applyQueues(queues) {
    var gen = S.gen;
    var kids = tilesEl.children;
    var shown = 0;
    if (queues && typeof queues === 'object') {
      var names = Object.keys(queues);
      for (var k = 0; k < names.length; k++) {
        var name = names[k];
        if (FILTER && !FILTER.has(name)) continue;
        var q = queues[name];
        if (!q || typeof q !== 'object') continue;
        var t = tiles.get(name);
        if (!t) {
          t = buildTile(name);
          tiles.set(name, t);
          S.layoutDirty = true;
        }
        t.gen = gen;
        updateTile(t, q);
        if (kids[shown] !== t.el) {
          tilesEl.insertBefore(t.el, kids[shown] || null);
          S.layoutDirty = true;
        }
        shown++;
      }
    }
    for (var entry of tiles) {
      if (entry[1].gen !== gen) {
        tilesEl.removeChild(entry[1].el);
        tiles.delete(entry[0]);
        S.layoutDirty = true;
      }
    }
    var none = shown === 0;
    if (tilesEmptyEl.hidden === none) tilesEmptyEl.hidden = !none;
    if (none) setData(tilesEmptyText, FILTER ? 'No queue matches ?queues=' + Array.from(FILTER).join(',') : 'No queues');
  }

  // ---- alerts ------------------------------------------------------------
  function severityLevel(sev) {
    switch (sev) {
      case 'critical': case 'page': case 'error': case 'high': case 'breach':
        return 'breach';
      case 'warning': case 'warn': case 'medium':
        return 'warn';
      default:
        return 'none';
    }
  }

  function buildAlert(key) {
    var a = { key: key, gen: 0, sev: null, since: null };
    var e = el('div', 'alert');
    e.setAttribute('data-alert', key);
    var sev = el('span', 'alert-sev');
    a.sevT = textIn(sev, '');
    e.appendChild(sev);
    var sum = el('span', 'alert-summary');
    a.sumT = textIn(sum, '');
    e.appendChild(sum);
    var age = el('span', 'alert-age');
    a.ageT = textIn(age, '');
    e.appendChild(age);
    a.el = e;
    return a;
  }

  function alertAge(a) {
    return a.since === null ? '' : 'firing ' + dur(serverNow() - a.since);
  }

  function updateAlert(a, al) {
    var sev = typeof al.severity === 'string' && al.severity ? al.severity : 'info';
    if (sev !== a.sev) {
      a.sev = sev;
      var level = severityLevel(sev);
      a.el.setAttribute('data-severity', sev);
      a.el.setAttribute('data-level', level);
      a.sevT.data = (level === 'breach' ? '\u25B2 ' : level === 'warn' ? '\u25C6 ' : '\u25CF ') + sev.toUpperCase();
    }
    var summary = al.summary == null ? String(al.rule) : String(al.summary);
    if (al.queue != null && al.queue !== '' && summary.indexOf(String(al.queue)) < 0) {
      summary += ' (' + al.queue + ')';
    }
    setData(a.sumT, summary);
    a.since = isNum(al.firing_since) ? al.firing_since : null;
    setData(a.ageT, alertAge(a));
  }

  function applyAlerts(list) {
    var gen = S.gen;
    var kids = alertsEl.children;
    var shown = 0;
    if (Array.isArray(list)) {
      for (var i = 0; i < list.length; i++) {
        var al = list[i];
        if (!al || typeof al !== 'object') continue;
        var queue = al.queue == null ? '' : String(al.queue);
        if (FILTER && queue && !FILTER.has(queue)) continue;
        var key = String(al.rule) + '|' + queue;
        var a = alerts.get(key);
        if (!a) {
          a = buildAlert(key);
          alerts.set(key, a);
        } else if (a.gen === gen) {
          continue; // duplicate key in one payload: first one wins
        }
        a.gen = gen;
        updateAlert(a, al);
        if (kids[shown] !== a.el) alertsEl.insertBefore(a.el, kids[shown] || null);
        shown++;
      }
    }
    for (var entry of alerts) {
      if (entry[1].gen !== gen) {
        alertsEl.removeChild(entry[1].el);
        alerts.delete(entry[0]);
      }
    }
    var c = String(shown);
    if (alertsEl.getAttribute('data-count') !== c) {
      alertsEl.setAttribute('data-count', c);
      alertsEl.hidden = shown === 0;
      S.layoutDirty = true;
    }
  }

  // ---- agents ------------------------------------------------------------
  function buildAgent(id) {
    var a = { id: id, gen: 0, since: null };
    var tr = el('tr');
    tr.setAttribute('data-agent', id);
    var td = el('td', 'agent-id');
    td.setAttribute('data-field', 'agent_id');
    td.textContent = id;
    tr.appendChild(td);
    td = el('td', 'agent-state');
    td.setAttribute('data-field', 'state');
    a.stateT = textIn(td, '');
    tr.appendChild(td);
    td = el('td', 'agent-time');
    td.setAttribute('data-field', 'time_in_state');
    a.timeT = textIn(td, DASH);
    tr.appendChild(td);
    td = el('td', 'agent-queues');
    td.setAttribute('data-field', 'queues');
    a.queuesT = textIn(td, '');
    tr.appendChild(td);
    td = el('td', 'agent-reason');
    td.setAttribute('data-field', 'reason');
    a.reasonT = textIn(td, '');
    tr.appendChild(td);
    a.el = tr;
    a.state = null;
    return a;
  }

  function agentTime(a) {
    return a.since === null ? DASH : dur(serverNow() - a.since);
  }

  function agentSelected(qs) {
    if (!FILTER) return true;
    if (!Array.isArray(qs)) return false;
    for (var i = 0; i < qs.length; i++) {
      if (FILTER.has(String(qs[i]))) return true;
    }
    return false;
  }

  function applyAgents(list) {
    var gen = S.gen;
    var kids = agentsBody.rows;
    var shown = 0;
    if (Array.isArray(list)) {
      for (var i = 0; i < list.length; i++) {
        var ag = list[i];
        if (!ag || typeof ag !== 'object' || ag.agent_id == null) continue;
        if (!agentSelected(ag.queues)) continue;
        var id = String(ag.agent_id);
        var a = agents.get(id);
        if (!a) {
          a = buildAgent(id);
          agents.set(id, a);
          S.layoutDirty = true;
        } else if (a.gen === gen) {
          continue;
        }
        a.gen = gen;
        var state = ag.state == null ? '' : String(ag.state);
        if (state !== a.state) {
          a.state = state;
          a.el.setAttribute('data-state', state);
          a.stateT.data = state;
        }
        a.since = isNum(ag.since) ? ag.since : null;
        setData(a.timeT, agentTime(a));
        setData(a.queuesT, Array.isArray(ag.queues) ? ag.queues.join(', ') : '');
        setData(a.reasonT, ag.reason == null ? '' : String(ag.reason));
        if (kids[shown] !== a.el) {
          agentsBody.insertBefore(a.el, kids[shown] || null);
          S.layoutDirty = true;
        }
        shown++;
      }
    }
    for (var entry of agents) {
      if (entry[1].gen !== gen) {
        agentsBody.removeChild(entry[1].el);
        agents.delete(entry[0]);
        S.layoutDirty = true;
      }
    }
    setData(agentsCountText, '(' + shown + ')');
    var none = shown === 0;
    if (agentsEmptyEl.hidden === none) agentsEmptyEl.hidden = !none;
    if (none) setData(agentsEmptyText, FILTER ? 'No agent in the selected queues' : 'No agents');
  }

  // ---- one message --------------------------------------------------------
  function onMessage(ev) {
    var p;
    try {
      p = JSON.parse(ev.data);
    } catch (e) {
      console.warn('ccmon wallboard: ignoring a message that is not JSON');
      return;
    }
    if (!p || typeof p !== 'object') return;
    var now = performance.now();
    S.haveData = true;
    S.lastMsgMono = now;
    S.lastActivityMono = now;
    S.conn = 'open';
    backoff = BACKOFF_MIN_MS;
    if (isNum(p.server_time)) S.offset = p.server_time - Date.now() / 1000;
    S.lastServerTime = serverNow();
    var h = p.health && typeof p.health === 'object' ? p.health : {};
    S.serverStale = h.state === 'stale';
    S.serverReason = h.reason == null || h.reason === '' ? null : String(h.reason);
    S.commitAge = isNum(h.last_commit_age_seconds) ? h.last_commit_age_seconds : null;
    S.gen++;

    if (SHOW_TILES) applyQueues(p.queues);
    applyAlerts(p.alerts);
    if (SHOW_AGENTS) applyAgents(p.agents);

    hook.lastPayload = p;
    hook.messages++;
    refreshHealth();
    if (S.layoutDirty) relayout();
  }

  // ---- stream health -------------------------------------------------------
  function refreshHealth() {
    var reconnecting = S.conn === 'error';
    var gap = S.haveData && performance.now() - S.lastMsgMono > STALE_AFTER_MS;
    // A lost stream means no more updates: the figures are stale at once.
    var dataStale = !S.haveData || gap || reconnecting || S.serverStale;
    if (dataStale && S.haveData) {
      if (S.staleSince === null) {
        // Since the last message, or since the server's last commit when the
        // server itself reports the data stale.
        S.staleSince = !gap && !reconnecting && S.commitAge !== null ? S.lastServerTime - S.commitAge : S.lastServerTime;
      }
    } else {
      S.staleSince = null;
    }
    var health = reconnecting ? 'reconnecting' : !S.haveData ? 'connecting' : dataStale ? 'stale' : 'live';
    var text;
    var reason = '';
    var level;
    if (!S.haveData) {
      text = reconnecting ? '\u25B2 reconnecting\u2026' : '\u25CB connecting\u2026';
      level = reconnecting ? 'stale' : 'warn';
    } else if (dataStale) {
      text = '\u25B2 stale since ' + hms(S.staleSince) + (reconnecting ? ' \u00B7 reconnecting\u2026' : '');
      if (S.serverStale && S.serverReason) reason = S.serverReason;
      else if (gap) reason = 'no update for ' + dur((performance.now() - S.lastMsgMono) / 1000);
      level = 'stale';
    } else {
      text = '\u25CF live';
      level = 'live';
    }
    setData(healthText, text);
    setData(healthReason, reason ? '\u2014 ' + reason : '');
    if (level !== S.healthLevel) {
      S.healthLevel = level;
      healthEl.setAttribute('data-level', level);
    }
    if (health !== S.health) {
      S.health = health;
      body.setAttribute('data-health', health);
    }
    if (dataStale !== S.dataStale) {
      S.dataStale = dataStale;
      body.classList.toggle('stale', dataStale);
    }
  }

  // ---- EventSource ---------------------------------------------------------
  function streamUrl() {
    return TOKEN === null ? STREAM_PATH : STREAM_PATH + '?token=' + encodeURIComponent(TOKEN);
  }

  function connect() {
    retryTimer = 0;
    if (es) return;
    try {
      es = new EventSource(streamUrl());
    } catch (e) {
      es = null;
      S.conn = 'error';
      scheduleReconnect();
      return;
    }
    S.lastActivityMono = performance.now();
    es.addEventListener('open', onOpen);
    es.addEventListener('error', onError);
    es.addEventListener('snapshot', onMessage);
    es.addEventListener('message', onMessage);
  }

  function disconnect() {
    if (!es) return;
    es.removeEventListener('open', onOpen);
    es.removeEventListener('error', onError);
    es.removeEventListener('snapshot', onMessage);
    es.removeEventListener('message', onMessage);
    es.close();
    es = null;
  }

  function scheduleReconnect() {
    if (retryTimer) return;
    retryTimer = setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }

  function onOpen() {
    S.conn = 'open';
    S.lastActivityMono = performance.now();
    refreshHealth();
  }

  function onError() {
    S.conn = 'error';
    // The browser retries by itself unless the stream was refused outright
    // (HTTP error, wrong content type): then it is CLOSED and it is up to us.
    if (es && es.readyState === 2) {
      disconnect();
      scheduleReconnect();
    }
    refreshHealth();
  }

  function watchdog() {
    // The server sends at least one message a second: an open stream that is
    // silent this long is a dead connection the browser has not noticed.
    if (es && es.readyState === 1 && performance.now() - S.lastActivityMono > WATCHDOG_MS) {
      disconnect();
      S.conn = 'error';
      scheduleReconnect();
    }
  }

  // ---- the 1 s tick ----------------------------------------------------------
  function tickAges() {
    for (var t of tiles.values()) {
      if (t.since !== null) setData(t.f.longest_wait_seconds.vt, waitText(t));
    }
    for (var a of agents.values()) {
      if (a.since !== null) setData(a.timeT, agentTime(a));
    }
    for (var al of alerts.values()) {
      if (al.since !== null) setData(al.ageT, alertAge(al));
    }
  }

  function tick() {
    setData(clockText, hms(serverNow()));
    watchdog();
    refreshHealth();
    // Stale figures stay frozen (and dimmed); only the clock keeps going.
    if (!S.dataStale) tickAges();
    if (TV && ++S.rotateTicks >= ROTATE_EVERY_TICKS) {
      S.rotateTicks = 0;
      if (S.pages > 1) S.page = (S.page + 1) % S.pages;
      S.layoutDirty = true; // re-measure now and then in any case
    }
    if (S.layoutDirty) relayout();
  }

  // ---- TV pagination -----------------------------------------------------------
  function trackCount(list) {
    if (!list || list === 'none') return 1;
    var n = list.trim().split(/\s+/).length;
    return n > 0 ? n : 1;
  }

  function relayout() {
    S.layoutDirty = false;
    if (!TV) return;
    var container = SHOW_TILES ? tilesEl : agentsBody;
    var items = container.children;
    var n = items.length;
    var i;
    // Measure with everything shown (no paint happens in between).
    for (i = 0; i < n; i++) {
      if (items[i].hidden) items[i].hidden = false;
    }
    var size = n;
    if (n > 0) {
      var bottomPad = parseFloat(getComputedStyle(mainEl).paddingBottom) || 0;
      var avail = window.innerHeight - container.getBoundingClientRect().top - bottomPad;
      var maxH = 1;
      for (i = 0; i < n; i++) {
        var hgt = items[i].offsetHeight;
        if (hgt > maxH) maxH = hgt;
      }
      if (SHOW_TILES) {
        var cs = getComputedStyle(tilesEl);
        var cols = trackCount(cs.gridTemplateColumns);
        var gap = parseFloat(cs.rowGap) || 0;
        size = cols * Math.max(1, Math.floor((avail + gap) / (maxH + gap)));
      } else {
        size = Math.max(1, Math.floor(avail / maxH));
      }
    }
    var pages = Math.max(1, Math.ceil(n / size));
    if (pages !== S.pages) S.rotateTicks = 0;
    S.pages = pages;
    if (S.page >= pages) S.page = 0;
    var start = S.page * size;
    var end = start + size;
    for (i = 0; i < n; i++) {
      var hide = i < start || i >= end;
      if (items[i].hidden !== hide) items[i].hidden = hide;
    }
    var multi = pages > 1;
    if (pagerEl.hidden === multi) pagerEl.hidden = !multi;
    setData(pagerText, multi ? 'page ' + (S.page + 1) + '/' + pages : '');
  }

  function onResize() {
    S.layoutDirty = true;
    if (!S.rafPending) {
      S.rafPending = true;
      window.requestAnimationFrame(onFrame);
    }
  }

  function onFrame() {
    S.rafPending = false;
    if (S.layoutDirty) relayout();
  }

  // ---- start -------------------------------------------------------------------
  function textOf(id) {
    var e = doc.getElementById(id);
    e.textContent = '';
    return textIn(e, '');
  }

  function init() {
    body = doc.body;
    html = doc.documentElement;
    mainEl = doc.getElementById('main');
    healthEl = doc.getElementById('health');
    healthText = textOf('health-text');
    healthReason = textOf('health-reason');
    pagerEl = doc.getElementById('pager');
    pagerText = textOf('pager');
    clockText = textOf('clock');
    alertsEl = doc.getElementById('alerts');
    tilesView = doc.getElementById('tiles-view');
    tilesEl = doc.getElementById('tiles');
    tilesEmptyEl = doc.getElementById('tiles-empty');
    tilesEmptyText = textOf('tiles-empty');
    agentsView = doc.getElementById('agents-view');
    agentsBody = doc.getElementById('agents-body');
    agentsCountText = textOf('agents-count');
    agentsEmptyEl = doc.getElementById('agents-empty');
    agentsEmptyText = textOf('agents-empty');
    setData(tilesEmptyText, 'Waiting for data\u2026');
    setData(agentsEmptyText, 'Waiting for data\u2026');

    if (TV) {
      html.classList.add('tv');
      body.classList.add('tv');
    }
    body.classList.add(VIEW === 'agents' ? 'view-agents' : 'view-tiles');
    tilesView.hidden = !SHOW_TILES;
    agentsView.hidden = !SHOW_AGENTS;

    body.classList.add('stale');
    S.dataStale = true;
    refreshHealth();
    setData(clockText, hms(serverNow()));

    window.addEventListener('resize', onResize);
    connect();
    setInterval(tick, 1000);
  }

  if (doc.readyState === 'loading') {
    doc.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
})();

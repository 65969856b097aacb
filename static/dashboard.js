/* The operator dashboard: one socket (/ws/dashboard/), alerts (acknowledged from here), tiles
   (the models on known outcomes among them), uPlot charts, a feed of decisions (why, and their
   reasons in words, worded by the server) that follows what shoppers do with their offers, the
   money panel and drift. No build step. */
'use strict';
(function () {
  var HISTORY = 15 * 60;
  var FEED = 50; // offers and holdouts shown, and no-offer decisions apart
  var MARKS_KEPT = 200; // marks remembered for items that come after them
  var SHOW_NO_OFFERS = 'liveoffers:dashboard:show-no-offers';
  var MARK_WORDS = { offer_shown: 'shown', offer_accepted: 'accepted', offer_dismissed: 'dismissed', purchase: 'bought' };
  var marksSeen = [];
  var socket = null;
  var retry = 0;
  var MONEY_HISTORY = 2 * 3600 / 5; // the server's points: one every 5 s, two hours
  var RESOLVED_SHOWN = 10;
  var TITLE = document.title;
  var SEVERITY_WORDS = { critical: 'Critical', warning: 'Warning' };
  var history = { t: [], events: [], decisions: [] };
  var moneyHistory = { t: [], estimate: [], low: [], high: [] };
  var alerts = {}; // id -> the alert as last heard of
  var rateChart = null;
  var riskChart = null;
  var moneyChart = null;

  function $(selector) { return document.querySelector(selector); }
  function number(n) { return n == null ? '–' : Number(n).toLocaleString('en'); }
  function percent(p) { return p == null ? '–' : (p * 100).toFixed(1) + '%'; }
  function shortEuros(v) {
    if (v == null) return '';
    var a = Math.abs(v), sign = v < 0 ? '−' : '';
    var text = a >= 1e6 ? +(a / 1e6).toFixed(1) + 'M' : a >= 1e3 ? +(a / 1e3).toFixed(1) + 'k' : String(+a.toFixed(2));
    return sign + text;
  }
  function money(v) { return v == null ? '–' : '€' + Number(v).toLocaleString('en', { minimumFractionDigits: 2, maximumFractionDigits: 2 }); }
  function fixed(v, digits) { return v == null ? '–' : Number(v).toFixed(digits); }
  function signed(v, format) {
    if (v == null) return '–';
    return (v > 0 ? '+' : v < 0 ? '\u2212' : '') + format(Math.abs(v));
  }
  function clock(at) { return at == null ? '–' : new Date(typeof at === 'number' ? at * 1000 : at).toLocaleTimeString(); }

  // --- rendering ---------------------------------------------------------------------------
  function showStats(stats) {
    if (!stats) return;
    var d = stats.decisions || {};
    $('[data-tile=events_per_second]').textContent = number(stats.events_per_second);
    $('[data-tile=live_sessions]').textContent = number(stats.live_sessions);
    $('[data-tile=carts_at_risk]').textContent = number(stats.carts_at_risk);
    $('[data-tile=decisions]').textContent = number((d.offer || 0) + (d.holdout || 0) + (d.no_offer || 0));
    $('[data-tile=decisions_split]').textContent =
      number(d.offer) + ' offer · ' + number(d.holdout) + ' holdout · ' + number(d.no_offer) + ' no offer';
    $('[data-tile=offers]').textContent = number(stats.offers_sent) + ' / ' + number(stats.offers_accepted);
    $('[data-tile=model]').textContent = stats.model || 'none';
    $('[data-tile=shadow_model]').textContent = stats.shadow_model ? 'shadow: ' + stats.shadow_model : '';
    showRecord(stats.record);
    showModelFigures(stats.model_figures);
    showMoney(stats.money);
    showDrift(stats.drift);
    showRisk(stats.risk_histogram);
  }

  // Records on their way to the database and records set aside: an alert when either is off.
  function showRecord(record) {
    if (!record) return;
    var alert = record.behind || record.set_aside > 0;
    $('[data-tile=record]').textContent = alert ? (record.behind ? 'behind' : 'check') : 'ok';
    $('[data-tile=record_detail]').textContent =
      number(record.waiting) + ' waiting · ' + number(record.set_aside) + ' set aside';
    $('[data-tile-box=record]').classList.toggle('alert', alert);
    $('[data-tile-box=record]').title = alert
      ? (record.behind ? 'Records wait for the database: new pauses are held back above the limit.'
                       : 'Some records could not be written: see Dead records in the admin.')
      : '';
  }

  // The active and shadow models on known outcomes (re-scored on the same decisions).
  function showModelFigures(f) {
    var table = $('[data-model-figures]');
    var note = $('[data-model-note]');
    if (!f) {
      table.hidden = true;
      note.textContent = 'Not measured yet.';
      return;
    }
    var rows = $('[data-model-rows]');
    rows.textContent = '';
    f.models.forEach(function (m) {
      var row = document.createElement('tr');
      row.dataset.model = m.model;
      row.dataset.role = m.role;
      var name = document.createElement('th');
      name.scope = 'row';
      name.textContent = m.model + ' ';
      var role = document.createElement('span');
      role.className = 'role ' + m.role;
      role.textContent = m.role;
      name.appendChild(role);
      row.appendChild(name);
      [fixed(m.roc_auc, 3), fixed(m.log_loss, 3), number(m.n)].forEach(function (text, i) {
        var cell = document.createElement('td');
        cell.dataset.figure = ['roc_auc', 'log_loss', 'n'][i];
        cell.textContent = text;
        if (i === 0 && m.trained_roc_auc != null) cell.title = 'ROC-AUC in training: ' + fixed(m.trained_roc_auc, 3);
        row.appendChild(cell);
      });
      rows.appendChild(row);
    });
    table.hidden = f.models.length === 0;
    var basis = f.basis === 'shadow_trial' ? 'since the shadow entered shadow at ' + clock(f.since) : 'of the last 24 h';
    note.textContent = f.n
      ? 'On ' + number(f.n) + ' known outcomes (' + number(f.buyers) + ' bought) ' + basis + ' · updated ' + clock(f.at)
      : 'No known outcomes yet ' + basis + ': an outcome is known once its session had ' +
        Math.round(f.outcome_window_seconds / 60) + ' minutes to buy.';
  }

  // Money: offered against held-out at-risk sessions, and per 1,000 of them with 95% intervals.
  function showInterval(el, ci, format) {
    el.textContent = '';
    var estimate = document.createElement('span');
    estimate.className = 'estimate';
    estimate.textContent = ci && ci.estimate != null ? signed(ci.estimate, format) : '–';
    el.appendChild(estimate);
    if (ci && ci.low != null && ci.high != null) {
      var range = document.createElement('small');
      range.className = 'ci';
      range.textContent = ' (95% CI ' + signed(ci.low, format) + ' to ' + signed(ci.high, format) + ')';
      el.appendChild(range);
    }
  }
  function buyers(v) { return Number(v).toFixed(1); }
  function euros(v) { return '€' + Number(v).toLocaleString('en', { maximumFractionDigits: 0 }); }

  function showMoney(m) {
    if (!m) return;
    ['offered', 'holdout'].forEach(function (name) {
      var g = m[name];
      $('[data-money="' + name + '.sessions"]').textContent = number(g.sessions);
      $('[data-money="' + name + '.bought"]').textContent = number(g.buyers);
      $('[data-money="' + name + '.conversion"]').textContent = g.sessions ? percent(g.buyers / g.sessions) : '–';
      $('[data-money="' + name + '.revenue_per_session"]').textContent = g.sessions ? money(g.revenue / g.sessions) : '–';
      $('[data-money="' + name + '.discount"]').textContent = money(g.discount);
    });
    var p = m.per_1000;
    showInterval($('[data-money=incremental_buyers]'), p.incremental_buyers, buyers);
    showInterval($('[data-money=incremental_revenue]'), p.incremental_revenue, euros);
    showInterval($('[data-money=net_incremental_revenue]'), p.net_incremental_revenue, euros);
    $('[data-money=verdict]').textContent = m.verdict;
    var net = p.net_incremental_revenue;
    pushMoney([Math.round(m.at), net.estimate, net.low, net.high]);
    drawMoney();
  }

  // Drift: PSI of each feature and of the risk score against the active model's training data.
  function showDrift(d) {
    var summary = $('[data-drift-summary]');
    var table = $('[data-drift-table]');
    if (!d) {
      summary.textContent = 'Not measured yet. Drift is measured when the server starts and then every hour (DRIFT_CHECK_SECONDS), against the active model\u2019s training data, once the last 24 hours hold 50 decisions.';
      table.hidden = true;
      return;
    }
    var names = Object.keys(d.features).sort(function (a, b) { return d.features[b] - d.features[a]; });
    var drifted = names.filter(function (name) { return d.features[name] > d.limit; });
    summary.textContent = (d.score == null ? 'Risk score not measured (too few risks by the active model)' : 'Risk score PSI ' + fixed(d.score, 3)) + ' · ' +
      (drifted.length ? plural(drifted.length, 'feature', 'features') + ' above ' + d.limit : 'no feature above ' + d.limit) +
      ' · measured ' + clock(d.at) + ' on ' + number(d.n) + ' decisions of the last 24 h against ' + d.model + '\'s training data.';
    summary.classList.toggle('drifted', drifted.length > 0 || (d.score != null && d.score > d.limit));
    var rows = $('[data-drift-rows]');
    rows.textContent = '';
    var scoreRow = { name: 'risk score', psi: d.score };
    [scoreRow].concat(names.map(function (name) { return { name: name, psi: d.features[name] }; })).forEach(function (r) {
      var row = document.createElement('tr');
      row.dataset.feature = r.name;
      row.className = r.psi != null && r.psi > d.limit ? 'drifted' : '';
      if (r === scoreRow) row.classList.add('score');
      var name = document.createElement('th');
      name.scope = 'row';
      name.textContent = r.name;
      var value = document.createElement('td');
      var figure = document.createElement('span');
      figure.className = 'psi';
      figure.textContent = fixed(r.psi, 3);
      value.appendChild(figure);
      var bar = document.createElement('span');
      bar.className = 'bar';
      bar.style.width = Math.min(100, (r.psi || 0) / (2 * d.limit) * 100) + '%';
      value.prepend(bar);
      row.append(name, value);
      rows.appendChild(row);
    });
    table.hidden = false;
  }

  // --- alerts --------------------------------------------------------------------------------
  function openFirst(a, b) {
    var ao = a.resolved_at == null, bo = b.resolved_at == null;
    if (ao !== bo) return ao ? -1 : 1;
    var ka = Date.parse(ao ? a.first_seen : a.resolved_at), kb = Date.parse(ao ? b.first_seen : b.resolved_at);
    return kb - ka || b.id - a.id;
  }

  function applyAlert(alert) {
    var known = alerts[alert.id];
    // a late frame never undoes an acknowledgement made here meanwhile
    if (known && known.acknowledged_at && !alert.acknowledged_at) {
      alert.acknowledged_at = known.acknowledged_at;
      alert.acknowledged_by = known.acknowledged_by;
    }
    alerts[alert.id] = alert;
  }

  function showAlerts() {
    var all = Object.keys(alerts).map(function (id) { return alerts[id]; }).sort(openFirst);
    var resolved = all.filter(function (a) { return a.resolved_at != null; });
    resolved.slice(RESOLVED_SHOWN).forEach(function (a) { delete alerts[a.id]; });
    all = all.filter(function (a) { return alerts[a.id]; });
    var list = $('[data-alerts]');
    list.textContent = '';
    all.forEach(function (a) { list.appendChild(alertItem(a)); });
    $('[data-alerts-empty]').hidden = all.length > 0;
    var open = all.filter(function (a) { return a.resolved_at == null; });
    var critical = open.some(function (a) { return a.severity === 'critical'; });
    var count = $('[data-alert-count]');
    count.hidden = open.length === 0;
    count.textContent = plural(open.length, 'open alert', 'open alerts');
    count.classList.toggle('critical', critical);
    document.title = open.length ? '(' + open.length + ') ' + TITLE : TITLE;
  }

  function alertItem(a) {
    var open = a.resolved_at == null;
    var item = document.createElement('li');
    item.className = 'alert ' + (open ? 'open ' + a.severity : 'resolved') + (a.acknowledged_at ? ' acknowledged' : '');
    item.dataset.alertId = a.id;
    item.dataset.kind = a.kind;
    var severity = document.createElement('span');
    severity.className = 'severity';
    severity.textContent = open ? (SEVERITY_WORDS[a.severity] || a.severity) : 'Resolved';
    var body = document.createElement('div');
    body.className = 'body';
    var message = document.createElement('p');
    message.className = 'message';
    message.textContent = a.message;
    var meta = document.createElement('p');
    meta.className = 'meta';
    var parts = [a.kind, 'since ' + clock(a.first_seen)];
    if (!open) parts.push('resolved ' + clock(a.resolved_at));
    if (a.acknowledged_at) parts.push('acknowledged by ' + (a.acknowledged_by || 'someone') + ' at ' + clock(a.acknowledged_at));
    meta.textContent = parts.join(' · ');
    body.append(message, meta);
    item.append(severity, body);
    if (open && !a.acknowledged_at) {
      var button = document.createElement('button');
      button.type = 'button';
      button.textContent = 'Acknowledge';
      button.addEventListener('click', function () { acknowledge(a.id, button); });
      item.appendChild(button);
    }
    return item;
  }

  function csrfToken() {
    var field = document.querySelector('[name=csrfmiddlewaretoken]');
    return field ? field.value : '';
  }

  function acknowledge(id, button) {
    button.disabled = true;
    fetch('/api/alerts/' + encodeURIComponent(id) + '/acknowledge/', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRFToken': csrfToken(), 'Accept': 'application/json' }
    }).then(function (response) {
      if (!response.ok) throw new Error('the server answered ' + response.status);
      return response.json();
    }).then(function (alert) {
      applyAlert(alert);
      showAlerts();
    }).catch(function (error) {
      button.disabled = false;
      button.title = 'Could not acknowledge: ' + error.message;
      button.textContent = 'Acknowledge (try again)';
    });
  }

  // --- the feed ------------------------------------------------------------------------------
  function showReasons(item, frame) {
    var list = item.querySelector('.reasons');
    list.textContent = '';
    var words = frame.reasons_in_words || [];
    words.forEach(function (text) {
      var line = document.createElement('li');
      line.textContent = text;
      list.appendChild(line);
    });
    if (!words.length && frame.outcome !== 'no_offer') {
      var none = document.createElement('li');
      none.className = 'pending';
      none.textContent = frame.reasons_pending ? 'reasons pending' : 'no reasons worked out';
      list.appendChild(none);
    }
  }

  function addDecision(frame, atTop) {
    var list = $('[data-feed]');
    var item = document.createElement('li');
    item.className = 'decision ' + frame.outcome;
    item.dataset.session = frame.session;
    item.dataset.pauseKey = frame.pause_key || '';
    item.dataset.offer = frame.offer_id || '';
    item.dataset.outcome = frame.outcome;
    var outcome = document.createElement('span');
    outcome.className = 'outcome ' + frame.outcome;
    outcome.textContent = { offer: 'Offer', holdout: 'Holdout', no_offer: 'No offer' }[frame.outcome] || frame.outcome;
    var body = document.createElement('div');
    body.className = 'body';
    var why = document.createElement('p');
    why.className = 'why';
    why.textContent = frame.why || '';
    var reasons = document.createElement('ul');
    reasons.className = 'reasons';
    var marks = document.createElement('p');
    marks.className = 'marks';
    marks.setAttribute('aria-live', 'polite');
    body.append(why, reasons, marks);
    var meta = document.createElement('span');
    meta.className = 'meta';
    meta.textContent = 'risk ' + (frame.risk == null ? '–' : frame.risk.toFixed(2)) + ' · ' + money(frame.cart_value) +
      ' · ' + (frame.model || 'no model') + ' · ' + new Date(frame.at * 1000).toLocaleTimeString() + ' · ';
    var link = document.createElement('a');
    link.href = frame.admin_url || '/admin/offers/decision/?session=' + encodeURIComponent(frame.session);
    link.textContent = 'in the admin';
    meta.appendChild(link);
    item.append(outcome, body, meta);
    showReasons(item, frame);
    marksSeen.forEach(function (mark) { if (belongsTo(item, mark)) markItem(item, mark.kind); });
    if (atTop) list.prepend(item); else list.append(item);
    trim(list, frame.outcome === 'no_offer');
    showEmpty();
    if (frame.skipped) {
      var note = $(frame.outcome === 'no_offer' ? '[data-skipped-no-offers]' : '[data-skipped]');
      note.hidden = false;
      note.textContent = 'Busy: ' + number(frame.skipped) + (frame.outcome === 'no_offer'
        ? ' no-offer decisions left out of this feed (sampled above 20 a second).'
        : ' decisions left out of this feed (sampled above 50 a second).');
    }
  }

  // Offers and holdouts, and no-offer decisions, are kept FEED each: no-offers never push out offers.
  function trim(list, noOffers) {
    var items = list.querySelectorAll(noOffers ? 'li.no_offer' : 'li.offer, li.holdout');
    for (var i = FEED; i < items.length; i++) items[i].remove();
  }

  function showEmpty() {
    var list = $('[data-feed]');
    var all = showingNoOffers();
    var shown = list.querySelectorAll(all ? 'li.decision' : 'li.offer, li.holdout').length;
    var hidden = all ? 0 : list.querySelectorAll('li.no_offer').length;
    var empty = $('[data-feed-empty]');
    empty.hidden = shown > 0;
    empty.textContent = all ? 'No decisions yet.'
      : 'No offer or holdout decisions yet.' + (hidden ? ' ' + plural(hidden, 'no-offer decision is', 'no-offer decisions are') +
        ' hidden: show them to see why no offer was made.' : '');
  }
  function plural(n, one, many) { return n + ' ' + (n === 1 ? one : many); }

  function belongsTo(item, mark) {
    return item.dataset.session === mark.session && (!mark.offer_id || item.dataset.offer === mark.offer_id);
  }

  function markItem(item, kind) {
    var words = MARK_WORDS[kind] || kind;
    var done = (item.dataset.marks || '').split(' ').filter(Boolean);
    if (done.indexOf(kind) >= 0) return;
    done.push(kind);
    item.dataset.marks = done.join(' ');
    var chip = document.createElement('span');
    chip.className = 'mark ' + kind;
    chip.textContent = words;
    item.querySelector('.marks').appendChild(chip);
  }

  // What a shopper did (saw, took or closed the offer, bought): onto the items it belongs to,
  // and remembered for a decision item that comes after it.
  function applyMark(mark) {
    marksSeen.push(mark);
    if (marksSeen.length > MARKS_KEPT) marksSeen.shift();
    $('[data-feed]').querySelectorAll('li.decision').forEach(function (item) {
      if (belongsTo(item, mark)) markItem(item, mark.kind);
    });
  }

  function applyReasons(frame) {
    $('[data-feed]').querySelectorAll('li.decision').forEach(function (item) {
      if (item.dataset.pauseKey === frame.pause_key) {
        showReasons(item, { outcome: item.dataset.outcome, reasons_in_words: frame.reasons_in_words, reasons_pending: false });
      }
    });
  }

  function showingNoOffers() { return $('[data-show-no-offers]').checked; }

  function setShowNoOffers(on) {
    $('[data-show-no-offers]').checked = on;
    $('[data-feed-section]').classList.toggle('show-no-offers', on);
    showEmpty();
  }

  function remembered() {
    try { return window.localStorage.getItem(SHOW_NO_OFFERS) === '1'; } catch (e) { return false; }
  }

  function remember(on) {
    try { window.localStorage.setItem(SHOW_NO_OFFERS, on ? '1' : '0'); } catch (e) { /* private mode: not kept */ }
  }

  // --- charts --------------------------------------------------------------------------------
  function width(el) { return Math.max(240, el.clientWidth - 4); }

  function makeCharts() {
    if (!window.uPlot || rateChart) return;
    var moneyEl = $('[data-chart=money]');
    moneyChart = new uPlot({
      width: width(moneyEl), height: 160,
      scales: { x: { time: true } },
      series: [
        {},
        { label: 'net €/1,000', stroke: '#116329', width: 2, spanGaps: false },
        { label: 'low', stroke: 'rgba(17,99,41,.35)', dash: [4, 4] },
        { label: 'high', stroke: 'rgba(17,99,41,.35)', dash: [4, 4] }
      ],
      bands: [{ series: [3, 2], fill: 'rgba(45,164,78,.12)' }],
      legend: { show: false }, // the caption says what the lines are
      // a narrow panel: fewer time ticks, and euros in short (−500k) so no label is cut off
      axes: [{ space: 70 }, { size: 52, values: function (u, vals) { return vals.map(shortEuros); } }]
    }, moneyData(), moneyEl);
    var rateEl = $('[data-chart=rate]');
    rateChart = new uPlot({
      width: width(rateEl), height: 220,
      scales: { x: { time: true } },
      series: [{}, { label: 'events/s', stroke: '#2da44e', width: 2 }, { label: 'decisions/s', stroke: '#1f6feb', width: 2, scale: 'd' }],
      axes: [{}, { label: 'events/s' }, { side: 1, scale: 'd', label: 'decisions/s', grid: { show: false } }]
    }, [history.t, history.events, history.decisions], rateEl);
    var riskEl = $('[data-chart=risk]');
    riskChart = new uPlot({
      width: width(riskEl), height: 220,
      scales: { x: { time: false, range: [0, 1] } },
      series: [{ label: 'risk' }, { label: 'decisions', fill: 'rgba(31,111,235,.35)', stroke: '#1f6feb', paths: uPlot.paths.bars({ size: [0.9], align: 1 }), points: { show: false } }],
      axes: [{ values: function (u, vals) { return vals.map(function (v) { return v.toFixed(1); }); } }, {}]
    }, [[0, .1, .2, .3, .4, .5, .6, .7, .8, .9], new Array(10).fill(0)], riskEl);
    window.addEventListener('resize', function () {
      rateChart.setSize({ width: width(rateEl), height: 220 });
      riskChart.setSize({ width: width(riskEl), height: 220 });
      moneyChart.setSize({ width: width(moneyEl), height: 160 });
    });
  }

  function moneyData() { return [moneyHistory.t, moneyHistory.estimate, moneyHistory.low, moneyHistory.high]; }

  // One point per refresh of the figures (the stats repeat them in between).
  function pushMoney(point) {
    var t = moneyHistory.t;
    if (t.length && t[t.length - 1] >= point[0]) return;
    t.push(point[0]); moneyHistory.estimate.push(point[1]); moneyHistory.low.push(point[2]); moneyHistory.high.push(point[3]);
    if (t.length > MONEY_HISTORY) { t.shift(); moneyHistory.estimate.shift(); moneyHistory.low.shift(); moneyHistory.high.shift(); }
  }

  function drawMoney() { if (moneyChart) moneyChart.setData(moneyData()); }

  function pushHistory(point) {
    history.t.push(point[0]); history.events.push(point[1]); history.decisions.push(point[2]);
    if (history.t.length > HISTORY) { history.t.shift(); history.events.shift(); history.decisions.shift(); }
  }

  function drawRate() { if (rateChart) rateChart.setData([history.t, history.events, history.decisions]); }
  function showRisk(bins) { if (riskChart && bins) riskChart.setData([[0, .1, .2, .3, .4, .5, .6, .7, .8, .9], bins]); }

  // --- the socket ----------------------------------------------------------------------------
  function status(text, live) { var el = $('[data-status]'); el.textContent = text; el.classList.toggle('live', !!live); }

  var handlers = {
    snapshot: function (frame) {
      history = { t: [], events: [], decisions: [] };
      (frame.history || []).forEach(pushHistory);
      makeCharts(); drawRate();
      $('[data-feed]').textContent = '';
      marksSeen = [];
      var decisions = (frame.decisions || []).concat(frame.no_offer_decisions || []);
      decisions.sort(function (a, b) { return a.at - b.at; });
      decisions.forEach(function (d) { addDecision(d, true); });
      (frame.marks || []).forEach(applyMark);
      showEmpty();
      moneyHistory = { t: [], estimate: [], low: [], high: [] };
      (frame.money_history || []).forEach(pushMoney);
      drawMoney();
      if (frame.alerts) { // null: the server could not read them; the ones shown stay
        alerts = {};
        frame.alerts.forEach(applyAlert);
        showAlerts();
      }
      showStats(frame.stats);
    },
    stats: function (frame) {
      pushHistory([Math.round(frame.at), frame.events_per_second, frame.decisions_per_second]);
      makeCharts(); drawRate(); showStats(frame);
    },
    decision: function (frame) { addDecision(frame, true); },
    reasons: applyReasons,
    mark: applyMark,
    alert: function (frame) { applyAlert(frame); showAlerts(); }
  };

  function connect() {
    if (socket || document.hidden) return;
    var scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    socket = new WebSocket(scheme + location.host + '/ws/dashboard/');
    socket.onopen = function () { retry = 0; status('Live', true); };
    socket.onmessage = function (message) {
      var frame = JSON.parse(message.data);
      if (handlers[frame.type]) handlers[frame.type](frame);
    };
    socket.onclose = function () {
      socket = null;
      if (document.hidden) { status('Paused while hidden'); return; }
      // Capped exponential backoff with jitter, so many dashboards do not reconnect in step.
      var delay = Math.random() * Math.min(30000, 500 * Math.pow(2, retry++));
      status('Reconnecting…');
      setTimeout(connect, delay);
    };
  }

  // Hidden tabs close the socket; shown again, a fresh snapshot catches them up.
  document.addEventListener('visibilitychange', function () {
    if (document.hidden) { if (socket) socket.close(); } else { connect(); }
  });
  window.addEventListener('DOMContentLoaded', function () {
    setShowNoOffers(remembered());
    $('[data-show-no-offers]').addEventListener('change', function (event) {
      remember(event.target.checked);
      setShowNoOffers(event.target.checked);
    });
    makeCharts(); connect();
  });
})();

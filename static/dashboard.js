/* The operator dashboard: one socket (/ws/dashboard/), tiles, two uPlot charts, a feed of
   at-risk carts with their reasons in plain words, and the uplift panel. No build step. */
'use strict';
(function () {
  var HISTORY = 15 * 60;
  var FEED = 50;
  var socket = null;
  var retry = 0;
  var history = { t: [], events: [], decisions: [] };
  var rateChart = null;
  var riskChart = null;

  function $(selector) { return document.querySelector(selector); }
  function number(n) { return n == null ? '–' : Number(n).toLocaleString('en'); }
  function percent(p) { return p == null ? '–' : (p * 100).toFixed(1) + '%'; }
  function money(v) { return '€' + Number(v).toLocaleString('en', { maximumFractionDigits: 0 }); }
  function plural(n, one, many) { return n + ' ' + (n === 1 ? one : many); }

  // --- reasons in plain words --------------------------------------------------------------
  var WORDS = {
    cart_value: function (v) { return 'cart ' + money(v); },
    cart_lines: function (v) { return plural(v, 'product', 'products') + ' in the cart'; },
    cart_quantity: function (v) { return plural(v, 'item', 'items') + ' in the cart'; },
    distinct_products: function (v) { return 'looked at ' + plural(v, 'product', 'products'); },
    product_views: function (v) { return plural(v, 'product page', 'product pages') + ' viewed'; },
    page_views: function (v) { return plural(v, 'page', 'pages') + ' viewed'; },
    views_since_add: function (v) { return 'compared ' + plural(v, 'product', 'products') + ' since adding to cart'; },
    seconds_since_add: function (v) { return 'added to cart ' + minutes(v) + ' ago'; },
    session_seconds: function (v) { return minutes(v) + ' on the site'; },
    searches: function (v) { return 'searched ' + plural(v, 'time', 'times'); },
    adds: function (v) { return 'added to cart ' + plural(v, 'time', 'times'); },
    removes: function (v) { return 'removed from cart ' + plural(v, 'time', 'times'); },
    hidden: function (v) { return v ? 'left the tab' : 'tab in view'; },
    checkout_started: function (v) { return v ? 'started checkout' : 'did not start checkout'; },
    offers_seen: function (v) { return v ? 'saw ' + plural(v, 'offer', 'offers') + ' before' : 'no offer seen before'; },
    hour_of_day: function (v) { return 'at ' + String(v).padStart(2, '0') + ':00 UTC'; }
  };
  function minutes(seconds) {
    return seconds < 90 ? Math.round(seconds) + ' s' : Math.round(seconds / 60) + ' min';
  }
  function inWords(reason) {
    var say = WORDS[reason.feature];
    var text = say ? say(reason.value) : reason.feature + ' ' + reason.value;
    return text + (reason.contribution >= 0 ? ' (raises risk)' : ' (lowers risk)');
  }

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
    showUplift(stats.conversion);
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

  function showUplift(c) {
    if (!c) return;
    $('[data-uplift="offered.sessions"]').textContent = number(c.offered.sessions);
    $('[data-uplift="offered.converted"]').textContent = number(c.offered.converted);
    $('[data-uplift="offered.rate"]').textContent = percent(c.offered.rate);
    $('[data-uplift="holdout.sessions"]').textContent = number(c.holdout.sessions);
    $('[data-uplift="holdout.converted"]').textContent = number(c.holdout.converted);
    $('[data-uplift="holdout.rate"]').textContent = percent(c.holdout.rate);
    $('[data-uplift=difference]').textContent = c.difference == null ? '–'
      : (c.difference >= 0 ? '+' : '') + (c.difference * 100).toFixed(1) + ' points, 95% CI ' +
        (c.low * 100).toFixed(1) + ' to ' + (c.high * 100).toFixed(1);
    $('[data-uplift=verdict]').textContent = c.verdict;
  }

  function addDecision(frame, atTop) {
    var list = $('[data-feed]');
    var item = document.createElement('li');
    var outcome = document.createElement('span');
    outcome.className = 'outcome ' + frame.outcome;
    outcome.textContent = frame.outcome === 'offer' ? 'Offer' : 'Holdout';
    var why = document.createElement('ul');
    why.className = 'why';
    (frame.reasons || []).forEach(function (reason) {
      var line = document.createElement('li');
      line.textContent = inWords(reason);
      why.appendChild(line);
    });
    if (!why.children.length) { var none = document.createElement('li'); none.textContent = 'reasons pending'; why.appendChild(none); }
    var meta = document.createElement('span');
    meta.className = 'meta';
    meta.textContent = 'risk ' + (frame.risk == null ? '–' : frame.risk.toFixed(2)) + ' · ' + money(frame.cart_value) +
      ' · ' + (frame.model || 'no model') + ' · ' + new Date(frame.at * 1000).toLocaleTimeString();
    item.append(outcome, why, meta);
    item.dataset.session = frame.session;
    if (atTop) list.prepend(item); else list.append(item);
    while (list.children.length > FEED) list.lastChild.remove();
    $('[data-feed-empty]').hidden = true;
    var note = $('[data-skipped]');
    if (frame.skipped) { note.hidden = false; note.textContent = 'Busy: ' + number(frame.skipped) + ' decisions left out of this feed (sampled above 50 a second).'; }
  }

  // --- charts --------------------------------------------------------------------------------
  function width(el) { return Math.max(240, el.clientWidth - 4); }

  function makeCharts() {
    if (!window.uPlot || rateChart) return;
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
    });
  }

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
      (frame.decisions || []).forEach(function (d) { addDecision(d, true); });
      showStats(frame.stats);
    },
    stats: function (frame) {
      pushHistory([Math.round(frame.at), frame.events_per_second, frame.decisions_per_second]);
      makeCharts(); drawRate(); showStats(frame);
    },
    decision: function (frame) { addDecision(frame, true); }
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
  window.addEventListener('DOMContentLoaded', function () { makeCharts(); connect(); });
})();

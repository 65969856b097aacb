/* The operator dashboard: one socket (/ws/dashboard/), tiles, two uPlot charts, a feed of
   decisions (why, and their reasons in words, worded by the server) that follows what shoppers
   do with their offers, and the uplift panel. No build step. */
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
  var history = { t: [], events: [], decisions: [] };
  var rateChart = null;
  var riskChart = null;

  function $(selector) { return document.querySelector(selector); }
  function number(n) { return n == null ? '–' : Number(n).toLocaleString('en'); }
  function percent(p) { return p == null ? '–' : (p * 100).toFixed(1) + '%'; }
  function money(v) { return '€' + Number(v).toLocaleString('en', { minimumFractionDigits: 2, maximumFractionDigits: 2 }); }

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
      marksSeen = [];
      var decisions = (frame.decisions || []).concat(frame.no_offer_decisions || []);
      decisions.sort(function (a, b) { return a.at - b.at; });
      decisions.forEach(function (d) { addDecision(d, true); });
      (frame.marks || []).forEach(applyMark);
      showEmpty();
      showStats(frame.stats);
    },
    stats: function (frame) {
      pushHistory([Math.round(frame.at), frame.events_per_second, frame.decisions_per_second]);
      makeCharts(); drawRate(); showStats(frame);
    },
    decision: function (frame) { addDecision(frame, true); },
    reasons: applyReasons,
    mark: applyMark
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

// Live Offers embed; wire protocol in docs/PROTOCOL.md. Served as is, so kept readable.
(() => {
  'use strict';

  const stub = window.liveoffers;
  if (stub && stub.loaded) return; // the tag twice on a page: one socket
  const script = document.currentScript || document.querySelector('script[data-site][src*="liveoffers"]');
  const site = script && script.dataset.site;
  if (!site) return;

  // The server is where this file came from, whatever the page's origin.
  const src = new URL(script.src, location.href);
  const base = src.origin + src.pathname.replace(/static\/[^/]*$/, '');
  const socketUrl = base.replace(/^http/, 'ws') + 'ws/collect/?site=' + encodeURIComponent(site);

  const BATCH_DELAY = 50; // ms: events this close together share a frame
  // The server knows a session's last 96 ids, so a re-send never doubles; under 100 a frame.
  const MAX_BUFFER = 64;
  // In characters, at most 3 bytes each: under the server's 16 KiB a frame, 64 KiB a beacon.
  const MAX_FRAME = 5000;
  const MAX_BEACON = 20000;
  const RETRY_MIN = 500;
  const RETRY_MAX = 30000;
  const RATE_WAIT = 1000; // ms for the server's rate limit to refill
  const SHOWN = 1;
  const ANSWERED = 2;
  const PAGE_TYPES = ['home', 'category', 'product', 'search', 'cart', 'checkout', 'info', 'other'];
  // Props each clicked [data-lo-event] may carry: the server refuses others.
  const CLICK_PROPS = {
    product_view: ['product_id', 'price'],
    add_to_cart: ['product_id', 'price', 'quantity'],
    remove_from_cart: ['product_id', 'quantity'],
    checkout_start: [],
    purchase: [],
  };

  // Never throw into the host page.
  const safe = (fn) => function () {
    try {
      return fn.apply(this, arguments);
    } catch {}
  };
  // Blocked storage: the session lasts one page.
  const load = safe((key) => sessionStorage.getItem(key));
  const store = safe((key, value) => sessionStorage.setItem(key, value));
  const tokenKey = 'liveoffers:token:' + site;
  const offersKey = 'liveoffers:offers:' + site;

  // Ids unique within the session: a random prefix a page, then a counter.
  const prefix = crypto.getRandomValues(new Uint32Array(2)).join('-') + '-';
  const doNotTrack = navigator.doNotTrack == '1' || window.doNotTrack == '1';
  let consented = true;
  let counter = 0;
  let token = load(tokenKey);
  let buffer = []; // unacknowledged: {id, json, sent}
  let socket = null;
  let ready = false; // the socket has said welcome
  let attempts = 0;
  let reconnectTimer = 0;
  let flushTimer = 0;
  let leaving = false; // pagehide came
  let handler = null;
  let lastOffer = null;
  let banner = null;
  const presented = {}; // offer ids, this page
  const answers = safe(() => JSON.parse(load(offersKey)))() || {}; // offer id: SHOWN|ANSWERED

  const silent = () => doNotTrack || !consented;
  const ids = (items) => items.map((item) => item.id);
  const joined = (items) => items.map((item) => item.json).join();
  const forget = (gone) => (buffer = buffer.filter((item) => !gone.includes(item.id)));

  function track(name, props) {
    if (silent()) return;
    const id = prefix + ++counter;
    const json = JSON.stringify({id, event: name, ts: Date.now(), props});
    if (json.length > MAX_FRAME) return; // could never be delivered
    if (buffer.length == MAX_BUFFER) buffer.shift();
    buffer.push({id, json});
    if (/^offer_/.test(name) && props) remember(props.offer_id, name == 'offer_shown' ? SHOWN : ANSWERED);
    flushTimer = flushTimer || setTimeout(safe(flush), BATCH_DELAY);
  }

  // Runs that each fit a frame or a beacon.
  function runs(items, max) {
    const all = [[]];
    let size = 0;
    for (const item of items) {
      if ((size += item.json.length + 1) > max) {
        all.push([]);
        size = item.json.length + 1;
      }
      all[all.length - 1].push(item);
    }
    return all.filter((run) => run.length);
  }

  function flush() {
    clearTimeout(flushTimer);
    flushTimer = 0;
    if (!ready) return; // the welcome will
    for (const run of runs(buffer.filter((item) => !item.sent), MAX_FRAME)) {
      socket.send('{"type":"batch","events":[' + joined(run) + ']}');
      run.forEach((item) => (item.sent = true));
    }
  }

  // Page going away or hidden (maybe killed unannounced): unacknowledged events go by beacon.
  function leave() {
    if (silent() || !token || !navigator.sendBeacon) return;
    const head = JSON.stringify({site, token}).slice(0, -1) + ',"events":[';
    for (const run of runs(buffer, MAX_BEACON)) {
      // A string goes as text/plain: no CORS preflight.
      if (navigator.sendBeacon(base + 'collect/', head + joined(run) + ']}')) forget(ids(run));
    }
  }

  function connect() {
    clearTimeout(reconnectTimer);
    if (silent() || socket) return;
    const ws = (socket = new WebSocket(socketUrl + (token ? '&token=' + encodeURIComponent(token) : '')));
    ws.onmessage = safe((message) => socket == ws && receive(JSON.parse(message.data)));
    ws.onclose = safe(() => {
      if (socket != ws) return;
      socket = null;
      ready = false;
      // Capped backoff, full jitter: shoppers do not all come back at once.
      const ceiling = Math.min(RETRY_MAX, RETRY_MIN * 2 ** Math.min(attempts++, 16));
      reconnectTimer = setTimeout(safe(connect), Math.random() * ceiling);
    });
  }

  // Unacknowledged events go again; the server applies each id once.
  function resend() {
    buffer.forEach((item) => (item.sent = false));
    flush();
  }

  function receive(frame) {
    const type = frame.type;
    if (type == 'welcome') {
      store(tokenKey, (token = frame.token));
      ready = true;
      attempts = 0;
      resend();
    } else if (type == 'ack') {
      forget(frame.ids);
    } else if (frame.code == 'rate_limited') {
      setTimeout(safe(resend), RATE_WAIT); // not applied: again, a little later
    } else if (type == 'error') {
      // Refused for good (no id: the whole frame was).
      forget(frame.id ? [frame.id] : ids(buffer.filter((item) => item.sent)));
    } else if (type == 'offer') {
      offered(frame);
    }
  }

  function remember(id, state) {
    if (!(answers[id] >= state)) {
      answers[id] = state;
      store(offersKey, JSON.stringify(answers));
    }
  }

  const live = (offer) => answers[offer.offer_id] != ANSWERED && Date.parse(offer.expires_at) > Date.now();

  // A live, unanswered offer comes on every connect: once a page, until answered.
  function offered(offer) {
    if (presented[offer.offer_id] || !live(offer)) return;
    presented[offer.offer_id] = lastOffer = offer;
    present(offer);
  }

  function present(offer) {
    if (handler) safe(handler)(offer);
    else showBanner(offer);
  }

  function answer(offer, name) {
    if (answers[offer.offer_id] != ANSWERED) track(name, {offer_id: offer.offer_id});
  }

  // The banner lives in a shadow root: the page's CSS and ours never meet.
  const STYLE =
    ':host{all:initial}.b{position:fixed;z-index:2147483647;right:16px;bottom:16px;width:min(320px,100vw - 72px);' +
    'padding:16px 20px;background:#fff;color:#123;border:1px solid #ccd;border-radius:12px;box-shadow:0 8px 24px #0003;' +
    'font:15px/1.4 system-ui,sans-serif}p{margin:0 0 8px}.h{font-weight:700}.c{font:700 17px monospace}.t{color:#567}' +
    'button{font:inherit;cursor:pointer;border-radius:8px;padding:6px 14px;border:0;background:#1f6feb;color:#fff}' +
    '.x{position:absolute;top:8px;right:8px;padding:0 6px;background:none;color:#567;font-size:20px}';

  function el(tag, className, text) {
    const node = document.createElement(tag);
    node.className = className;
    node.textContent = text;
    return node;
  }

  // 29:59 or 23:59:59 (longer offers show that until under a day).
  const clock = (s) => new Date(Math.min(s, 86399) * 1000).toISOString().slice(s < 3600 ? 14 : 11, 19);

  function showBanner(offer) {
    closeBanner();
    const host = el('liveoffers-banner', ''); // not a div: page rules miss it
    host.id = 'liveoffers-banner';
    const root = host.attachShadow({mode: 'open'});
    root.innerHTML = '<style>' + STYLE + '</style><section class="b" tabindex="-1" aria-label="Offer">' +
      '<div role="status" aria-live="polite" aria-atomic="true"></div><p class="t" role="timer"></p>' +
      '<button>Copy code</button><button class="x" aria-label="Close">×</button></section>';
    const box = root.lastChild;
    const [status, timer, copy, close] = box.children;
    const code = el('strong', 'c', offer.code);
    copy.onclick = safe(() => {
      answer(offer, 'offer_accepted');
      copy.textContent = 'Copied';
      copyText(code);
    });
    close.onclick = safe(() => {
      answer(offer, 'offer_dismissed');
      closeBanner();
    });
    box.onkeydown = safe((e) => e.key == 'Escape' && close.click());
    document.body.append(host);
    const tick = safe(() => {
      const left = Math.round((Date.parse(offer.expires_at) - Date.now()) / 1000);
      if (left > 0) timer.textContent = 'Expires in ' + clock(left);
      else closeBanner();
    });
    banner = {host, interval: setInterval(tick, 1000)};
    tick();
    // Filled once the live region exists, so screen readers announce it.
    setTimeout(safe(() => {
      const line = el('p', '', 'Your code: ');
      line.append(code);
      status.append(el('p', 'h', offer.title), el('p', '', offer.message), line);
      if (!answers[offer.offer_id]) track('offer_shown', {offer_id: offer.offer_id});
      // Polite: never takes focus from a field the shopper is typing in.
      if (!document.activeElement.matches('input,textarea,select,[contenteditable]')) box.focus({preventScroll: true});
    }), 100);
  }

  function closeBanner() {
    if (banner) {
      clearInterval(banner.interval);
      banner.host.remove();
      banner = null;
    }
  }

  // Selected first: should both ways of copying fail, the shopper can copy it by hand.
  function copyText(node) {
    getSelection().selectAllChildren(node);
    Promise.resolve(node.textContent)
      .then((text) => navigator.clipboard.writeText(text)) // needs a secure page and permission
      .catch(() => document.execCommand('copy'));
  }

  function pageView() {
    const type = document.body.dataset.loPageType;
    track('page_view', {
      url: (location.pathname + location.search).slice(0, 2048),
      page_type: PAGE_TYPES.includes(type) ? type : undefined, // left out
    });
    visibility();
  }

  function clicked(e) {
    const target = e.target.closest('[data-lo-event]');
    const allowed = target && CLICK_PROPS[target.dataset.loEvent];
    if (!allowed) return;
    const data = target.dataset;
    const found = {
      product_id: data.loProduct || undefined,
      price: parseFloat(data.loPrice),
      quantity: parseInt(data.loQuantity, 10),
    };
    const props = {};
    // NaN !== NaN: leaves out missing numbers.
    for (const key of allowed) if (found[key] === found[key]) props[key] = found[key];
    track(data.loEvent, props);
  }

  // A page left is hidden too: unsaid after pagehide, which comes first or in the same task.
  function visibility() {
    if (!leaving) track('visibility', {state: document.visibilityState});
  }

  function visibilityChanged() {
    if (document.visibilityState == 'hidden') {
      leave();
      setTimeout(safe(() => {
        visibility();
        leave();
      }), 0);
    } else {
      visibility();
      connect(); // now, not when the backoff says
    }
  }

  function pageHidden() {
    leaving = true;
    leave();
  }

  function pageShown(e) {
    leaving = false;
    if (e.persisted) visibility(); // back from the bfcache
    connect();
  }

  const commands = {
    track,
    onOffer(fn) {
      handler = typeof fn == 'function' ? fn : null;
      // An offer that came before the handler is handed over.
      if (handler && lastOffer && live(lastOffer)) {
        closeBanner();
        present(lastOffer);
      }
    },
    consent(given) {
      consented = given !== false;
      attempts = 0;
      if (consented) return connect();
      // Withdrawn: drop what was not delivered and close the socket (it stays closed).
      buffer = [];
      closeBanner();
      if (socket) socket.close();
    },
  };

  function liveoffers(command, ...args) {
    safe(commands[command])(...args);
  }
  liveoffers.loaded = true;

  safe(() => {
    if (document.body) pageView();
    else document.addEventListener('DOMContentLoaded', safe(pageView));
    // Calls made before load, in order.
    const queue = (stub && stub.q) || [];
    for (let i = 0; i < queue.length; i++) liveoffers(...queue[i]);
    window.liveoffers = liveoffers;
    document.addEventListener('click', safe(clicked), true);
    document.addEventListener('visibilitychange', safe(visibilityChanged));
    addEventListener('pagehide', safe(pageHidden));
    addEventListener('pageshow', safe(pageShown));
    connect();
  })();
})();

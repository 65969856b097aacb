/* The demo shop's own cart, kept in sessionStorage. Tracking is left to liveoffers.js: the
   buttons carry data-lo-* attributes, and the pages call liveoffers() for the rest. */
'use strict';
(function () {
  var KEY = 'demo-shop:cart';
  var CODE_KEY = 'demo-shop:code'; // the discount code applied at checkout: {code, percent}
  var discount = 0; // its percent, on the checkout page

  function load() {
    try { return JSON.parse(sessionStorage.getItem(KEY)) || {}; } catch (e) { return {}; }
  }
  function save(cart) { sessionStorage.setItem(KEY, JSON.stringify(cart)); render(); }
  function total(cart) {
    return Object.keys(cart).reduce(function (sum, sku) { return sum + cart[sku].price * cart[sku].qty; }, 0);
  }
  function money(value) { return '€' + value.toFixed(2); }
  function all(selector) { return Array.prototype.slice.call(document.querySelectorAll(selector)); }

  function render() {
    var cart = load();
    var skus = Object.keys(cart);
    var count = skus.reduce(function (n, sku) { return n + cart[sku].qty; }, 0);
    all('[data-cart-count]').forEach(function (el) { el.textContent = count; });
    all('[data-cart-total]').forEach(function (el) { el.textContent = money(total(cart) * (1 - discount / 100)); });
    all('[data-discount]').forEach(function (el) { el.textContent = discount ? '(' + discount + '% off)' : ''; });
    var table = document.querySelector('[data-cart]');
    if (!table) return;
    var body = table.querySelector('tbody');
    body.textContent = '';
    skus.forEach(function (sku) {
      var line = cart[sku];
      var row = body.insertRow();
      row.insertCell().textContent = line.name;
      row.insertCell().textContent = line.qty;
      row.insertCell().textContent = money(line.price * line.qty);
      var remove = document.createElement('button');
      remove.type = 'button';
      remove.textContent = 'Remove';
      remove.setAttribute('aria-label', 'Remove ' + line.name);
      remove.dataset.loEvent = 'remove_from_cart';
      remove.dataset.loProduct = sku;
      remove.addEventListener('click', function () { var c = load(); delete c[sku]; save(c); });
      row.insertCell().appendChild(remove);
    });
    table.hidden = skus.length === 0;
    document.querySelector('[data-cart-empty]').hidden = skus.length > 0;
    document.querySelector('[data-cart-checkout]').hidden = skus.length === 0;
  }

  document.addEventListener('click', function (event) {
    var button = event.target.closest && event.target.closest('button.add');
    if (!button) return;
    var cart = load();
    var sku = button.dataset.loProduct;
    var line = cart[sku] || { name: button.dataset.name, price: parseFloat(button.dataset.loPrice), qty: 0 };
    line.qty += 1;
    cart[sku] = line;
    save(cart);
    button.textContent = 'Added';
    setTimeout(function () { button.textContent = 'Add to cart'; }, 1200);
  });

  function csrf() {
    var field = document.querySelector('[name=csrfmiddlewaretoken]');
    return field ? field.value : '';
  }

  function post(url, fields) {
    return fetch(url, { method: 'POST', body: new URLSearchParams(fields), headers: { 'X-CSRFToken': csrf() } })
      .then(function (response) { return response.json(); });
  }

  function applied() {
    try { return JSON.parse(sessionStorage.getItem(CODE_KEY)); } catch (e) { return null; }
  }
  // Keeps `code` (with its percent) applied across pages and reloads; '' drops it.
  function keep(code, percent) {
    if (code) sessionStorage.setItem(CODE_KEY, JSON.stringify({ code: code, percent: percent }));
    else sessionStorage.removeItem(CODE_KEY);
    discount = code ? percent : 0;
    render();
  }

  // Apply only checks a code: placing the order is what uses it, on the server.
  function checkout(form) {
    var field = form.querySelector('[data-code]');
    var codeStatus = form.querySelector('[data-code-status]');
    var orderStatus = document.querySelector('[data-order-status]');
    var place = form.querySelector('[data-place-order]');
    var asked = 0; // checks asked: only the last one's answer counts

    function check(code, refused) {
      var mine = ++asked;
      post('/checkout/code/', { code: code }).then(function (answer) {
        if (mine !== asked) return;
        if (answer.valid) {
          keep(code, answer.discount_percent);
          codeStatus.textContent = answer.discount_percent + '% off applied.';
        } else {
          keep('');
          refused(answer.detail);
        }
      }, function () {
        if (mine === asked) codeStatus.textContent = 'The code could not be checked; try again.';
      });
    }

    form.querySelector('[data-apply-code]').addEventListener('click', function () {
      var code = field.value.trim().toUpperCase();
      orderStatus.textContent = '';
      if (!code) {
        asked++;
        keep('');
        codeStatus.textContent = '';
        return;
      }
      check(code, function (detail) { codeStatus.textContent = detail; });
    });

    var kept = applied();
    if (kept && kept.code) {
      // Applied before this page: shown at once, and checked again (used or expired meanwhile?).
      field.value = kept.code;
      discount = kept.percent;
      codeStatus.textContent = kept.percent + '% off applied.';
      check(kept.code, function (detail) {
        field.value = '';
        codeStatus.textContent = 'The code ' + kept.code + ' no longer applies: ' + detail;
      });
    }

    form.addEventListener('submit', function (event) {
      event.preventDefault();
      var cart = load();
      if (!Object.keys(cart).length || place.disabled) return;
      var code = applied();
      var order = 'D-' + Date.now().toString(36).toUpperCase();
      place.disabled = true;
      orderStatus.textContent = '';
      post('/checkout/order/', { order_id: order, total: total(cart).toFixed(2), code: code ? code.code : '' })
        .then(function (answer) {
          place.disabled = false;
          if (answer.placed) {
            var bought = { order_id: answer.order_id, total: answer.total };
            if (code && answer.discount_percent) bought.code = code.code;
            window.liveoffers('track', 'purchase', bought);
            keep('');
            save({});
            form.hidden = true;
            orderStatus.textContent = 'Thank you! Order ' + answer.order_id + ' is placed.';
          } else if (answer.error === 'code_refused') {
            asked++;
            keep('');
            field.value = '';
            codeStatus.textContent = '';
            orderStatus.textContent = answer.detail + ' The order is not placed: its discount is off, ' +
              'so place it again at the full price.';
          } else {
            orderStatus.textContent = 'The order could not be placed: ' + answer.detail;
          }
        }, function () {
          place.disabled = false;
          orderStatus.textContent = 'The order could not be placed; try again.';
        });
    });
  }

  var form = document.querySelector('[data-checkout]');
  if (form) checkout(form);

  render();
})();

/* The demo shop's own cart, kept in sessionStorage. Tracking is left to liveoffers.js: the
   buttons carry data-lo-* attributes, and the pages call liveoffers() for the rest. */
'use strict';
(function () {
  var KEY = 'demo-shop:cart';
  var discount = 0;

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

  var apply = document.querySelector('[data-apply-code]');
  if (apply) {
    apply.addEventListener('click', function () {
      var status = document.querySelector('[data-code-status]');
      var body = new URLSearchParams({ code: document.querySelector('[data-code]').value.trim() });
      fetch('/checkout/code/', { method: 'POST', body: body, headers: { 'X-CSRFToken': csrf() } })
        .then(function (response) { return response.json(); })
        .then(function (answer) {
          discount = answer.valid ? answer.discount_percent : 0;
          status.textContent = answer.valid ? answer.discount_percent + '% off applied.' : answer.detail;
          render();
        });
    });
  }

  var form = document.querySelector('[data-checkout]');
  if (form) {
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      var cart = load();
      if (!Object.keys(cart).length) return;
      var order = 'D-' + Date.now().toString(36).toUpperCase();
      window.liveoffers('track', 'purchase', { order_id: order, total: Math.round(total(cart) * (100 - discount)) / 100 });
      save({});
      form.hidden = true;
      document.querySelector('[data-order-status]').textContent = 'Thank you! Order ' + order + ' is placed.';
    });
  }

  render();
})();

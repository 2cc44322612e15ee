// Bazar's storefront: search, a book's page with its buy form, order
// history and the staff forms. Everything goes through the public JSON API
// (the same routes any client uses); the page only renders the answers and
// says where each came from (X-Bazar-Cache / -Served-By / -Index).
'use strict';

const role = (name, root = document) => root.querySelector(`[data-role="${name}"]`);

// Builds an element; children are nodes or text (never parsed as HTML).
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const money = (cents) => '$' + (cents / 100).toFixed(2);

// One call of the API. Never throws: a network failure or a timeout is an
// answer with status 0.
async function api(method, path, opts = {}) {
  const headers = Object.assign({ Accept: 'application/json' }, opts.headers || {});
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), opts.timeoutMs || 10000);
  try {
    const r = await fetch(path, { method, headers, body, signal: ctrl.signal, cache: 'no-store' });
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = { detail: text }; }
    return { status: r.status, ok: r.ok, data, h: (n) => r.headers.get(n) };
  } catch (e) {
    const detail = e.name === 'AbortError' ? 'no answer in time' : 'the store cannot be reached (' + e.message + ')';
    return { status: 0, ok: false, data: { detail }, h: () => null };
  } finally {
    clearTimeout(timer);
  }
}

// Where an answer came from, in words.
function provenance(r, what) {
  const cache = r.h('x-bazar-cache');
  const by = r.h('x-bazar-served-by');
  const index = r.h('x-bazar-index');
  const at = index ? ` at log index ${index}` : '';
  if (cache === 'hit') return `${what}: served from this frontend's cache (hit)${at}.`;
  if (cache === 'miss') return `${what}: cache miss, read from node ${by}${at}.`;
  if (cache === 'bypass') return `${what}: cache bypassed, read from node ${by}${at}.`;
  return index ? `${what}: committed${at}.` : '';
}

function showSource(r, what) {
  const p = role('source');
  if (!p) return;
  p.textContent = provenance(r, what);
  p.dataset.cache = r.h('x-bazar-cache') || '';
  p.dataset.servedBy = r.h('x-bazar-served-by') || '';
  p.dataset.index = r.h('x-bazar-index') || '';
}

// A refusal, in words a shopper understands.
function explain(r) {
  const d = (r.data && r.data.detail) || '';
  switch (r.data && r.data.code) {
    case 'not_found': return 'Not found: ' + d;
    case 'out_of_stock': return 'Out of stock: nothing was bought. ' + d;
    case 'unauthorized': return 'Refused: ' + d;
    case 'invalid_input': return 'Please check the form: ' + d;
    case 'unavailable': {
      const after = r.h('retry-after') || '1';
      return `The store's cluster is unavailable right now (no leader or quorum answered in time). Try again in ${after} s. ${d}`;
    }
  }
  if (r.status === 0) return d;
  return `The store answered ${r.status}: ${d}`;
}

function message(text, info = false) {
  const m = role('message');
  if (!m) return;
  m.textContent = text || '';
  m.classList.toggle('info', info);
}

// ---------------------------------------------------------------- search

function bookCard(b) {
  return el('li', { 'data-book': b.id },
    el('a', { href: `/book/${b.id}` }, b.title),
    el('div', { class: 'meta' }, `${money(b.price_cents)} · ${b.stock} in stock · ${b.topic}`));
}

async function searchPage() {
  const params = new URLSearchParams(location.search);
  const topic = (params.get('topic') || '').trim();
  const cursor = params.get('cursor');
  document.getElementById('topic').value = topic;
  loadTopics();
  const q = new URLSearchParams({ limit: '24' });
  if (topic) q.set('topic', topic);
  if (cursor) q.set('cursor', cursor);
  role('results-title').textContent = topic ? `Books on “${topic}”` : 'All books';
  const r = await api('GET', '/books?' + q);
  const list = role('results');
  list.replaceChildren();
  if (!r.ok) { message(explain(r)); return; }
  showSource(r, 'Results');
  const books = r.data.books || [];
  if (books.length === 0) list.append(el('li', {}, topic ? `No books on “${topic}”.` : 'The catalog is empty.'));
  for (const b of books) list.append(bookCard(b));
  const next = role('next');
  if (r.data.next_cursor) {
    const n = new URLSearchParams(q);
    n.set('cursor', r.data.next_cursor);
    n.delete('limit');
    next.href = '/?' + n;
    next.hidden = false;
  }
}

async function loadTopics() {
  const r = await api('GET', '/books?limit=1000');
  const ul = role('topics');
  ul.replaceChildren();
  if (!r.ok) { ul.append(el('li', {}, 'Topics unavailable.')); return; }
  const topics = [...new Set((r.data.books || []).map((b) => b.topic))].sort();
  for (const t of topics) ul.append(el('li', {}, el('a', { href: '/?topic=' + encodeURIComponent(t) }, t)));
}

// ---------------------------------------------------------------- book

function newKey() {
  if (crypto.randomUUID) return 'web-' + crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return 'web-' + [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

const BUYER = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

async function bookPage() {
  const article = document.querySelector('article.book');
  const id = article.dataset.book;
  let title = `Book ${id}`;

  async function load(minIndex) {
    const q = minIndex ? `?min_index=${encodeURIComponent(minIndex)}` : '';
    const r = await api('GET', `/books/${id}${q}`);
    if (!r.ok) {
      if (r.status === 404) {
        role('title').textContent = `No book ${id}`;
        role('buy-form').hidden = true;
      }
      message(explain(r));
      return;
    }
    message('');
    const b = r.data;
    title = b.title;
    document.title = `${b.title} · Bazar`;
    role('title').textContent = b.title;
    role('price').textContent = money(b.price_cents);
    const stock = role('stock');
    stock.textContent = b.stock === 0 ? 'out of stock' : String(b.stock);
    stock.dataset.stock = b.stock;
    const topic = role('topic');
    topic.replaceChildren(el('a', { href: '/?topic=' + encodeURIComponent(b.topic) }, b.topic));
    role('isbn').textContent = b.isbn;
    showSource(r, 'This book');
  }

  // One purchase = one Idempotency-Key, re-sent by every click and every
  // retry until the shopper starts a new purchase: however often the button
  // is pressed, the store buys once.
  let purchase;
  const form = role('buy-form');
  const outcome = role('outcome');
  const again = role('again');
  const buyer = document.getElementById('buyer');
  buyer.value = localStorage.getItem('bazar-buyer') || '';

  function startPurchase() {
    purchase = { key: newKey(), clicks: 0, answers: [], orders: new Set(), settled: null, retries: 0, timer: null };
    role('key').textContent = purchase.key;
    outcome.replaceChildren();
    delete outcome.dataset.clicks;
    delete outcome.dataset.orders;
    delete outcome.dataset.orderId;
    again.hidden = true;
    role('buy').textContent = 'Buy';
  }
  startPurchase();
  for (const input of form.querySelectorAll('input')) {
    // A different quantity or buyer is a different purchase.
    input.addEventListener('change', () => { if (purchase.clicks > 0) startPurchase(); });
  }
  again.addEventListener('click', startPurchase);
  form.addEventListener('submit', (e) => { e.preventDefault(); buy(); });

  function render(lines, cls) {
    outcome.replaceChildren(...lines.map((l, i) => el('p', { class: i === 0 ? cls : null }, l)));
    outcome.dataset.clicks = purchase.clicks;
    outcome.dataset.answers = purchase.answers.length;
    outcome.dataset.orders = purchase.orders.size;
  }

  async function buy() {
    const quantity = parseInt(document.getElementById('quantity').value, 10);
    const name = buyer.value.trim();
    if (!(quantity >= 1)) { render(['Quantity must be at least 1.'], 'bad'); return; }
    if (name && !BUYER.test(name)) {
      render(['A name is 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit.'], 'bad');
      return;
    }
    if (name) localStorage.setItem('bazar-buyer', name);
    const p = purchase;
    if (p.settled === 'rejected') startPurchase();
    const current = purchase;
    clearTimeout(current.timer);
    current.clicks += 1;
    const click = current.clicks;
    if (!current.settled) render([`Sending… (attempt ${click}, purchase key ${current.key})`], 'warn');
    const body = { quantity };
    if (name) body.buyer = name;
    const r = await api('POST', `/books/${id}/buy`, {
      headers: { 'Idempotency-Key': current.key }, body, timeoutMs: 8000,
    });
    if (current !== purchase) return; // a new purchase began meanwhile
    current.answers.push({ click, status: r.status });
    if (r.status === 201) {
      const o = r.data;
      current.orders.add(o.order_id);
      current.settled = 'confirmed';
      outcome.dataset.orderId = o.order_id;
      const clicks = current.answers.filter((a) => a.status === 201).length;
      const lines = [
        `Order #${o.order_id} ${o.status}: ${o.quantity} × ${title}, ${money(o.total_cents)}.`,
        clicks > 1
          ? `You pressed Buy ${clicks} times with the same purchase key: the store made ${current.orders.size === 1 ? 'one order, once' : current.orders.size + ' orders'}.`
          : 'Pressing Buy again re-sends the same purchase key: it will not buy twice.',
        `Placed ${o.created_at}${o.buyer ? ' by ' + o.buyer : ''}; committed at orders index ${r.h('x-bazar-index')}, stock reserved at catalog index ${r.h('x-bazar-catalog-index')}.`,
      ];
      render(lines, 'ok');
      if (o.buyer) {
        outcome.append(el('p', {}, el('a', { href: '/history?buyer=' + encodeURIComponent(o.buyer) }, 'See your orders')));
      }
      role('buy').textContent = 'Buy (same purchase)';
      again.hidden = false;
      // Read our own write: the catalog index at which the stock was reserved.
      load(r.h('x-bazar-catalog-index'));
      return;
    }
    if (current.settled === 'confirmed') return; // a late failure of an extra click changes nothing
    if (r.status === 409 && r.data && r.data.code === 'out_of_stock') {
      current.settled = 'rejected';
      render([explain(r), 'Pressing Buy again starts a new purchase.'], 'bad');
      load();
      return;
    }
    if (r.status === 503 || r.status === 0) {
      // Unknown outcome: retry the same key, which cannot buy twice.
      const after = Math.max(1, parseInt(r.h('retry-after') || '1', 10));
      const auto = current.retries < 5;
      render([
        r.status === 0 ? `No answer: the buy may or may not have happened (${r.data.detail}).` : explain(r),
        'Your purchase key is kept: pressing Buy again, or the automatic retry, cannot buy twice.',
        auto ? `Retrying in ${after} s…` : 'Press Buy to retry.',
      ], 'warn');
      if (auto) {
        current.retries += 1;
        current.timer = setTimeout(() => { if (current === purchase && !current.settled) buy(); }, after * 1000);
      }
      return;
    }
    current.settled = 'rejected';
    render([explain(r)], 'bad');
  }

  await load();
  // Live stock: re-read while the page is visible (a cache hit costs the
  // store next to nothing; the cache is invalidated by the change stream).
  setInterval(() => { if (document.visibilityState === 'visible') load(); }, 2000);
}

// ---------------------------------------------------------------- history

async function historyPage() {
  const params = new URLSearchParams(location.search);
  const name = (params.get('buyer') || localStorage.getItem('bazar-buyer') || '').trim();
  const input = document.getElementById('buyer');
  input.value = name;
  if (!name) { role('caption').textContent = 'Enter a buyer name to see their orders.'; return; }
  const q = new URLSearchParams({ buyer: name, limit: '50' });
  if (params.get('cursor')) q.set('cursor', params.get('cursor'));
  const r = await api('GET', '/orders?' + q);
  if (!r.ok) { message(explain(r)); return; }
  showSource(r, 'Orders');
  const orders = r.data.orders || [];
  role('caption').textContent = `Orders of ${name} (${orders.length}${r.data.next_cursor ? '+' : ''})`;
  const body = role('orders');
  body.replaceChildren();
  for (const o of orders) {
    body.append(el('tr', { 'data-order': o.order_id },
      el('td', {}, `#${o.order_id}`),
      el('td', {}, el('a', { href: `/book/${o.book_id}` }, `Book ${o.book_id}`)),
      el('td', {}, o.quantity),
      el('td', {}, money(o.total_cents)),
      el('td', {}, o.status + (o.reason ? ` (${o.reason})` : '')),
      el('td', {}, o.created_at)));
  }
  if (orders.length === 0) body.append(el('tr', {}, el('td', { colspan: 6 }, 'No orders yet.')));
  if (r.data.next_cursor) {
    const n = new URLSearchParams({ buyer: name, cursor: r.data.next_cursor });
    const next = role('next');
    next.href = '/history?' + n;
    next.hidden = false;
  }
}

// ---------------------------------------------------------------- staff

// The API's own ISBN-13 rule, checked before sending (the node checks again).
function isbnProblem(raw) {
  if (/[^0-9 -]/.test(raw)) return 'an ISBN has only digits, hyphens and spaces';
  const d = raw.replace(/[ -]/g, '');
  if (d.length !== 13) return `an ISBN-13 has 13 digits, not ${d.length}`;
  if (!d.startsWith('978') && !d.startsWith('979')) return 'an ISBN-13 starts with 978 or 979';
  let sum = 0;
  for (let i = 0; i < 12; i++) sum += Number(d[i]) * (i % 2 === 0 ? 1 : 3);
  const check = (10 - (sum % 10)) % 10;
  if (check !== Number(d[12])) return `bad check digit: expected ${check}, found ${d[12]}`;
  return null;
}

function staffPage() {
  const tokenInput = document.getElementById('token');
  const saved = sessionStorage.getItem('bazar-admin-token') || '';
  tokenInput.value = saved;
  role('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem('bazar-admin-token', tokenInput.value.trim());
    message('Token kept for this tab.', true);
  });
  const outcome = role('outcome');
  const auth = () => ({ Authorization: 'Bearer ' + (sessionStorage.getItem('bazar-admin-token') || tokenInput.value.trim()) });
  function show(r, what) {
    if (!r.ok) { message(explain(r)); outcome.replaceChildren(); return; }
    message('');
    const b = r.data;
    outcome.replaceChildren(
      el('p', { class: 'ok' }, `${what}: book ${b.id}, “${b.title}”, ${money(b.price_cents)}, ${b.stock} in stock.`),
      el('p', { class: 'source' }, `Committed at catalog index ${r.h('x-bazar-index')}.`),
      el('p', {}, el('a', { href: `/book/${b.id}` }, 'Open its page')));
  }
  const value = (form, name) => form.elements[name].value.trim();
  role('add-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = e.target;
    const bad = isbnProblem(value(f, 'isbn'));
    if (bad) { message('ISBN: ' + bad); return; }
    const body = {
      isbn: value(f, 'isbn'), title: value(f, 'title'), topic: value(f, 'topic'),
      price_cents: Number(value(f, 'price_cents')), stock: Number(value(f, 'stock') || 0),
    };
    show(await api('POST', '/books', { headers: auth(), body }), 'Added');
  });
  role('restock-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = e.target;
    const body = { quantity: Number(value(f, 'quantity')) };
    show(await api('POST', `/books/${encodeURIComponent(value(f, 'id'))}/restock`, { headers: auth(), body }), 'Restocked');
  });
  role('price-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = e.target;
    const body = { price_cents: Number(value(f, 'price_cents')) };
    show(await api('PATCH', `/books/${encodeURIComponent(value(f, 'id'))}`, { headers: auth(), body }), 'Price set');
  });
}

const pages = { search: searchPage, book: bookPage, history: historyPage, staff: staffPage };
const page = pages[document.querySelector('main').dataset.page];
if (page) page();

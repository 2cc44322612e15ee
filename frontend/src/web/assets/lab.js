// Bazar's Raft lab: renders the pictures pushed by /lab/events (server-sent
// events), and sends the fault buttons to /lab/control/... with the lab
// token. The DOM is updated in place, so a button under the pointer is never
// replaced while it is being pressed.
'use strict';

const role = (name, root = document) => root.querySelector(`[data-role="${name}"]`);

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

const controls = document.querySelector('main').dataset.page === 'lab-control';
const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false }) + '.' + String(ms % 1000).padStart(3, '0');
const fmt = (v) => (v === null || v === undefined ? '–' : String(v));

// The lab token: from the link bazar-lab prints (#token=...), kept for this
// tab only, and taken off the address bar.
let token = sessionStorage.getItem('bazar-lab-token') || '';
if (location.hash.startsWith('#token=')) {
  token = decodeURIComponent(location.hash.slice('#token='.length));
  sessionStorage.setItem('bazar-lab-token', token);
  history.replaceState(null, '', location.pathname);
}

// What the buttons did, for the page and for tests: each entry has the
// click's and the answer's time (Date.now()).
window.labActions = [];

function message(text, info = false) {
  const m = role('message');
  m.textContent = text || '';
  m.classList.toggle('info', info);
}

async function control(path, body, label) {
  const entry = { path, label, clicked_at: Date.now(), answered_at: null, status: null };
  window.labActions.push(entry);
  if (!token) { message('Enter the lab token first (bazar-lab prints it).'); entry.status = 401; return null; }
  message(`${label}…`, true);
  let r;
  try {
    r = await fetch('/lab/control/' + path, {
      method: 'POST',
      headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
      body: body === undefined ? '' : JSON.stringify(body),
    });
  } catch (e) {
    entry.answered_at = Date.now();
    entry.status = 0;
    message(`${label}: the frontend cannot be reached (${e.message})`);
    return null;
  }
  entry.answered_at = Date.now();
  entry.status = r.status;
  let data = null;
  try { data = await r.json(); } catch (_) { /* empty */ }
  if (r.ok) {
    message(`${label}: ${(data && data.detail) || 'done'} (${entry.answered_at - entry.clicked_at} ms)`, true);
  } else {
    if (r.status === 401) { sessionStorage.removeItem('bazar-lab-token'); token = ''; updateLock(); }
    message(`${label}: ${(data && data.detail) || r.status}`);
  }
  return data;
}

function button(label, action, node, cls) {
  const b = el('button', { type: 'button', class: cls || 'secondary', 'data-action': action, 'data-node': node }, label);
  b.addEventListener('click', () => control(`nodes/${node}/${action}`, undefined, `${label} node ${node}`));
  return b;
}

function updateLock() {
  for (const b of document.querySelectorAll('button[data-action]')) b.disabled = !controls || !token;
  const t = role('try');
  if (t) t.disabled = !controls || !token;
}

if (controls) {
  const input = document.getElementById('lab-token');
  input.value = token;
  role('lab-token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    token = input.value.trim();
    sessionStorage.setItem('bazar-lab-token', token);
    updateLock();
    message('Fault buttons unlocked for this tab.', true);
  });
  role('try-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const seconds = parseInt(document.getElementById('try-seconds').value, 10);
    control('try', { seconds }, `Run a ${seconds} s workload`);
  });
}

// ------------------------------------------------------------ groups

const groupViews = {};

function groupView(group) {
  if (groupViews[group]) return groupViews[group];
  const section = el('section', { class: 'group', 'data-group': group, 'aria-label': `${group} group` });
  const heading = el('h2', {}, `${group} group`);
  const leader = el('p', { class: 'leader', 'aria-live': 'polite' });
  const head = el('tr', {}, ...['Node', 'Role', 'Term', 'Last', 'Committed', 'Applied', 'Lag']
    .map((h) => el('th', { scope: 'col' }, h)), controls ? el('th', { scope: 'col' }, 'Faults') : '');
  const body = el('tbody');
  const table = el('table', {}, el('caption', {}, `Members of the ${group} group`), el('thead', {}, head), body);
  const elections = el('ol', { class: 'elections' });
  section.append(heading, leader, table);
  if (controls) {
    const transfer = el('button', { type: 'button', class: 'secondary', 'data-action': 'transfer', 'data-group': group },
      'Transfer leadership');
    transfer.addEventListener('click', () => control(`groups/${group}/transfer-leader`, undefined, `Transfer ${group} leadership`));
    section.append(transfer);
  }
  section.append(el('h3', {}, 'Recent elections'), elections);
  role('groups').append(section);
  groupViews[group] = { section, leader, body, elections, rows: {} };
  updateLock();
  return groupViews[group];
}

function memberRow(view, node) {
  if (view.rows[node]) return view.rows[node];
  const cells = {};
  const tr = el('tr', { 'data-node': node });
  for (const k of ['node', 'state', 'term', 'last', 'committed', 'applied', 'lag']) {
    cells[k] = el(k === 'node' ? 'th' : 'td', k === 'node' ? { scope: 'row' } : {});
    tr.append(cells[k]);
  }
  if (controls) {
    tr.append(el('td', { class: 'nodes' }, button('Kill', 'kill', node, 'danger'), button('Pause', 'pause', node),
      button('Resume', 'resume', node)));
  }
  view.body.append(tr);
  view.rows[node] = { tr, cells };
  updateLock();
  return view.rows[node];
}

function renderGroup(g) {
  const view = groupView(g.group);
  const leader = g.leader === null ? '' : String(g.leader);
  if (view.section.dataset.leader !== leader || view.section.dataset.term !== String(g.term)) {
    // When this page first showed the current leader: what a student (and
    // the browser test) measures a failover by.
    view.section.dataset.leader = leader;
    view.section.dataset.term = String(g.term);
    view.section.dataset.shownAt = String(Date.now());
  }
  view.leader.textContent = g.leader === null
    ? `No leader (term ${g.term}) since ${clock(g.since_ms)}: an election is under way or no quorum answers.`
    : `Leader: node ${g.leader}, term ${g.term}, since ${clock(g.since_ms)}.`;
  for (const m of g.members) {
    const row = memberRow(view, m.node_id);
    const state = m.reachable ? m.state : 'unreachable';
    row.tr.className = m.reachable ? (m.state === 'Leader' ? 'role-leader' : '') : 'down';
    row.tr.dataset.state = state;
    row.cells.node.textContent = `node ${m.node_id}${m.voter ? '' : ' (learner)'}`;
    row.cells.state.textContent = state;
    row.cells.term.textContent = fmt(m.term);
    row.cells.last.textContent = fmt(m.last_log_index);
    row.cells.committed.textContent = fmt(m.committed_index);
    row.cells.applied.textContent = fmt(m.applied_index);
    row.cells.lag.textContent = m.state === 'Leader' ? '–' : fmt(m.lag);
  }
  view.elections.replaceChildren(...(g.elections.length ? g.elections.map((e) => el('li', {},
    `${clock(e.at_ms)}: node ${e.leader} leads term ${e.term}${e.previous ? ` (after node ${e.previous})` : ''}`))
    : [el('li', {}, 'none seen since this page opened')]));
}

// ------------------------------------------------------------ rates, changes

function chart(series) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 600 100');
  svg.setAttribute('preserveAspectRatio', 'none');
  const max = Math.max(1, ...series.map((p) => Math.max(p.buys_per_s, p.reads_per_s)));
  const line = (key, color) => {
    const pts = series.map((p, i) => `${(i / Math.max(1, series.length - 1)) * 600},${100 - (p[key] / max) * 95}`);
    const pl = document.createElementNS(ns, 'polyline');
    pl.setAttribute('points', pts.join(' '));
    pl.setAttribute('fill', 'none');
    pl.setAttribute('stroke', color);
    pl.setAttribute('stroke-width', '2');
    pl.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(pl);
  };
  if (series.length < 2) {
    const t = document.createElementNS(ns, 'text');
    t.setAttribute('x', '10');
    t.setAttribute('y', '55');
    t.setAttribute('fill', '#56606b');
    t.textContent = 'collecting one point a second…';
    svg.append(t);
    return svg;
  }
  line('reads_per_s', '#0b5cad');
  line('buys_per_s', '#b42318');
  return svg;
}

function renderRates(r) {
  role('buys').textContent = r.buys_per_s.toFixed(1);
  role('reads').textContent = r.reads_per_s.toFixed(1);
  role('hits').textContent = r.hit_ratio === null ? '–' : (r.hit_ratio * 100).toFixed(1) + ' %';
  role('chart').replaceChildren(chart(r.series));
}

function renderChanges(changes) {
  role('changes').replaceChildren(...changes.map((c) =>
    el('li', { value: c.index }, `${clock(c.at_ms)} ${c.group} #${c.index}: ${c.keys.join(', ') || '(no keys)'} · via node ${c.node}`)));
}

// ------------------------------------------------------------ supervisor

let nodesPanel = null;
const nodeRows = {};

function renderSupervisor(s) {
  if (!controls || !s) return;
  if (!nodesPanel) {
    nodesPanel = el('section', { class: 'group processes', 'aria-labelledby': 'nodes-h', 'data-role': 'nodes' },
      el('h2', { id: 'nodes-h' }, 'Processes'),
      el('p', { class: 'hint', 'data-role': 'partitions' }),
      el('table', {}, el('caption', {}, 'The lab cluster\'s raft-node processes'),
        el('thead', {}, el('tr', {}, ...['Node', 'Process', 'Links', 'Faults'].map((h) => el('th', { scope: 'col' }, h)))),
        el('tbody', { 'data-role': 'node-rows' })));
    const heal = el('button', { type: 'button', class: 'secondary', 'data-action': 'heal' }, 'Heal every partition');
    heal.addEventListener('click', () => control('heal', undefined, 'Heal'));
    nodesPanel.append(heal);
    role('groups').append(nodesPanel);
    updateLock();
  }
  if (s.error) { role('partitions', nodesPanel).textContent = s.error; return; }
  role('partitions', nodesPanel).textContent = s.partitions.available
    ? 'Partitions cut a node off its peers with iptables; clients still reach it.'
    : `Partitions unavailable: ${s.partitions.why}`;
  for (const n of s.nodes) {
    let row = nodeRows[n.id];
    if (!row) {
      const proc = el('td');
      const links = el('td');
      const buttons = el('td', { class: 'nodes' }, button('Kill', 'kill', n.id, 'danger'), button('Pause', 'pause', n.id),
        button('Resume', 'resume', n.id), button('Restart', 'restart', n.id));
      const isolate = [button('Isolate', 'isolate', n.id), button('Rejoin', 'rejoin', n.id)];
      buttons.append(...isolate);
      const tr = el('tr', { 'data-node': n.id }, el('th', { scope: 'row' }, `node ${n.id}`), proc, links, buttons);
      role('node-rows', nodesPanel).append(tr);
      row = nodeRows[n.id] = { tr, proc, links, isolate };
      updateLock();
    }
    row.tr.dataset.process = n.process;
    row.proc.textContent = n.pid ? `${n.process} (pid ${n.pid})` : n.process;
    row.links.textContent = n.isolated ? 'isolated' : 'connected';
    for (const b of row.isolate) b.hidden = !s.partitions.available;
  }
  renderTry(s.try);
}

function renderTry(t) {
  const box = role('try-status');
  if (!t) { box.replaceChildren(el('p', {}, 'No run yet.')); return; }
  box.dataset.state = t.state;
  const lines = [el('p', {}, `Run ${t.run}: ${t.state}${t.seconds ? ` (${t.seconds} s of load` + (t.books ? ` on books ${t.books.join(', ')})` : ')') : ''}.`)];
  if (t.verdict) {
    const v = t.verdict;
    box.dataset.passed = String(v.passed);
    lines.push(el('p', { class: v.passed ? 'verdict-pass' : 'verdict-fail' },
      v.passed ? 'The checker found no violation.' : `The checker found ${v.violations.length} violation(s).`));
    for (const x of v.violations.slice(0, 10)) lines.push(el('p', { class: 'bad' }, x));
    lines.push(el('pre', {}, v.summary));
  }
  if (t.error) lines.push(el('p', { class: 'bad' }, t.error));
  box.replaceChildren(...lines);
}

// ------------------------------------------------------------ the feed

function render(p) {
  for (const g of p.groups) renderGroup(g);
  renderRates(p.rates);
  renderChanges(p.changes);
  renderSupervisor(p.supervisor);
  const live = role('live');
  live.textContent = `Live: picture of ${clock(p.at_ms)}, one every ${p.tick_ms} ms.`;
  live.dataset.at = String(p.at_ms);
}

const feed = new EventSource('/lab/events');
feed.addEventListener('state', (e) => {
  try { render(JSON.parse(e.data)); } catch (err) { message('Cannot show the picture: ' + err.message); }
});
feed.addEventListener('error', () => { role('live').textContent = 'Disconnected from the frontend; reconnecting…'; });
updateLock();

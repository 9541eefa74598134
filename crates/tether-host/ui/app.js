// Tether management page. Plain DOM, no build step. Every value from the
// server is inserted with textContent, never as HTML.
'use strict';

const $ = (sel) => document.querySelector(sel);
let csrf = null;
let types = [];
let clients = [];
let source = null;
let eventsKey = null;
let editing = null;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function api(method, path, body, extraHeaders) {
  const headers = { ...(extraHeaders || {}) };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
  const res = await fetch(path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401 && path !== '/ui/login') { showLogin('Your session ended; log in again.'); throw new Error('unauthorized'); }
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error((data && data.detail) || res.statusText);
  return data;
}

function showLogin(message) {
  csrf = null;
  if (source) { source.close(); source = null; }
  $('#nav').hidden = true;
  for (const v of ['clients', 'connections', 'webhooks', 'audit']) $(`#${v}-view`).hidden = true;
  $('#login-view').hidden = false;
  $('#login-error').textContent = message || '';
  $('#token').focus();
}

async function loggedIn() {
  $('#login-view').hidden = true;
  $('#nav').hidden = false;
  types = await api('GET', '/api/types');
  show('clients');
  listen();
}

function show(view) {
  for (const v of ['clients', 'connections', 'webhooks', 'audit', 'cluster']) {
    $(`#${v}-view`).hidden = v !== view;
    const tab = document.querySelector(`.tab[data-view="${v}"]`);
    if (v === view) tab.setAttribute('aria-current', 'page'); else tab.removeAttribute('aria-current');
  }
  if (view === 'clients') refresh('clients');
  if (view === 'connections') refresh('connections');
  if (view === 'webhooks') refresh('webhooks');
  if (view === 'audit') refresh('audit');
  if (view === 'cluster') refresh('cluster');
}

// Every view reloads through here: a failed reload (the host restarting, a
// lost session) is shown, never thrown.
const refreshers = {
  clients: () => refreshClients(), connections: () => refreshConnections(),
  webhooks: () => refreshWebhooks(), audit: () => refreshAudit(), cluster: () => refreshCluster(),
};
function refresh(view) {
  return refreshers[view]().catch((e) => { $('#live').textContent = `cannot refresh: ${e.message}`; });
}

function stateBadge(state) {
  return el('span', { class: `state ${state}`, text: state });
}

function cell(label, content, cls) {
  const td = el('td', { 'data-label': label });
  if (cls) td.className = cls;
  if (content instanceof Node) td.append(content); else td.textContent = content ?? '';
  return td;
}

async function refreshClients() {
  clients = await api('GET', '/api/clients');
  const body = $('#clients tbody');
  body.replaceChildren();
  for (const c of clients) {
    const live = ['open', 'connecting', 'reconnecting', 'closing'].includes(c.state);
    const btns = el('div', { class: 'btns' },
      el('button', { type: 'button', text: live ? 'Disconnect' : 'Connect', 'aria-label': `${live ? 'Disconnect' : 'Connect'} ${c.key}`,
        onclick: () => act(`/api/clients/${encodeURIComponent(c.key)}/${live ? 'disconnect' : 'connect'}`) }),
      el('button', { type: 'button', class: 'secondary', text: 'Events', 'aria-label': `Events of ${c.key}`, onclick: () => openEvents(c.key) }),
      el('button', { type: 'button', class: 'secondary', text: 'Edit', 'aria-label': `Edit ${c.key}`, onclick: () => openForm(c) }));
    if (!c.predefined) {
      btns.append(el('button', { type: 'button', class: 'danger', text: 'Delete', 'aria-label': `Delete ${c.key}`, onclick: () => remove(c.key) }));
    }
    body.append(el('tr', { 'data-key': c.key },
      cell('Key', `${c.key}${c.predefined ? ' (predefined)' : ''}`),
      cell('Type', c.type),
      cell('State', stateBadge(c.state)),
      cell('URL', c.url, 'url'),
      cell('Auto', c.auto_connect ? 'yes' : 'no'),
      cell('Last error', c.last_error || ''),
      cell('Protocol', protocolText(c.protocol)),
      cell('RTT', c.rtt_ms == null ? '' : `${c.rtt_ms.toFixed(1)} ms`),
      cell('Msgs in / out', `${c.messages_in} / ${c.messages_out}`),
      cell('Outbox', outboxCell(c)),
      cell('Reconnects', String(c.reconnects)),
      cell('Connected since', c.connected_since ? new Date(c.connected_since).toLocaleString() : ''),
      cell('Actions', btns)));
  }
  $('#clients-empty').hidden = clients.length > 0;
}

// What a broker module reports (conn:report): protocol, subscriptions,
// heart-beats, when the broker was last heard.
function protocolText(p) {
  if (!p || typeof p !== 'object') return '';
  const parts = [];
  if (p.protocol) parts.push(String(p.protocol));
  if (Array.isArray(p.subscriptions)) parts.push(`subscribed: ${p.subscriptions.join(', ')}`);
  if (p.heartbeat) parts.push(`heart-beat ${p.heartbeat.send_ms}/${p.heartbeat.receive_ms} ms`);
  if (p.keepalive_secs) parts.push(`keepalive ${p.keepalive_secs} s`);
  if (p.last_heard) parts.push(`heard ${new Date(p.last_heard).toLocaleTimeString()}`);
  return parts.join(' · ');
}

function outboxCell(c) {
  const o = c.outbox || {};
  const queued = (o.pending || 0) + (o.in_flight || 0);
  const box = el('div', {}, el('span', { text: `${queued} queued` }));
  if (o.dead || o.expired) {
    box.append(el('span', { class: 'bad', text: ` · ${o.dead || 0} dead, ${o.expired || 0} expired ` }),
      el('button', { type: 'button', class: 'secondary', text: 'Retry', 'aria-label': `Retry dead messages of ${c.key}`,
        onclick: () => act(`/api/clients/${encodeURIComponent(c.key)}/outbox/retry`) }));
  }
  return box;
}

async function refreshWebhooks() {
  const list = await api('GET', '/api/webhooks');
  const body = $('#webhooks tbody');
  body.replaceChildren();
  for (const w of list) {
    const st = w.status;
    const dead = await api('GET', `/api/webhooks/${encodeURIComponent(st.name)}/dead`);
    const deadCell = el('div', {});
    for (const d of dead) {
      deadCell.append(el('div', {}, el('span', { text: `#${d.from_seq}–${d.to_seq} (${d.events} events, ${d.attempts} attempts): ${d.last_error} ` }),
        el('button', { type: 'button', class: 'secondary', text: 'Replay', 'aria-label': `Replay ${st.name} from ${d.from_seq}`,
          onclick: async () => { await api('POST', `/api/webhooks/${encodeURIComponent(st.name)}/replay`, { after: d.from_seq - 1 }); refresh('webhooks'); } })));
    }
    body.append(el('tr', { 'data-webhook': st.name }, cell('Name', st.name), cell('URL', st.url, 'url'), cell('Delivered up to', String(st.cursor)),
      cell('Lag', String(w.lag)), cell('Last error', st.last_error || ''), cell('Dead batches', deadCell)));
  }
  $('#webhooks-empty').hidden = list.length > 0;
}

async function refreshConnections() {
  const list = await api('GET', '/api/connections');
  const body = $('#connections tbody');
  body.replaceChildren();
  for (const c of list) {
    body.append(el('tr', {},
      cell('Key', c.key), cell('Type', c.type || ''), cell('State', stateBadge(c.state)), cell('URL', c.url, 'url'),
      cell('Msgs in / out', `${c.messages_in} / ${c.messages_out}`),
      cell('Actions', el('button', { type: 'button', class: 'danger', text: 'Close', 'aria-label': `Close ${c.key}`,
        onclick: () => act(`/api/connections/${encodeURIComponent(c.key)}`, 'DELETE').then(refreshConnections) }))));
  }
  $('#connections-empty').hidden = list.length > 0;
}

async function refreshAudit() {
  const list = await api('GET', '/api/audit');
  const body = $('#audit tbody');
  body.replaceChildren();
  for (const e of list) {
    body.append(el('tr', {}, cell('When', new Date(e.at).toLocaleString()), cell('Who', e.actor), cell('Action', e.action),
      cell('Key', e.key), cell('Detail', JSON.stringify(e.detail))));
  }
}

// The nodes sharing a PostgreSQL store; a SQLite host says it has none.
async function refreshCluster() {
  const body = $('#cluster tbody');
  const view = await api('GET', '/api/cluster');
  if (!view.clustered) {
    body.replaceChildren();
    $('#cluster').hidden = true;
    $('#cluster-none').hidden = false;
    $('#cluster-none').textContent = 'This host is not in a cluster: its store is SQLite. Hosts sharing a postgres:// store form one.';
    return;
  }
  $('#cluster').hidden = false;
  $('#cluster-none').hidden = true;
  body.replaceChildren();
  for (const n of view.nodes) {
    const name = n.node_id.slice(0, 8) + (n.this_node ? ' (this node)' : '');
    const beat = `${n.heartbeat_age_secs.toFixed(1)} s ago${n.live ? '' : ' (dead)'}`;
    body.append(el('tr', { 'data-node': n.node_id }, cell('Node', name), cell('Address', n.addr, 'url'),
      cell('Heartbeat', beat), cell('Clients', `${n.clients.length}: ${n.clients.slice(0, 20).join(', ')}${n.clients.length > 20 ? ' …' : ''}`),
      cell('Webhooks', n.webhooks.join(', '))));
  }
}

async function act(path, method = 'POST') {
  try { await api(method, path); } catch (e) { $('#live').textContent = e.message; }
  refresh('clients');
}

async function remove(key) {
  if (!window.confirm(`Delete client "${key}"? Its connection is closed and the record is removed.`)) return;
  await act(`/api/clients/${encodeURIComponent(key)}`, 'DELETE');
}

function headerRow(name = '', value = '') {
  const n = el('input', { 'aria-label': 'Header name', value: name, placeholder: 'Name' });
  const v = el('input', { 'aria-label': 'Header value', value, placeholder: 'Value' });
  const row = el('tr', {}, el('td', {}, n), el('td', {}, v),
    el('td', {}, el('button', { type: 'button', class: 'secondary', text: 'Remove', 'aria-label': 'Remove header', onclick: () => row.remove() })));
  $('#f-headers tbody').append(row);
}

function openForm(client) {
  editing = client || null;
  $('#client-dialog-title').textContent = client ? `Edit ${client.key}` : 'Add client';
  const select = $('#f-type');
  select.replaceChildren(...types.filter((t) => client || !t.predefined).map((t) => el('option', { value: t.name, text: t.name })));
  select.disabled = !!client;
  $('#f-key').disabled = !!client;
  $('#f-key').value = client ? client.key : '';
  const type = client ? types.find((t) => t.name === client.type) : types[0];
  if (client) select.value = client.type;
  $('#f-url').value = client ? client.url : (type && type.defaults.url) || '';
  $('#f-user').value = client ? client.user || '' : '';
  $('#f-password').value = '';
  $('#f-password-state').textContent = client ? (client.password_set ? 'set (leave empty to keep)' : 'not set') : 'not set';
  $('#f-timeout').value = client ? client.timeout : (type ? type.defaults.timeout : 30);
  $('#f-auto').checked = client ? client.auto_connect : !!(type && type.defaults.auto_connect);
  $('#f-proxy').checked = client ? client.use_env_proxy : false;
  $('#f-headers tbody').replaceChildren();
  for (const [k, v] of Object.entries(client ? client.headers : (type ? type.defaults.headers : {}))) headerRow(k, v);
  $('#client-error').textContent = '';
  $('#client-dialog').showModal();
  (client ? $('#f-url') : select).focus();
}

async function saveForm(event) {
  event.preventDefault();
  const url = $('#f-url').value.trim();
  if (!/^wss?:\/\//i.test(url)) { $('#client-error').textContent = 'The URL must start with ws:// or wss://'; $('#f-url').focus(); return; }
  const headers = {};
  for (const row of $('#f-headers tbody').children) {
    const [n, v] = row.querySelectorAll('input');
    if (n.value.trim()) headers[n.value.trim()] = v.value;
  }
  const body = { url, user: $('#f-user').value, headers, timeout: Number($('#f-timeout').value) || undefined,
    auto_connect: $('#f-auto').checked, use_env_proxy: $('#f-proxy').checked };
  if ($('#f-password').value) body.password = $('#f-password').value;
  try {
    if (editing) {
      // Only the version this form was filled from: a change someone made
      // meanwhile is reported, not overwritten.
      await api('PATCH', `/api/clients/${encodeURIComponent(editing.key)}`, body, { 'If-Match': `"${editing.version}"` });
    } else {
      body.type = $('#f-type').value;
      if ($('#f-key').value.trim()) body.key = $('#f-key').value.trim();
      await api('POST', '/api/clients', body);
    }
    $('#client-dialog').close();
    refresh('clients');
  } catch (e) {
    $('#client-error').textContent = e.message;
  }
}

function eventLine(e) {
  const { client, dynamic, at, event: name, ...rest } = e;
  return el('li', {}, el('span', { class: 'muted', text: new Date(at).toLocaleTimeString() + ' ' }),
    el('span', { class: 'name', text: name }), JSON.stringify(rest));
}

async function openEvents(key) {
  eventsKey = key;
  $('#events-title').textContent = `Events of ${key}`;
  $('#send-error').textContent = '';
  const list = $('#events');
  list.replaceChildren(...(await api('GET', `/api/clients/${encodeURIComponent(key)}/history`)).map(eventLine));
  $('#events-dialog').showModal();
  list.scrollTop = list.scrollHeight;
  $('#send-text').focus();
}

async function sendTest(event) {
  event.preventDefault();
  try {
    await api('POST', `/api/clients/${encodeURIComponent(eventsKey)}/send`, { text: $('#send-text').value });
    $('#send-text').value = '';
    $('#send-error').textContent = '';
  } catch (e) {
    $('#send-error').textContent = e.message;
  }
}

let refreshTimer = null;
// Outbox depths and webhook lag change without events: refresh now and then.
setInterval(() => {
  if (!csrf) return;
  if (!$('#clients-view').hidden && !$('#client-dialog').open) refresh('clients');
  if (!$('#webhooks-view').hidden) refresh('webhooks');
}, 3000);
function listen() {
  if (source) source.close();
  source = new EventSource('/api/events');
  // On every (re)connect, reload what the stream may have missed meanwhile.
  source.onopen = () => {
    $('#live').textContent = 'live';
    if (!$('#clients-view').hidden) refresh('clients');
    if (!$('#connections-view').hidden) refresh('connections');
  };
  source.onerror = () => { $('#live').textContent = 'reconnecting to the event stream…'; };
  const onEvent = (msg) => {
    if (typeof msg.data !== 'string' || msg.data === '') return;
    let e;
    try { e = JSON.parse(msg.data); } catch { return; }
    if (eventsKey === e.client && $('#events-dialog').open) {
      const list = $('#events');
      list.append(eventLine(e));
      while (list.children.length > 200) list.firstChild.remove();
      list.scrollTop = list.scrollHeight;
    }
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => {
      if (!$('#clients-view').hidden) refresh('clients');
      if (!$('#connections-view').hidden) refresh('connections');
    }, 150);
  };
  for (const name of ['open', 'message', 'client-error', 'close', 'state', 'module', 'reconnecting']) source.addEventListener(name, onEvent);
}

document.addEventListener('DOMContentLoaded', async () => {
  $('#login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const r = await api('POST', '/ui/login', { token: $('#token').value });
      csrf = r.csrf;
      $('#token').value = '';
      await loggedIn();
    } catch (e) {
      $('#login-error').textContent = e.message;
    }
  });
  $('#logout').addEventListener('click', async () => { await api('POST', '/ui/logout').catch(() => {}); showLogin('Logged out.'); });
  for (const tab of document.querySelectorAll('.tab')) tab.addEventListener('click', () => show(tab.dataset.view));
  $('#add-client').addEventListener('click', () => openForm(null));
  $('#add-header').addEventListener('click', () => headerRow());
  $('#client-form').addEventListener('submit', saveForm);
  $('#client-cancel').addEventListener('click', () => $('#client-dialog').close());
  $('#f-type').addEventListener('change', () => {
    const t = types.find((x) => x.name === $('#f-type').value);
    if (t && !editing) { $('#f-url').value = t.defaults.url || ''; $('#f-auto').checked = !!t.defaults.auto_connect; }
  });
  $('#send-form').addEventListener('submit', sendTest);
  $('#events-close').addEventListener('click', () => { $('#events-dialog').close(); eventsKey = null; });
  try {
    csrf = (await api('GET', '/ui/session')).csrf;
    await loggedIn();
  } catch {
    showLogin('');
  }
});

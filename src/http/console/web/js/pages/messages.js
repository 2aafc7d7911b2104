// Messages: search by stamp, recipient, fingerprint, idempotency key,
// status, delivery state, transport, channel, category and time range,
// newest first, cursor-paged. The filter lives in the URL (#/messages?…),
// so a search can be bookmarked and the back button works. The match
// count is exact up to 10,000 and an estimate above, which it says.

import { get } from '../api.js';
import { h, fill, table, badge, num, time, failure, routeQuery, routeTo } from '../ui.js';

export const STATUSES = ['queued', 'processing', 'sent', 'dead', 'cancelled', 'suppressed'];
export const DELIVERY = ['unknown', 'delivered', 'bounced', 'complained', 'failed'];
export const CHANNELS = ['email', 'sms', 'chat', 'push', 'webhook'];
const PAGE = 50;

/** What the form's fields send to GET /api/messages. */
const FILTERS = ['recipient', 'fingerprint', 'idempotency_key', 'status', 'delivery', 'transport', 'channel', 'category', 'since', 'until'];

function select(name, label, values, current) {
  return h('label', {}, label, h('select', { name, id: `f-${name}` },
    h('option', { value: '' }, 'any'),
    values.map((v) => h('option', { value: v, selected: v === current }, v))));
}

function input(name, label, current, attrs = {}) {
  return h('label', {}, label, h('input', { name, id: `f-${name}`, value: current || '', ...attrs }));
}

/** An RFC 3339 instant for a datetime-local value (the reader's zone). */
function instant(local) {
  return local ? new Date(local).toISOString() : '';
}

function local(iso) {
  if (!iso) return '';
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}T${pad(at.getHours())}:${pad(at.getMinutes())}`;
}

export function messageColumns() {
  return [
    { label: 'Stamp', cell: (m) => h('a', { href: `#/messages/${m.id}`, class: 'mono' }, m.id) },
    { label: 'Status', cell: (m) => badge(m.status) },
    { label: 'Delivery', cell: (m) => (m.delivery && m.delivery.state !== 'unknown' ? badge(m.delivery.state) : h('span', { class: 'muted' }, '–')) },
    { label: 'Transport', cell: (m) => [m.transport, h('div', { class: 'sub' }, m.channel + (m.category ? ` · ${m.category}` : ''))] },
    { label: 'Attempts', num: true, cell: (m) => `${m.attempts} / ${m.max_attempts}` },
    { label: 'Created', cell: (m) => time(m.created_at) },
    { label: 'Last error', cell: (m) => (m.last_error ? h('span', { class: 'mono' }, m.last_error) : '') },
  ];
}

export async function render(main) {
  const query = routeQuery();
  const transports = await get('/api/transports').then((t) => t.transports.map((x) => x.name)).catch(() => []);
  const form = h('form', { class: 'filters', id: 'message-search', role: 'search' },
    input('id', 'Stamp', query.id, { placeholder: '01J…', class: 'mono', spellcheck: 'false' }),
    input('recipient', 'Recipient', query.recipient, { placeholder: 'address, number or token' }),
    input('fingerprint', 'Fingerprint', query.fingerprint, { placeholder: '64 hex digits', class: 'mono' }),
    input('idempotency_key', 'Idempotency key', query.idempotency_key),
    select('status', 'Status', STATUSES, query.status),
    select('delivery', 'Delivery', DELIVERY, query.delivery),
    select('transport', 'Transport', transports, query.transport),
    select('channel', 'Channel', CHANNELS, query.channel),
    input('category', 'Category', query.category),
    input('since', 'Created from', local(query.since), { type: 'datetime-local' }),
    input('until', 'Created before', local(query.until), { type: 'datetime-local' }),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Search'),
      h('a', { class: 'button', href: '#/messages' }, 'Clear')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    const id = values.id.trim();
    if (id) { window.location.hash = `#/messages/${encodeURIComponent(id)}`; return; }
    values.since = instant(values.since);
    values.until = instant(values.until);
    const next = {};
    for (const name of FILTERS) if (values[name] && values[name].trim()) next[name] = values[name].trim();
    window.location.hash = routeTo('messages', next);
  });

  const count = h('span', { class: 'muted', id: 'message-count' });
  const results = h('div', { id: 'message-results' });
  fill(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Messages'), h('span', { class: 'spacer' }), count),
    h('section', { class: 'panel' }, form),
    h('section', { class: 'panel' }, results));

  const filter = {};
  for (const name of FILTERS) if (query[name]) filter[name] = query[name];
  get('/api/messages/count', filter).then((c) => {
    fill(count, c.estimated ? `about ${num(c.count)} messages (estimated)` : `${num(c.count)} messages`);
  }).catch(() => fill(count));

  // Pages already seen, so "Previous" needs no reverse cursor.
  const cursors = [undefined];
  const show = async (index) => {
    let page;
    try {
      page = await get('/api/messages', { ...filter, limit: PAGE, after: cursors[index] });
    } catch (error) {
      fill(results, failure(error));
      return;
    }
    cursors[index + 1] = page.next || undefined;
    fill(results,
      table(messageColumns(), page.items, { empty: 'No message matches.' }),
      h('div', { class: 'pager' },
        h('span', { class: 'muted' }, `Page ${index + 1}`),
        h('button', { type: 'button', disabled: index === 0, onclick: () => show(index - 1) }, 'Previous'),
        h('button', { type: 'button', disabled: !page.next, onclick: () => show(index + 1) }, 'Next')));
  };
  await show(0);
  return null;
}

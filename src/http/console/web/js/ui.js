// Building the page: elements from data (never HTML strings, so nothing a
// message carries can become markup), formatting, tables, dialogs, toasts.

/** An element: h('a', {href: '#/x', class: 'y', onclick: f}, 'text', child). */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') node.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(name, '');
    else node.setAttribute(name, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces what `node` holds. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimalFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

export function num(value) { return value === undefined || value === null ? '–' : numberFormat.format(value); }
export function dec(value) { return value === undefined || value === null ? '–' : decimalFormat.format(value); }
export function pct(value) { return value === undefined || value === null ? '–' : `${decimalFormat.format(value * 100)} %`; }

/** A duration in milliseconds, in the unit that reads best. */
export function ms(value) {
  if (value === undefined || value === null) return '–';
  if (value < 1) return `${decimalFormat.format(value)} ms`;
  if (value < 1000) return `${numberFormat.format(value)} ms`;
  if (value < 60000) return `${decimalFormat.format(value / 1000)} s`;
  if (value < 3600000) return `${decimalFormat.format(value / 60000)} min`;
  return `${decimalFormat.format(value / 3600000)} h`;
}

export function time(iso) {
  if (!iso) return '–';
  const at = new Date(iso);
  return h('time', { datetime: iso, title: iso }, at.toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  }));
}

export function ago(iso) {
  if (!iso) return '–';
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  const text = seconds < 60 ? `${Math.round(seconds)} s ago`
    : seconds < 3600 ? `${Math.round(seconds / 60)} min ago`
      : seconds < 86400 ? `${Math.round(seconds / 3600)} h ago` : `${Math.round(seconds / 86400)} d ago`;
  return h('time', { datetime: iso, title: iso }, text);
}

const TONES = {
  sent: 'ok', delivered: 'ok', closed: 'ok', running: 'ok', resolved: 'ok',
  queued: 'info', scheduled: 'info', processing: 'info', half_open: 'warn', paused: 'warn',
  retrying: 'warn', firing: 'bad', open: 'bad', dead: 'bad', failed: 'bad', bounced: 'bad',
  complained: 'bad', suppressed: 'warn', cancelled: '', stopped: 'bad', unknown: '',
};

export function badge(text, tone) {
  const value = text === undefined || text === null ? '–' : String(text);
  return h('span', { class: `badge ${tone ?? TONES[value] ?? ''}` }, value.replace('_', ' '));
}

/**
 * A table: columns are {label, cell: row => node|text, num?: bool}. On a
 * phone each row stacks, labelled by its column.
 */
export function table(columns, rows, { empty = 'Nothing here.', caption } = {}) {
  const head = h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : null, scope: 'col' }, c.label))));
  const body = h('tbody', {}, rows.length === 0
    ? h('tr', {}, h('td', { class: 'empty', colspan: columns.length }, empty))
    : rows.map((row) => h('tr', {}, columns.map((c) => h('td', { class: c.num ? 'num' : null, 'data-label': c.label }, c.cell(row))))));
  return h('div', { class: 'table-wrap' }, h('table', { class: 'stack' }, caption ? h('caption', { class: 'muted' }, caption) : null, head, body));
}

export function card(label, value, sub) {
  return h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), sub ? h('div', { class: 'sub' }, sub) : null);
}

export function panel(title, ...children) {
  return h('section', { class: 'panel' }, title ? h('h2', {}, title) : null, ...children);
}

/** Asks before an action; resolves true when confirmed. */
export function confirmAction(title, text, confirmLabel = 'Confirm', danger = false) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { 'aria-labelledby': 'confirm-title' });
    const done = (answer) => { dialog.close(); dialog.remove(); resolve(answer); };
    fill(dialog,
      h('h2', { id: 'confirm-title' }, title),
      h('p', {}, text),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: danger ? 'danger' : 'primary', 'data-confirm': 'yes', onclick: () => done(true) }, confirmLabel),
        h('button', { type: 'button', onclick: () => done(false) }, 'Cancel')));
    dialog.addEventListener('cancel', (event) => { event.preventDefault(); done(false); });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export function toast(text, tone) {
  const node = h('div', { class: `toast ${tone || ''}` }, text);
  document.getElementById('toasts').append(node);
  setTimeout(() => node.remove(), tone === 'bad' ? 8000 : 4000);
}

/** Shows an error in place of a page part. */
export function failure(error) {
  return h('div', { class: 'notice bad', role: 'alert' }, error.field ? `${error.message} (${error.field})` : error.message || String(error));
}

/** The query part of the hash route as an object. */
export function routeQuery() {
  const hash = window.location.hash;
  const at = hash.indexOf('?');
  return Object.fromEntries(new URLSearchParams(at < 0 ? '' : hash.slice(at + 1)));
}

/** A hash route with a query. */
export function routeTo(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) if (value) params.set(name, value);
  const text = params.toString();
  return `#/${path}${text ? `?${text}` : ''}`;
}

/** Runs `task` every `seconds` (first after one interval) while the tab is visible; returns the stop. */
export function every(seconds, task) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    if (document.visibilityState === 'visible') {
      try { await task(); } catch (error) { console.warn(error); }
    }
    if (!stopped) timer = setTimeout(tick, seconds * 1000);
  };
  timer = setTimeout(tick, seconds * 1000);
  return () => { stopped = true; clearTimeout(timer); };
}

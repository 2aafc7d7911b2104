// Alerts: active incidents first, then the history of resolved ones.

import { get } from '../api.js';
import { h, fill, table, badge, dec, time, failure, panel } from '../ui.js';

const columns = [
  { label: 'Rule', cell: (a) => [h('strong', {}, a.rule), h('div', { class: 'sub' }, a.kind.replace(/_/g, ' '))] },
  { label: 'Transport', cell: (a) => a.transport },
  { label: 'State', cell: (a) => badge(a.state === 'active' ? 'firing' : 'resolved') },
  { label: 'Fired at', cell: (a) => [time(a.fired_at), h('div', { class: 'sub' }, `value ${dec(a.fired_value)}, threshold ${dec(a.threshold)}`)] },
  { label: 'Latest', cell: (a) => [dec(a.last_value), h('div', { class: 'sub' }, time(a.checked_at))] },
  { label: 'Resolved', cell: (a) => (a.resolved_at ? [time(a.resolved_at), h('div', { class: 'sub' }, `after ${a.duration_s} s`)] : '–') },
  { label: 'Notice', cell: (a) => [
    a.notified ? (a.fired_message_id ? h('a', { href: `#/messages/${a.fired_message_id}` }, 'sent') : 'sent') : h('span', { class: 'muted' }, 'within cooldown'),
    a.paused_at ? h('div', { class: 'sub' }, 'paused its transport') : null] },
];

export async function render(main) {
  const active = h('div', { id: 'alerts-active' });
  const resolved = h('div', { id: 'alerts-resolved' });
  fill(main, h('div', { class: 'page-head' }, h('h1', {}, 'Alerts')), panel('Active', active), panel('Resolved', resolved));
  try {
    const [now, past] = await Promise.all([
      get('/api/alerts', { state: 'active', limit: 200 }),
      get('/api/alerts', { state: 'resolved', limit: 100 }),
    ]);
    fill(active, table(columns, now.alerts, { empty: 'No active alerts.' }));
    fill(resolved, table(columns, past.alerts, { empty: 'No resolved alerts yet.' }));
  } catch (error) {
    fill(active, failure(error));
  }
  return null;
}

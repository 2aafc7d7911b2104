// Transports: each one's state, breaker, rate-limit use, depth, work in
// flight and last error, with pause and resume (asked for confirmation,
// and shown only to keys with the admin role; the server refuses others).

import { get, post, can } from '../api.js';
import { h, fill, table, badge, num, pct, ago, failure, confirmAction, toast, every } from '../ui.js';

const REFRESH_S = 5;

async function act(transport, action) {
  const verb = action === 'pause' ? 'Pause' : 'Resume';
  const text = action === 'pause'
    ? `Deliveries through ${transport.name} stop until it is resumed; its queue keeps accepting messages.`
    : `Deliveries through ${transport.name} start again.`;
  if (!await confirmAction(`${verb} ${transport.name}?`, text, verb, action === 'pause')) return false;
  try {
    await post(`/api/transports/${encodeURIComponent(transport.name)}/${action}`);
    toast(`${transport.name} ${action === 'pause' ? 'paused' : 'resumed'}`);
    return true;
  } catch (error) {
    toast(error.message, 'bad');
    return false;
  }
}

export async function render(main) {
  const body = h('div', { id: 'transports' });
  fill(main, h('div', { class: 'page-head' }, h('h1', {}, 'Transports')), h('section', { class: 'panel' }, body));
  const refresh = async () => {
    const [list, bottlenecks] = await Promise.all([
      get('/api/transports'),
      get('/api/queue/bottlenecks', { window: '15m' }).catch(() => ({ transports: [] })),
    ]);
    const use = Object.fromEntries(bottlenecks.transports.map((t) => [t.transport, t.peakRateLimitUse]));
    const columns = [
      { label: 'Transport', cell: (t) => [h('strong', {}, t.name), h('div', { class: 'sub' }, t.kind)] },
      { label: 'State', cell: (t) => badge(t.paused ? 'paused' : 'running') },
      { label: 'Circuit', cell: (t) => [badge(t.circuit), t.breaker_opened ? h('div', { class: 'sub' }, `opened ${num(t.breaker_opened)}×`) : null] },
      { label: 'Rate limit', cell: (t) => [`${num(t.rate_limit)}/min`, h('div', { class: 'sub' }, use[t.name] === undefined || use[t.name] === null ? 'no attempts in 15 min' : `peak use ${pct(use[t.name])}`)] },
      { label: 'Depth', num: true, cell: (t) => num(t.depth) },
      { label: 'In flight', num: true, cell: (t) => `${num(t.in_flight)} / ${num(t.concurrency)}` },
      { label: 'Node', cell: (t) => (t.active_here ? 'this node' : h('span', { class: 'muted' }, 'another node')) },
      { label: 'Last activity', cell: (t) => ago(t.last_activity) },
      { label: 'Last error', cell: (t) => (t.last_error ? h('span', { class: 'mono' }, t.last_error) : h('span', { class: 'muted' }, 'none')) },
    ];
    if (can('admin')) {
      columns.push({
        label: 'Actions',
        cell: (t) => h('button', {
          type: 'button',
          class: `small ${t.paused ? 'primary' : 'danger'}`,
          'data-action': t.paused ? 'resume' : 'pause',
          'data-transport': t.name,
          onclick: async () => { if (await act(t, t.paused ? 'resume' : 'pause')) await refresh(); },
        }, t.paused ? 'Resume' : 'Pause'),
      });
    }
    fill(body, table(columns, list.transports, { empty: 'No transports are configured.' }));
  };
  try {
    await refresh();
  } catch (error) {
    fill(body, failure(error));
  }
  return every(REFRESH_S, refresh);
}

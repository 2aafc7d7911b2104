// Dead letters: grouped by transport and error class; the list under a
// filter, where selected ones are replayed or discarded, or every one
// that matches the filter is replayed by a server-side replay job whose
// progress is polled: the job goes on if this page or the browser closes,
// and a page opened while one runs shows its progress again.

import { get, post, can } from '../api.js';
import { h, fill, table, badge, num, ago, failure, confirmAction, toast, routeQuery, routeTo, panel, every } from '../ui.js';
import { messageColumns } from './messages.js';

const PAGE = 100;
const JOBS = '/api/queue/dead-letters/replay-jobs';
/** How often a running replay job's progress is read. */
const POLL_S = 1;

export async function render(main) {
  const query = routeQuery();
  const filter = { transport: query.transport, error_class: query.error_class };
  const groups = h('div', { id: 'dead-groups' });
  const list = h('div', { id: 'dead-list' });
  const progress = h('div', { id: 'replay-progress' });
  const admin = can('admin');
  const filterText = [filter.transport && `transport ${filter.transport}`, filter.error_class && `error class ${filter.error_class}`].filter(Boolean).join(', ') || 'every transport';

  fill(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Dead letters')),
    panel('By transport and error class', groups),
    h('section', { class: 'panel' },
      h('div', { class: 'page-head' }, h('h2', {}, `Dead letters: ${filterText}`), h('span', { class: 'spacer' }),
        (filter.transport || filter.error_class) ? h('a', { href: '#/dead-letters' }, 'Show all') : null),
      progress, list));

  try {
    const answer = await get('/api/queue/dead-letters/groups');
    fill(groups, table([
      { label: 'Transport', cell: (g) => g.transport },
      { label: 'Error class', cell: (g) => badge(g.error_class || 'unknown', 'bad') },
      { label: 'Count', num: true, cell: (g) => num(g.count) },
      { label: 'Oldest', cell: (g) => ago(g.oldest) },
      { label: 'Newest', cell: (g) => ago(g.newest) },
      { label: 'Sample error', cell: (g) => h('span', { class: 'mono' }, g.sample_error || '') },
      { label: '', cell: (g) => h('a', { href: routeTo('dead-letters', { transport: g.transport, error_class: g.error_class }) }, 'Show') },
    ], answer.groups, { empty: 'The dead-letter queue is empty.' }));
  } catch (error) {
    fill(groups, failure(error));
  }

  const selected = new Set();
  let stopWatching = () => {};
  /** Shows `job`'s progress, and while it runs reads it again every POLL_S. */
  const watch = (job) => {
    stopWatching();
    const bar = h('span');
    const label = h('div', { class: 'muted', id: 'replay-count' });
    const meter = h('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': job.total }, bar);
    fill(progress, meter, label);
    const draw = (current) => {
      bar.style.width = current.total ? `${Math.min(100, (current.replayed / current.total) * 100)}%` : '100%';
      meter.setAttribute('aria-valuenow', current.replayed);
      fill(label, `Replayed ${num(current.replayed)} of ${num(current.total)}`);
    };
    draw(job);
    if (job.state !== 'running') return;
    const stop = every(POLL_S, async () => {
      const current = await get(`${JOBS}/${encodeURIComponent(job.id)}`);
      draw(current);
      if (current.state === 'running') return;
      stop();
      if (current.state === 'done') toast(`Replayed ${num(current.replayed)} dead letters`);
      else toast(`Replay stopped after ${num(current.replayed)}: ${current.error}`, 'bad');
      await show(undefined);
    });
    stopWatching = stop;
  };
  const replayAll = async () => {
    let total = null;
    try {
      total = (await get('/api/queue/dead-letters/groups')).groups
        .filter((g) => (!filter.transport || g.transport === filter.transport) && (!filter.error_class || g.error_class === filter.error_class))
        .reduce((sum, g) => sum + g.count, 0);
    } catch { total = null; }
    if (!await confirmAction('Replay every matching dead letter?', `${total === null ? 'All' : num(total)} dead letters (${filterText}) are queued again under their own stamps, with fresh attempts.`, 'Replay all')) return;
    const body = {};
    if (filter.transport) body.transport = filter.transport;
    if (filter.error_class) body.error_class = filter.error_class;
    try {
      watch(await post(JOBS, body));
    } catch (error) {
      toast(`Replay not started: ${error.message}`, 'bad');
    }
  };
  const eachSelected = async (action, verb) => {
    const ids = [...selected];
    if (!ids.length) return;
    if (!await confirmAction(`${verb} ${ids.length} dead letter${ids.length === 1 ? '' : 's'}?`, action === 'retry' ? 'They are queued again under their own stamps.' : 'They are discarded for good.', verb, action === 'cancel')) return;
    let failed = 0;
    for (const id of ids) {
      try { await post(`/api/messages/${encodeURIComponent(id)}/${action}`); } catch { failed += 1; }
    }
    toast(`${verb}: ${ids.length - failed} done${failed ? `, ${failed} failed` : ''}`, failed ? 'bad' : undefined);
    await show(undefined);
  };

  const show = async (after) => {
    selected.clear();
    let page;
    try {
      page = await get('/api/queue/dead-letters', { ...filter, limit: PAGE, after });
    } catch (error) {
      fill(list, failure(error));
      return;
    }
    const columns = messageColumns();
    if (admin) {
      columns.unshift({
        label: 'Select',
        cell: (m) => h('input', { type: 'checkbox', 'aria-label': `select ${m.id}`, 'data-id': m.id, onchange: (e) => { if (e.target.checked) selected.add(m.id); else selected.delete(m.id); } }),
      });
    }
    fill(list,
      admin ? h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'primary', id: 'replay-all', onclick: replayAll, disabled: page.items.length === 0 }, 'Replay all matching'),
        h('button', { type: 'button', id: 'replay-selected', onclick: () => eachSelected('retry', 'Replay') }, 'Replay selected'),
        h('button', { type: 'button', class: 'danger', id: 'discard-selected', onclick: () => eachSelected('cancel', 'Discard') }, 'Discard selected')) : null,
      table(columns, page.items, { empty: 'No dead letter matches.' }),
      h('div', { class: 'pager' },
        after ? h('button', { type: 'button', onclick: () => show(undefined) }, 'First page') : null,
        h('button', { type: 'button', disabled: !page.next, onclick: () => show(page.next) }, 'Next')));
  };
  await show(undefined);
  if (can('read')) {
    try {
      const running = (await get(JOBS, { limit: 1 })).items.find((job) => job.state === 'running');
      if (running) watch(running);
    } catch { /* the list above already says whether the API answers */ }
  }
  return () => stopWatching();
}

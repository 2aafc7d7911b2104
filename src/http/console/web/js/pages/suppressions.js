// Suppressions: the addresses Herald will not send to, searched by
// channel, address and reason; admin keys add and remove entries.

import { get, post, del, can } from '../api.js';
import { h, fill, table, badge, time, failure, confirmAction, toast, routeQuery, routeTo, panel } from '../ui.js';
import { CHANNELS } from './messages.js';

export async function render(main) {
  const query = routeQuery();
  const search = h('form', { class: 'filters', id: 'suppression-search', role: 'search' },
    h('label', {}, 'Channel', h('select', { name: 'channel' }, h('option', { value: '' }, 'any'), CHANNELS.map((c) => h('option', { value: c, selected: c === query.channel }, c)))),
    h('label', {}, 'Address', h('input', { name: 'address', value: query.address || '' })),
    h('label', {}, 'Reason', h('input', { name: 'reason', value: query.reason || '', placeholder: 'hard_bounce, complaint…' })),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Search'), h('a', { class: 'button', href: '#/suppressions' }, 'Clear')));
  search.addEventListener('submit', (event) => {
    event.preventDefault();
    window.location.hash = routeTo('suppressions', Object.fromEntries(new FormData(search)));
  });
  const list = h('div', { id: 'suppression-list' });
  const add = can('admin') ? h('form', { class: 'filters', id: 'suppression-add' },
    h('label', {}, 'Channel', h('select', { name: 'channel', required: true }, CHANNELS.map((c) => h('option', { value: c }, c)))),
    h('label', {}, 'Address', h('input', { name: 'address', required: true })),
    h('label', {}, 'Reason', h('input', { name: 'reason', placeholder: 'manual', pattern: '[a-z][a-z0-9_]{0,63}' })),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Add'))) : null;
  add?.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(add));
    const body = { channel: values.channel, address: values.address.trim() };
    if (values.reason.trim()) body.reason = values.reason.trim();
    try {
      await post('/api/suppressions', body);
      toast(`${body.address} suppressed`);
      add.reset();
      await show(undefined);
    } catch (error) {
      toast(error.field ? `${error.message} (${error.field})` : error.message, 'bad');
    }
  });
  fill(main, h('div', { class: 'page-head' }, h('h1', {}, 'Suppressions')),
    h('section', { class: 'panel' }, search),
    add ? panel('Add a suppression', add) : null,
    h('section', { class: 'panel' }, list));

  const filter = { channel: query.channel, address: query.address, reason: query.reason };
  const show = async (after) => {
    let page;
    try {
      page = await get('/api/suppressions', { ...filter, limit: 100, after });
    } catch (error) {
      fill(list, failure(error));
      return;
    }
    const columns = [
      { label: 'Channel', cell: (s) => s.channel },
      { label: 'Address', cell: (s) => h('span', { class: 'mono' }, s.address) },
      { label: 'Reason', cell: (s) => badge(s.reason, s.reason === 'manual' ? 'info' : 'warn') },
      { label: 'Transport', cell: (s) => s.transport || 'all' },
      { label: 'Source', cell: (s) => (s.source_stamp ? h('a', { href: `#/messages/${s.source_stamp}`, class: 'mono' }, s.source_stamp) : '–') },
      { label: 'Added', cell: (s) => time(s.created_at) },
      { label: 'Expires', cell: (s) => (s.expires_at ? time(s.expires_at) : 'never') },
    ];
    if (can('admin')) {
      columns.push({
        label: 'Actions',
        cell: (s) => h('button', {
          type: 'button', class: 'small danger',
          onclick: async () => {
            if (!await confirmAction(`Remove ${s.address}?`, 'Herald will send to this address again.', 'Remove', true)) return;
            try {
              await del(`/api/suppressions/${encodeURIComponent(s.channel)}/${encodeURIComponent(s.address)}`);
              toast(`${s.address} removed`);
              await show(undefined);
            } catch (error) { toast(error.message, 'bad'); }
          },
        }, 'Remove'),
      });
    }
    fill(list, table(columns, page.items, { empty: 'No suppression matches.' }),
      h('div', { class: 'pager' },
        after ? h('button', { type: 'button', onclick: () => show(undefined) }, 'First page') : null,
        h('button', { type: 'button', disabled: !page.next, onclick: () => show(page.next) }, 'Next')));
  };
  await show(undefined);
  return null;
}

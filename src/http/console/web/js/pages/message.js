// One message: its facts, the event timeline (attempts with transport,
// duration, error and provider id; delivery reports), its metadata, the
// payload on request, and cancel / retry for admin keys.

import { get, post, can } from '../api.js';
import { h, fill, badge, time, ms, failure, confirmAction, toast, panel } from '../ui.js';

const TONE = {
  sent: 'ok', delivered: 'ok', opened: 'ok', clicked: 'ok',
  attempt_failed: 'bad', dead_lettered: 'bad', bounced: 'bad', complained: 'bad', rejected: 'bad',
  retry_scheduled: 'warn', deferred: 'warn', lease_expired: 'warn', deferred_downstream: 'warn', suppressed: 'warn', unsubscribed: 'warn',
};

function eventLine(event) {
  const detail = event.detail || {};
  const provider = detail.provider_id || detail.provider_message_id;
  const facts = [
    event.attempt ? `attempt ${event.attempt}` : null,
    event.transport ? `via ${event.transport}` : null,
    event.duration_ms !== null && event.duration_ms !== undefined ? `took ${ms(event.duration_ms)}` : null,
    provider ? `provider id ${provider}` : null,
    detail.recipient ? `recipient ${detail.recipient}` : null,
    detail.reason ? `reason: ${detail.reason}` : null,
    detail.retry_at ? `next try ${new Date(detail.retry_at).toLocaleString()}` : null,
  ].filter(Boolean);
  const rest = { ...detail };
  for (const known of ['provider_id', 'provider_message_id', 'recipient', 'reason', 'retry_at']) delete rest[known];
  return h('li', { class: TONE[event.kind] === 'ok' ? 'ok' : TONE[event.kind] === 'bad' ? 'bad' : TONE[event.kind] ? 'warn' : '', 'data-kind': event.kind },
    h('div', {}, badge(event.kind.replace(/_/g, ' '), TONE[event.kind] || 'info'), ' ', h('span', { class: 'when' }, time(event.at))),
    facts.length ? h('div', {}, facts.join(' · ')) : null,
    event.error ? h('div', { class: 'mono' }, event.error) : null,
    Object.keys(rest).length ? h('details', {}, h('summary', { class: 'muted' }, 'detail'), h('pre', {}, JSON.stringify(rest, null, 2))) : null);
}

export async function render(main, route) {
  const id = route.id;
  let message;
  try {
    message = await get(`/api/messages/${encodeURIComponent(id)}`);
  } catch (error) {
    fill(main, h('div', { class: 'page-head' }, h('h1', {}, 'Message')), failure(error), h('a', { href: '#/messages' }, 'Back to the search'));
    return null;
  }
  const payload = h('div', { id: 'payload' });
  const actions = h('div', { class: 'actions' });
  const act = async (action, verb, text) => {
    if (!await confirmAction(`${verb} this message?`, text, verb, action === 'cancel')) return;
    try {
      await post(`/api/messages/${encodeURIComponent(id)}/${action}`);
      toast(`${verb}: done`);
      await render(main, route);
    } catch (error) {
      toast(error.message, 'bad');
    }
  };
  if (can('admin')) {
    if (message.status === 'queued' || message.status === 'dead') {
      actions.append(h('button', { type: 'button', class: 'danger', id: 'cancel-message', onclick: () => act('cancel', message.status === 'dead' ? 'Discard' : 'Cancel', message.status === 'dead' ? 'The dead letter is discarded and will not be replayed.' : 'The message will not be delivered.') }, message.status === 'dead' ? 'Discard' : 'Cancel'));
    }
    if (message.status === 'dead') {
      actions.append(h('button', { type: 'button', class: 'primary', id: 'retry-message', onclick: () => act('retry', 'Retry', 'It is queued again under the same stamp with fresh attempts.') }, 'Retry'));
    }
  }
  if (can('read')) {
    fill(payload, h('button', {
      type: 'button', id: 'show-payload',
      onclick: async () => {
        try {
          const full = await get(`/api/messages/${encodeURIComponent(id)}`, { include: 'payload' });
          fill(payload, full.payload === null || full.payload === undefined
            ? h('p', { class: 'muted' }, 'The payload is no longer stored (retention dropped it).')
            : h('pre', { id: 'payload-body' }, JSON.stringify(full.payload, null, 2)));
        } catch (error) {
          fill(payload, failure(error));
        }
      },
    }, 'Show payload'));
  }
  const recipients = (message.delivery && message.delivery.recipients) || [];
  fill(main,
    h('div', { class: 'page-head' },
      h('h1', {}, 'Message ', h('span', { class: 'mono' }, message.id)),
      h('span', { class: 'spacer' }), actions),
    h('div', { class: 'grid two' },
      panel('Facts', h('dl', { class: 'facts' },
        h('dt', {}, 'Status'), h('dd', { id: 'message-status' }, badge(message.status)),
        h('dt', {}, 'Delivery'), h('dd', {}, badge(message.delivery ? message.delivery.state : 'unknown')),
        h('dt', {}, 'Transport'), h('dd', {}, message.transport),
        h('dt', {}, 'Channel'), h('dd', {}, message.channel),
        h('dt', {}, 'Category'), h('dd', {}, message.category || '–'),
        h('dt', {}, 'Priority'), h('dd', {}, String(message.priority)),
        h('dt', {}, 'Attempts'), h('dd', {}, `${message.attempts} of ${message.max_attempts}`),
        h('dt', {}, 'Created'), h('dd', {}, time(message.created_at)),
        h('dt', {}, 'Available'), h('dd', {}, time(message.available_at)),
        h('dt', {}, 'Sent'), h('dd', {}, time(message.sent_at)),
        h('dt', {}, 'Fingerprint'), h('dd', { class: 'mono' }, h('a', { href: `#/messages?fingerprint=${message.fingerprint}` }, message.fingerprint)),
        h('dt', {}, 'Idempotency key'), h('dd', {}, message.idempotency_key || '–'),
        h('dt', {}, 'Last error'), h('dd', { class: 'mono' }, message.last_error || '–'),
        recipients.length ? [h('dt', {}, 'Recipients'), h('dd', {}, recipients.map((r) => h('div', {}, r.address, ' ', badge(r.state), r.reason ? h('span', { class: 'muted' }, ` ${r.reason}`) : null)))] : null)),
      panel('Events', h('ol', { class: 'timeline', id: 'timeline' }, message.events.map(eventLine)))),
    panel('Metadata', h('pre', {}, JSON.stringify(message.metadata, null, 2))),
    can('read') ? panel('Payload', payload) : null);
  return null;
}

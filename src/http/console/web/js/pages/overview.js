// Overview: what the queue holds and does now, charts of the last hour
// that update every few seconds, active alerts and the bottleneck
// findings in words.

import { get } from '../api.js';
import { h, fill, card, panel, num, dec, ms, badge, ago, failure, every, table } from '../ui.js';
import { lineChart, dense, spanSeconds } from '../charts.js';

const REFRESH_S = 5;

/** The last full minute of a per-minute series (the current one is partial). */
function lastFull(series) {
  return series.length >= 2 ? series[series.length - 2] : series[series.length - 1];
}

export async function render(main) {
  const cards = h('div', { class: 'grid cards', id: 'overview-cards' });
  const throughput = h('div', { class: 'chart', id: 'chart-throughput', role: 'img', 'aria-label': 'Sent per minute over the last hour' });
  const failures = h('div', { class: 'chart', id: 'chart-failures', role: 'img', 'aria-label': 'Failures per minute over the last hour' });
  const waits = h('div', { class: 'chart', id: 'chart-wait', role: 'img', 'aria-label': 'Queue wait over the last hour' });
  const alerts = h('div', { id: 'overview-alerts' });
  const findings = h('div', { id: 'overview-findings' });
  const status = h('span', { class: 'muted', id: 'overview-updated' });
  fill(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Overview'), h('span', { class: 'spacer' }), status),
    cards,
    h('div', { class: 'grid two' },
      panel('Throughput, per minute', throughput),
      panel('Failures, per minute', failures)),
    h('div', { class: 'grid two' },
      panel('Queue wait', waits),
      panel('Active alerts', alerts)),
    panel('Bottlenecks, last 15 minutes', findings));

  let charts = null;
  const refresh = async () => {
    const [queue, flow, bottlenecks, active] = await Promise.all([
      get('/api/queue/analytics', { window: '1h', bucket: '1m' }),
      get('/api/analytics/message-flow', { window: '15m' }),
      get('/api/queue/bottlenecks', { window: '15m' }),
      get('/api/alerts', { state: 'active', limit: 20 }),
    ]);
    const points = dense(queue.throughputMetrics.series, queue.from, queue.to, spanSeconds(queue.bucket), ['sent', 'failed', 'retried', 'dead'], ['averageWaitMs']);
    const minute = lastFull(points) || { sent: 0, failed: 0 };
    const wait = flow.timings.queueWait;
    fill(cards,
      card('Queued', num(queue.queueDepth.queued)),
      card('Processing', num(queue.queueDepth.processing)),
      card('Sent / min', num(Math.round(queue.processingRate.last1m * 60)), `${dec(queue.processingRate.last1m)} /s over the last 60 s`),
      card('Failed / min', num(minute.failed), `last full minute; ${dec(queue.failureRate * 100)} % of attempts in 1 h`),
      card('Wait p50', ms(wait.p50), 'last 15 min'),
      card('Wait p95', ms(wait.p95), 'last 15 min'));
    if (!charts) {
      charts = [
        lineChart(throughput, [{ key: 'sent', label: 'sent' }], points),
        lineChart(failures, [{ key: 'failed', label: 'failed attempts' }, { key: 'retried', label: 'retried' }, { key: 'dead', label: 'dead' }], points),
        lineChart(waits, [{ key: 'averageWaitMs', label: 'average wait' }], points, { format: ms }),
      ];
    } else {
      for (const chart of charts) chart.update(points);
    }
    fill(alerts, active.alerts.length === 0
      ? h('p', { class: 'muted' }, 'No active alerts.')
      : table([
        { label: 'Rule', cell: (a) => h('a', { href: '#/alerts' }, a.rule) },
        { label: 'Transport', cell: (a) => a.transport },
        { label: 'Value', cell: (a) => `${dec(a.last_value)} (limit ${dec(a.threshold)})` },
        { label: 'Since', cell: (a) => ago(a.fired_at) },
      ], active.alerts));
    fill(findings, bottlenecks.findings.length === 0
      ? h('p', { class: 'muted' }, 'No bottleneck: every queue keeps up.')
      : h('ul', { class: 'findings' }, bottlenecks.findings.map((f) => h('li', {},
        badge(f.severity, f.severity === 'critical' ? 'bad' : f.severity === 'warning' ? 'warn' : 'info'), ' ',
        h('strong', {}, f.transport), ': ', f.message,
        f.setting ? h('span', { class: 'muted' }, ` (setting: `, h('code', {}, f.setting), ')') : null))));
    fill(status, `Updated ${new Date().toLocaleTimeString()}, every ${REFRESH_S} s`);
  };
  try {
    await refresh();
  } catch (error) {
    fill(main, failure(error));
    return null;
  }
  const stop = every(REFRESH_S, refresh);
  return () => { stop(); for (const chart of charts || []) chart.destroy(); };
}

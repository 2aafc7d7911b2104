// Analytics: the five analytics routes and deliverability over a window
// the reader picks, as charts and tables.

import { get } from '../api.js';
import { h, fill, table, num, dec, pct, ms, badge, failure, panel, card, routeQuery, routeTo } from '../ui.js';
import { lineChart, dense, spanSeconds } from '../charts.js';

const WINDOWS = [['15m', '15 minutes'], ['1h', '1 hour'], ['6h', '6 hours'], ['24h', '24 hours'], ['7d', '7 days'], ['30d', '30 days']];
/** A bucket that keeps a chart to about 60–170 points. */
const BUCKETS = { '15m': '1m', '1h': '1m', '6h': '5m', '24h': '15m', '7d': '1h', '30d': '6h' };

export async function render(main) {
  const query = routeQuery();
  const span = WINDOWS.some(([w]) => w === query.window) ? query.window : '1h';
  const picker = h('label', {}, 'Window', h('select', {
    id: 'window',
    onchange: (e) => { window.location.hash = routeTo('analytics', { window: e.target.value }); },
  }, WINDOWS.map(([value, text]) => h('option', { value, selected: value === span }, text))));
  const sections = h('div', { id: 'analytics' });
  fill(main, h('div', { class: 'page-head' }, h('h1', {}, 'Analytics'), h('span', { class: 'spacer' }), picker), sections);

  let reports;
  try {
    reports = await Promise.all([
      get('/api/queue/analytics', { window: span, bucket: BUCKETS[span] }),
      get('/api/analytics/message-flow', { window: span }),
      get('/api/analytics/transport-performance', { window: span }),
      get('/api/queue/failures', { window: span }),
      get('/api/queue/bottlenecks', { window: span }),
      get('/api/analytics/deliverability', { window: span, bucket: BUCKETS[span] }),
    ]);
  } catch (error) {
    fill(sections, failure(error));
    return null;
  }
  const [queue, flow, performance, failures, bottlenecks, deliverability] = reports;
  const charts = [];
  const chart = (id, lines, points, options) => {
    const node = h('div', { class: 'chart', id, role: 'img', 'aria-label': lines.map((l) => l.label).join(', ') });
    charts.push({ node, lines, points, options });
    return node;
  };
  const timingRows = [
    ['Queue wait', flow.timings.queueWait], ['Processing', flow.timings.processing],
    ['Delivery', flow.timings.delivery], ['Total', flow.timings.total],
  ].map(([name, t]) => ({ name, t }));
  const timingColumns = [
    { label: 'Stage', cell: (r) => r.name },
    { label: 'Count', num: true, cell: (r) => num(r.t.count) },
    { label: 'p50', num: true, cell: (r) => ms(r.t.p50) },
    { label: 'p95', num: true, cell: (r) => ms(r.t.p95) },
    { label: 'p99', num: true, cell: (r) => ms(r.t.p99) },
    { label: 'Average', num: true, cell: (r) => ms(r.t.average) },
    { label: 'Max', num: true, cell: (r) => ms(r.t.max) },
  ];

  fill(sections,
    h('div', { class: 'grid cards' },
      card('Sent / s', dec(queue.throughputMetrics.perSecond), `over ${span}`),
      card('Failure rate', pct(queue.failureRate)),
      card('Average wait', ms(queue.averageWaitTime)),
      card('Queued now', num(queue.queueDepth.queued)),
      card('Delivered', pct(deliverability.rates.delivered), 'of sent, as reported'),
      card('Bounced', pct(deliverability.rates.bounced))),
    h('div', { class: 'grid two' },
      panel('Throughput', chart('chart-analytics-throughput', [{ key: 'sent', label: 'sent' }, { key: 'failed', label: 'failed' }, { key: 'dead', label: 'dead' }], dense(queue.throughputMetrics.series, queue.from, queue.to, spanSeconds(queue.bucket), ['sent', 'failed', 'dead']))),
      panel('Deliverability', chart('chart-deliverability', [{ key: 'delivered', label: 'delivered' }, { key: 'bouncedHard', label: 'hard bounces' }, { key: 'bouncedSoft', label: 'soft bounces' }, { key: 'complained', label: 'complaints' }], dense(deliverability.series, deliverability.from, deliverability.to, spanSeconds(deliverability.bucket), ['delivered', 'bouncedHard', 'bouncedSoft', 'complained'])))),
    panel('Message flow: time per stage', table(timingColumns, timingRows)),
    panel('Message flow by transport', table([
      { label: 'Transport', cell: (g) => g.name },
      { label: 'Claimed', num: true, cell: (g) => num(g.stages.claimed) },
      { label: 'Sent', num: true, cell: (g) => num(g.stages.sent) },
      { label: 'Retried', num: true, cell: (g) => num(g.stages.retried) },
      { label: 'Dead', num: true, cell: (g) => num(g.stages.dead) },
      { label: 'Wait p95', num: true, cell: (g) => ms(g.timings.queueWait.p95) },
      { label: 'Delivery p95', num: true, cell: (g) => ms(g.timings.delivery.p95) },
    ], flow.byTransport, { empty: 'No attempts in this window.' })),
    panel('Transport performance', table([
      { label: 'Transport', cell: (t) => [t.transport, h('div', { class: 'sub' }, t.kind)] },
      { label: 'Attempts', num: true, cell: (t) => num(t.attempts) },
      { label: 'Success', num: true, cell: (t) => pct(t.successRate) },
      { label: 'p50', num: true, cell: (t) => ms(t.latencyMs.p50) },
      { label: 'p95', num: true, cell: (t) => ms(t.latencyMs.p95) },
      { label: 'p99', num: true, cell: (t) => ms(t.latencyMs.p99) },
      { label: 'Score', num: true, cell: (t) => dec(t.reliabilityScore) },
      { label: 'Delivered', num: true, cell: (t) => pct(t.deliveryRate) },
      { label: 'Bounces', num: true, cell: (t) => pct(t.bounceRate) },
      { label: 'Complaints', num: true, cell: (t) => pct(t.complaintRate) },
    ], performance.transports)),
    h('div', { class: 'grid two' },
      panel('Failures by class', table([
        { label: 'Class', cell: (r) => badge(r[0], 'bad') },
        { label: 'Failed attempts', num: true, cell: (r) => num(r[1]) },
      ], Object.entries(failures.byClass), { empty: 'No failures in this window.' }),
      h('p', { class: 'muted' }, `Retry success rate: ${pct(failures.retrySuccessRate)}. Dead letters now: ${num(failures.deadLetters.count)}.`)),
      panel('Most frequent errors', table([
        { label: 'Transport', cell: (e) => e.transport },
        { label: 'Class', cell: (e) => e.class },
        { label: 'Error', cell: (e) => h('span', { class: 'mono' }, e.error) },
        { label: 'Count', num: true, cell: (e) => num(e.count) },
      ], failures.topErrors, { empty: 'No failures in this window.' }))),
    panel('Bottlenecks', bottlenecks.findings.length === 0
      ? h('p', { class: 'muted' }, 'No bottleneck in this window.')
      : h('ul', { class: 'findings' }, bottlenecks.findings.map((f) => h('li', {}, badge(f.severity, f.severity === 'critical' ? 'bad' : f.severity === 'warning' ? 'warn' : 'info'), ' ', h('strong', {}, f.transport), ': ', f.message))),
    table([
      { label: 'Transport', cell: (t) => t.transport },
      { label: 'Queue wait', num: true, cell: (t) => ms(t.averageQueueWaitMs) },
      { label: 'Processing', num: true, cell: (t) => ms(t.averageProcessingMs) },
      { label: 'Delivery', num: true, cell: (t) => ms(t.averageDeliveryMs) },
      { label: 'Rate-limited share', num: true, cell: (t) => pct(t.rateLimitedShareOfWait) },
      { label: 'Peak rate-limit use', num: true, cell: (t) => pct(t.peakRateLimitUse) },
      { label: 'Breaker open', num: true, cell: (t) => pct(t.breakerOpenShare) },
    ], bottlenecks.transports)),
    h('div', { class: 'grid two' },
      panel('Top bounce reasons', table([
        { label: 'Type', cell: (r) => r.bounceType },
        { label: 'Reason', cell: (r) => r.reason },
        { label: 'Count', num: true, cell: (r) => num(r.count) },
      ], deliverability.topBounceReasons, { empty: 'No bounces in this window.' })),
      panel('Top bounce domains', table([
        { label: 'Domain', cell: (r) => r.domain },
        { label: 'Hard', num: true, cell: (r) => num(r.bouncedHard) },
        { label: 'Soft', num: true, cell: (r) => num(r.bouncedSoft) },
      ], deliverability.topBounceDomains, { empty: 'No bounces in this window.' }))));
  const drawn = charts.map((c) => lineChart(c.node, c.lines, c.points, c.options));
  return () => drawn.forEach((c) => c.destroy());
}

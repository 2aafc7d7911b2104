// Time-series charts, drawn by uPlot (vendor/uplot, loaded by index.html
// as the global `uPlot`). A chart sizes itself to its container and takes
// its colours from the stylesheet, so light and dark both read.

import { h, fill } from './ui.js';

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

const PALETTE = ['--chart-1', '--chart-2', '--chart-3', '--chart-4'];

/** `1m`, `15m`, `6h`, `1d` in seconds. */
export function spanSeconds(text) {
  const match = /^(\d+)([smhd])$/.exec(text || '');
  if (!match) return 60;
  return Number(match[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[match[2]];
}

/**
 * Every bucket from `from` to `to` (RFC 3339), `step` seconds apart, with
 * the points given and zeros where none was reported: a series lists only
 * buckets that saw traffic, and a chart must show the quiet ones as 0.
 * `gaps` are keys (averages) that stay empty where nothing was measured.
 */
export function dense(points, from, to, step, keys, gaps = []) {
  const start = Math.floor(new Date(from).getTime() / 1000 / step) * step;
  const end = new Date(to).getTime() / 1000;
  const byTime = new Map(points.map((p) => [Math.floor(new Date(p.at).getTime() / 1000 / step) * step, p]));
  const rows = [];
  for (let t = start; t < end && rows.length < 2000; t += step) {
    const found = byTime.get(t);
    const row = { at: new Date(t * 1000).toISOString() };
    for (const key of keys) row[key] = found ? (found[key] ?? null) : 0;
    // A mean over nothing is no value, not zero.
    for (const key of gaps) row[key] = found ? (found[key] ?? null) : null;
    rows.push(row);
  }
  return rows;
}

/**
 * A line chart in `container`. `points` is [{at: RFC 3339, ...}], `lines`
 * is [{key, label}] naming which fields to draw. Returns {update(points),
 * destroy()}; update redraws in place, so a live chart keeps its size and
 * the reader's place.
 */
export function lineChart(container, lines, points, { yLabel = '', format = (v) => v } = {}) {
  let plot = null;
  // What is drawn, for readers that cannot see a canvas (and for tests).
  const mark = (rows) => {
    container.dataset.points = String(rows.length);
    container.dataset.total = String(rows.reduce((sum, p) => sum + (Number(p[lines[0].key]) || 0), 0));
  };
  const data = (rows) => [
    rows.map((p) => new Date(p.at).getTime() / 1000),
    ...lines.map((line) => rows.map((p) => (p[line.key] === undefined ? null : p[line.key]))),
  ];
  const width = () => Math.max(260, container.clientWidth || 600);
  const axisColour = cssVar('--muted');
  const gridColour = cssVar('--line');
  const axis = { stroke: axisColour, grid: { stroke: gridColour, width: 1 }, ticks: { stroke: gridColour } };
  const options = () => ({
    width: width(),
    height: 220,
    cursor: { drag: { x: false, y: false } },
    legend: { live: false },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    axes: [axis, { ...axis, label: yLabel, size: 60, values: (u, ticks) => ticks.map(format) }],
    series: [{}, ...lines.map((line, i) => ({
      label: line.label,
      stroke: cssVar(PALETTE[i % PALETTE.length]),
      width: 2,
      points: { show: false },
      value: (u, v) => (v === null ? '–' : format(v)),
    }))],
  });
  const draw = (rows) => {
    if (plot) { plot.destroy(); plot = null; }
    mark(rows);
    if (!rows.length) {
      fill(container, h('div', { class: 'chart-empty' }, 'No data in this window yet.'));
      return;
    }
    fill(container);
    plot = new window.uPlot(options(), data(rows), container);
  };
  draw(points);
  let current = points;
  const resize = new ResizeObserver(() => { if (plot) plot.setSize({ width: width(), height: 220 }); });
  resize.observe(container);
  return {
    update(rows) {
      mark(rows);
      const sameShape = plot && rows.length && current.length;
      current = rows;
      if (sameShape) plot.setData(data(rows));
      else draw(rows);
    },
    destroy() { resize.disconnect(); if (plot) plot.destroy(); },
  };
}

// #/assessment: one month's indicators per unit (street office, grid) and the ranking, as a table
// and a bar chart of the scores, from GET /assessment; the CSV report through GET /assessment/csv.

import {api, download, request} from '../api.js';
import {add, h, s, toast} from '../dom.js';
import {fmtNumber, fmtPercent, t} from '../i18n.js';

const COUNTS = ['dispatched', 'returned', 'on_hold', 'due', 'disposed', 'disposed_on_time', 'overdue_pending',
  'to_close', 'closed', 'closed_on_time', 'reworked', 'postponed'];
const RATES = ['disposal_rate', 'ontime_disposal_rate', 'closure_rate', 'ontime_closure_rate', 'rework_rate',
  'postponement_rate', 'overdue_pending_rate', 'dispatch_accuracy'];
const GROUPS = ['unit', 'street', 'grid'];

function thisMonth() {
  const d = new Date();
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}`;
}

/** A number as the API's JSON wrote it (floats keep their ".0"), for data-value. */
function raw(value, float) {
  if (value === null || value === undefined) return '';
  return float && Number.isInteger(value) ? value.toFixed(1) : String(value);
}

function cell(field, value, text, float = false) {
  return h('td', {class: 'num', 'data-field': field, 'data-value': raw(value, float)}, text);
}

function table(data) {
  const head = h('tr', {},
    h('th', {class: 'num'}, t('assessment.rank')), h('th', {}, t(`assessment.by.${data.by}`)),
    h('th', {class: 'num'}, t('assessment.score')),
    COUNTS.map((f) => h('th', {class: 'num', title: t(`assessment.help.${f}`)}, t(`assessment.${f}`))),
    RATES.map((f) => h('th', {class: 'num'}, t(`assessment.${f}`))));
  const rows = data.rows.map((r) => h('tr', {'data-test': 'assessment-row', 'data-key': r.key},
    cell('rank', r.rank, r.rank ?? '—'),
    h('td', {}, r.name, r.name !== r.key ? h('div', {class: 'muted'}, r.key) : null),
    cell('score', r.score, fmtNumber(r.score, 1), true),
    COUNTS.map((f) => cell(f, r[f], fmtNumber(r[f]))),
    RATES.map((f) => cell(f, r[f], fmtPercent(r[f]), true))));
  return h('div', {class: 'table-wrap'}, h('table', {'data-test': 'assessment-table', 'data-month': data.month, 'data-by': data.by},
    h('thead', {}, head), h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', {colspan: 3 + COUNTS.length + RATES.length, class: 'muted'}, t('assessment.none'))))));
}

/** Horizontal bars of the scores (0-100), in rank order. */
function chart(data) {
  const rows = data.rows.filter((r) => r.score !== null);
  if (!rows.length) return null;
  const bar = 26;
  const left = 220;
  const width = 1100;
  const height = rows.length * bar + 30;
  const x = (v) => left + (v / 100) * (width - left - 50);
  const ticks = [0, 25, 50, 75, 100].map((v) => s('g', {},
    s('line', {x1: x(v), x2: x(v), y1: 0, y2: height - 20, stroke: '#e3e7ec'}),
    s('text', {x: x(v), y: height - 6, 'text-anchor': 'middle'}, String(v))));
  const bars = rows.map((r, i) => {
    const y = i * bar + 4;
    const name = r.name.length > 14 ? `${r.name.slice(0, 13)}…` : r.name;
    return s('g', {'data-key': r.key},
      s('text', {x: left - 8, y: y + 15, 'text-anchor': 'end', class: 'label'}, `${r.rank}. ${name}`),
      s('rect', {class: 'bar', x: left, y, width: Math.max(1, x(r.score) - left), height: bar - 8, rx: 2}),
      s('text', {x: x(r.score) + 6, y: y + 15, class: 'label'}, fmtNumber(r.score, 1)),
      s('title', {}, `${r.name}: ${fmtNumber(r.score, 1)}`));
  });
  return h('div', {class: 'card chart'}, h('h2', {}, t('assessment.chart')),
    s('svg', {viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': t('assessment.chart')}, ticks, bars));
}

function weights(w) {
  const parts = Object.entries(w).map(([k, v]) => `${fmtNumber(v)}·${t(`assessment.weight.${k}`)}`);
  return h('p', {class: 'muted'}, `${t('assessment.score')} = ${parts.join(' + ')}`);
}

export async function render(root, params, ctx) {
  const month = /^\d{4}-\d{2}$/.test(params.query.get('month') || '') ? params.query.get('month') : thisMonth();
  const by = GROUPS.includes(params.query.get('by')) ? params.query.get('by') : 'unit';
  const monthInput = h('input', {id: 'a-month', type: 'month', value: month, required: true});
  const bySelect = h('select', {id: 'a-by'}, GROUPS.map((g) => h('option', {value: g, selected: g === by}, t(`assessment.by.${g}`))));
  const go = () => ctx.go(`#/assessment?month=${monthInput.value || month}&by=${bySelect.value}`);
  monthInput.addEventListener('change', go);
  bySelect.addEventListener('change', go);
  const csv = h('button', {type: 'button', id: 'a-csv', onclick: async () => {
    csv.disabled = true;
    try {
      const res = await request('GET', '/assessment/csv', {query: {month, by}, raw: true});
      download(await res.blob(), `citywatch-assessment-${month}-${by}.csv`);
    } catch (err) {
      toast(err.message, 'error');
    } finally {
      csv.disabled = false;
    }
  }}, t('assessment.csv'));
  root.append(h('h1', {}, t('page.assessment')),
    h('div', {class: 'card row'},
      h('div', {}, h('label', {for: 'a-month'}, t('assessment.month')), monthInput),
      h('div', {}, h('label', {for: 'a-by'}, t('assessment.group')), bySelect),
      h('span', {class: 'spacer'}), csv));
  const data = await api.get('/assessment', {month, by});
  if (!ctx.current()) return;
  add(root, weights(data.weights), chart(data), table(data));
}

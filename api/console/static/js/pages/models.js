// #/models (the data team): which model serves which rule, each model of the manifest with its
// metrics and card, the promotion history, and what the collection of frames holds (GET /models).

import {api} from '../api.js';
import {add, h} from '../dom.js';
import {fmtNumber, fmtTime, t, tv} from '../i18n.js';

const ap = (v) => (v === null || v === undefined ? '—' : fmtNumber(v, 3));

function tableOf(cols, rows, attrs = {}) {
  return h('div', {class: 'table-wrap'}, h('table', attrs,
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', {class: c.num ? 'num' : null}, c.label)))),
    h('tbody', {}, rows)));
}

function rules(view) {
  const rows = view.rules.map((r) => h('tr', {'data-rule': r.rule},
    h('td', {}, tv('rule', r.rule)), h('td', {}, r.model || t('models.no_default')),
    h('td', {}, Object.entries(r.streams).map(([stream, model]) => h('div', {}, `${stream}: ${model}`)))));
  return h('div', {class: 'card'}, h('h2', {}, t('models.rules')),
    h('p', {class: 'muted'}, view.source ? t('models.rules_from', {file: view.source}) : t('models.rules_no_file')),
    view.error ? h('p', {class: 'error'}, view.error) : null,
    tableOf([{label: t('models.rule')}, {label: t('models.model')}, {label: t('models.stream_overrides')}], rows, {id: 'rule-models'}));
}

function metrics(m) {
  if (!m) return h('p', {class: 'muted'}, t('models.no_metrics'));
  const classes = Object.keys(m.per_class || {});
  const views = Object.entries(m.per_view || {});
  const cols = [{label: t('models.split')}, {label: 'mAP50', num: true}, ...classes.map((c) => ({label: c, num: true})), {label: t('models.images'), num: true}];
  const row = (name, v) => h('tr', {}, h('td', {}, name), h('td', {class: 'num'}, ap(v.map50)),
    classes.map((c) => h('td', {class: 'num'}, ap(v.per_class?.[c]))), h('td', {class: 'num'}, v.images ?? '—'));
  return add(h('div', {}),
    h('p', {}, `mAP50 ${ap(m.map50)} · mAP50-95 ${ap(m.map50_95)}${m.split ? ` · ${m.split}` : ''}`),
    tableOf(cols, [row(m.split || t('models.all'), m), ...views.map(([name, v]) => row(name, v))]));
}

function model(m) {
  const labels = m.classes.map((c) => (m.rule_labels[c] ? `${c} → ${tv('label', m.rule_labels[c])}` : c)).join(', ');
  return h('article', {class: 'card model', 'data-model': m.ref},
    h('h2', {}, m.ref, ' ', m.default ? h('span', {class: 'badge', 'data-status': 'closed'}, t('models.default')) : null),
    h('dl', {class: 'facts'},
      h('dt', {}, t('models.runtime')), h('dd', {}, `${m.backend} · ${m.precision} · ${m.imgsz} px`),
      h('dt', {}, t('models.classes')), h('dd', {}, labels),
      h('dt', {}, t('models.exports')), h('dd', {}, m.exports.join(', ') || '—'),
      h('dt', {}, t('models.created')), h('dd', {}, fmtTime(m.created)),
      m.data_hash ? [h('dt', {}, t('models.data_hash')), h('dd', {}, h('code', {}, m.data_hash.slice(0, 16)))] : null,
      m.source ? [h('dt', {}, t('models.source')), h('dd', {}, m.source)] : null,
      m.licence ? [h('dt', {}, t('models.licence')), h('dd', {}, m.licence)] : null),
    h('h3', {}, t('models.metrics')), metrics(m.metrics),
    h('details', {}, h('summary', {}, t('models.card', {file: m.card_path})),
      h('pre', {class: 'card-text'}, m.card ?? t('models.card_missing'))));
}

function history(items) {
  const cols = ['at', 'by', 'action', 'change', 'reason'].map((c) => ({label: t(`models.history.${c}`)}));
  const rows = [...items].reverse().map((r) => h('tr', {},
    h('td', {}, fmtTime(r.at)), h('td', {}, r.by), h('td', {}, t(`models.history.${r.action}`), r.forced ? h('span', {class: 'badge overdue'}, t('models.forced')) : null),
    h('td', {}, `${r.from || '—'} → ${r.to}`),
    h('td', {}, r.reason || '', (r.failures || []).map((f) => h('div', {class: 'muted'},
      `${f.figure}: ${ap(f.current)} → ${ap(f.candidate)}`)))));
  return h('div', {class: 'card'}, h('h2', {}, t('models.promotions')),
    items.length ? tableOf(cols, rows, {id: 'model-history'}) : h('p', {class: 'muted'}, t('models.no_history')));
}

function collection(c) {
  if (!c) return h('div', {class: 'card'}, h('h2', {}, t('models.collection')), h('p', {class: 'muted'}, t('models.no_collection')));
  const cols = [t('models.stream'), t('models.frames'), t('models.reasons'), t('models.verdicts'), t('models.labelled'), t('models.last')]
    .map((label, i) => ({label, num: i === 1 || i === 4}));
  const rows = Object.entries(c.streams).map(([stream, x]) => h('tr', {'data-stream': stream},
    h('td', {}, stream), h('td', {class: 'num'}, fmtNumber(x.frames)),
    h('td', {}, Object.entries(x.reasons).map(([k, v]) => `${t(`models.reason.${k}`)} ${v}`).join(' · ')),
    h('td', {}, Object.entries(x.verdicts).map(([k, v]) => `${t(`models.verdict.${k}`)} ${v}`).join(' · ') || '—'),
    h('td', {class: 'num'}, fmtNumber(x.labelled)), h('td', {}, fmtTime(x.last))));
  return h('div', {class: 'card'}, h('h2', {}, t('models.collection')),
    h('p', {class: 'muted'}, t('models.collection_summary', {dir: c.dir, frames: fmtNumber(c.frames), unreadable: fmtNumber(c.unreadable)}),
      c.truncated ? ` ${t('models.truncated')}` : ''),
    c.error ? h('p', {class: 'error'}, c.error) : null,
    tableOf(cols, rows, {id: 'collection'}));
}

export async function render(root, params, ctx) {
  const view = await api.get('/models');
  if (!ctx.current()) return;
  add(root, h('h1', {}, t('page.models')),
    h('p', {class: 'muted'}, t('models.manifest', {file: view.manifest, ref: view.default_ref || '—'})),
    view.error ? h('p', {class: 'notice error'}, view.error) : null,
    rules(view.rules), view.models.map(model), history(view.history), collection(view.collection));
}

// #/cases: the case list, newest first, with filters (kept in the address), counts per status,
// pages, and live updates: a changed row is redrawn in place, new cases appear on page 1.

import {api} from '../api.js';
import {clear, debounce, h} from '../dom.js';
import {fmtNumber, fmtTime, t, tv} from '../i18n.js';
import {RULES, SOURCES, STATUSES} from '../vocab.js';

const PAGE_SIZE = 25;
const FILTERS = ['status', 'rule', 'source', 'stream', 'unit', 'since', 'until'];

/** The API's query from the page's: dates become the reader's local midnights. */
function apiQuery(filters) {
  const query = {};
  for (const key of FILTERS) if (filters[key]) query[key] = filters[key];
  if (filters.since) query.since = new Date(`${filters.since}T00:00`).toISOString();
  if (filters.until) {
    const end = new Date(`${filters.until}T00:00`);
    end.setDate(end.getDate() + 1);
    query.until = end.toISOString();
  }
  return query;
}

function hashOf(filters, page) {
  const q = new URLSearchParams();
  for (const key of FILTERS) if (filters[key]) q.set(key, filters[key]);
  if (page > 1) q.set('page', page);
  const text = q.toString();
  return text ? `#/cases?${text}` : '#/cases';
}

export function statusBadge(status, test = null) {
  return h('span', {class: 'badge', 'data-status': status, 'data-test': test}, tv('status', status));
}

function place(c) {
  return c.address || c.road || c.grid || (c.lat !== null && c.lat !== undefined ? `${c.lat.toFixed(5)}, ${c.lon.toFixed(5)}` : '—');
}

function row(c) {
  const flags = [
    c.overdue ? h('span', {class: 'badge overdue'}, t('case.overdue')) : null,
    c.on_hold ? h('span', {class: 'badge'}, t('case.on_hold')) : null,
    c.rework_count ? h('span', {class: 'badge'}, t('case.reworked', {n: c.rework_count})) : null,
  ];
  return h('tr', {class: 'link', 'data-test': 'case-row', 'data-case-id': c.id, 'data-status': c.status, onclick: () => { location.hash = `#/cases/${c.id}`; }},
    h('td', {class: 'num'}, h('a', {href: `#/cases/${c.id}`}, String(c.id))),
    h('td', {}, statusBadge(c.status)),
    h('td', {}, tv('rule', c.rule)),
    h('td', {class: 'wide'}, tv('source', c.source)),
    h('td', {}, c.stream ? h('div', {}, c.stream) : null, h('div', {class: 'muted'}, place(c))),
    h('td', {class: 'wide'}, c.unit || '—'),
    h('td', {}, fmtTime(c.first_seen)),
    h('td', {class: 'wide'}, c.deadline_at ? fmtTime(c.deadline_at) : '—'),
    h('td', {}, flags),
  );
}

function select(name, values, group, current) {
  return h('select', {id: `f-${name}`, name},
    h('option', {value: ''}, t('cases.any')),
    values.map((v) => h('option', {value: v, selected: v === current}, tv(group, v))));
}

function field(name, control) {
  return h('div', {}, h('label', {for: control.id}, t(`cases.filter.${name}`)), control);
}

export async function render(root, params, ctx) {
  const q = params.query;
  const filters = Object.fromEntries(FILTERS.map((k) => [k, q.get(k) || '']));
  const page = Math.max(1, parseInt(q.get('page') || '1', 10) || 1);
  const isUnit = ctx.me.role === 'field_unit';

  const form = h('form', {class: 'filters card', id: 'case-filters'},
    field('status', select('status', STATUSES, 'status', filters.status)),
    field('rule', select('rule', RULES, 'rule', filters.rule)),
    field('source', select('source', SOURCES, 'source', filters.source)),
    field('stream', h('input', {id: 'f-stream', name: 'stream', value: filters.stream, maxlength: 64})),
    isUnit ? null : field('unit', h('input', {id: 'f-unit', name: 'unit', value: filters.unit, maxlength: 64})),
    field('since', h('input', {id: 'f-since', name: 'since', type: 'date', value: filters.since})),
    field('until', h('input', {id: 'f-until', name: 'until', type: 'date', value: filters.until})),
    h('div', {class: 'row'},
      h('button', {type: 'submit', class: 'primary'}, t('cases.apply')),
      h('button', {type: 'button', onclick: () => ctx.go('#/cases')}, t('cases.reset'))),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = new FormData(form);
    ctx.go(hashOf(Object.fromEntries(FILTERS.map((k) => [k, (data.get(k) || '').trim()])), 1));
  });

  const chips = h('div', {class: 'chips', id: 'status-counts', 'aria-label': t('cases.counts')});
  const tbody = h('tbody', {id: 'case-rows'});
  const summary = h('span', {class: 'muted', id: 'case-count'});
  const pager = h('div', {class: 'pager'});
  const table = h('div', {class: 'table-wrap'}, h('table', {class: 'cases'},
    h('thead', {}, h('tr', {},
      ['id', 'status', 'rule', 'source', 'place', 'unit', 'first_seen', 'deadline', 'flags'].map((c) => h('th', {
        class: ['source', 'unit', 'deadline'].includes(c) ? 'wide' : (c === 'id' ? 'num' : null),
      }, t(`cases.col.${c}`))))),
    tbody));
  root.append(h('div', {class: 'row'}, h('h1', {}, t('page.cases')), h('span', {class: 'spacer'}), summary),
    form, chips, table, pager);

  const base = apiQuery(filters);

  async function loadCounts() {
    const {status, ...others} = base;
    const answers = await Promise.all(STATUSES.map((s) => api.get('/cases', {...others, status: s, page_size: 1})
      .then((r) => [s, r]).catch(() => [s, null])));
    if (!ctx.current()) return;
    clear(chips);
    for (const [s, r] of answers) {
      if (!r) continue;
      const n = r.count_exact ? fmtNumber(r.count) : `${fmtNumber(r.count)}+`;
      chips.append(h('button', {
        type: 'button', class: 'chip', 'data-status': s, 'aria-pressed': String(filters.status === s),
        onclick: () => ctx.go(hashOf({...filters, status: filters.status === s ? '' : s}, 1)),
      }, tv('status', s), h('span', {class: 'n'}, n)));
    }
  }

  async function loadPage() {
    const data = await api.get('/cases', {...base, page, page_size: PAGE_SIZE});
    if (!ctx.current()) return;
    clear(tbody);
    if (!data.data.length) tbody.append(h('tr', {}, h('td', {colspan: 9, class: 'muted'}, t('cases.none'))));
    for (const c of data.data) tbody.append(row(c));
    const pages = Math.max(1, Math.ceil(data.count / PAGE_SIZE));
    summary.textContent = t('cases.total', {n: `${fmtNumber(data.count)}${data.count_exact ? '' : '+'}`});
    clear(pager).append(
      h('button', {type: 'button', disabled: page <= 1, onclick: () => ctx.go(hashOf(filters, page - 1))}, t('cases.prev')),
      h('span', {}, t('cases.page', {page, pages: data.count_exact ? pages : `${pages}+`})),
      h('button', {type: 'button', disabled: page >= pages, onclick: () => ctx.go(hashOf(filters, page + 1))}, t('cases.next')),
    );
  }

  const refreshCounts = debounce(() => loadCounts().catch(() => {}), 800);
  const refreshPage = debounce(() => loadPage().catch(() => {}), 800);
  ctx.onLeave(ctx.live.on('case', async (event) => {
    refreshCounts();
    const shown = tbody.querySelector(`tr[data-case-id="${event.id}"]`);
    if (!shown) {
      if (page === 1) refreshPage();
      return;
    }
    try {
      const fresh = await api.get(`/cases/${event.id}`);
      if (!ctx.current() || !shown.isConnected) return;
      const next = row(fresh);
      next.classList.add('flash');
      shown.replaceWith(next);
    } catch (err) {
      refreshPage();
    }
  }));

  await Promise.all([loadPage(), loadCounts()]);
}

// #/cases/{id}: the evidence with its boxes, before/after images, the facts, the actions the API
// allows this reader now, the history and the camera re-checks; redrawn live when the case changes.

import {api} from '../api.js';
import {debounce, h, replace, toast} from '../dom.js';
import {fmtTime, t, tv} from '../i18n.js';
import {actionsPanel} from './case_actions.js';
import {statusBadge} from './cases.js';
import {evidencePanel} from './case_evidence.js';

const DETECTOR_EVENTS = ['opened', 'updated', 'cleared', 'reported']; // their images are the 'before'

/** Images behind the credential as object URLs, revoked when the page is left. */
function imageLoader(ctx) {
  const urls = new Map();
  ctx.onLeave(() => urls.forEach((u) => URL.revokeObjectURL(u)));
  return async (path) => {
    if (!urls.has(path)) urls.set(path, URL.createObjectURL(await api.blob(path)));
    return urls.get(path);
  };
}

function img(load, path, alt) {
  const el = h('img', {alt, class: 'thumb', loading: 'lazy'});
  load(path).then((u) => { el.src = u; }).catch((e) => {
    el.alt = t(e?.status === 410 ? 'case.image_pruned' : 'case.image_missing'); // 410: pruned by retention
  });
  return el;
}

function facts(c) {
  const rows = [
    ['rule', tv('rule', c.rule)], ['source', tv('source', c.source)], ['stream', c.stream], ['zone', c.zone],
    ['address', c.address], ['grid', c.grid], ['road', c.road],
    ['position', c.lat !== null && c.lat !== undefined ? `${c.lat.toFixed(5)}, ${c.lon.toFixed(5)}` : null],
    ['first_seen', fmtTime(c.first_seen)], ['last_seen', fmtTime(c.last_seen)],
    ['violation_state', tv('violation', c.violation_state)],
    ['unit', c.unit], ['street', c.street], ['dispatched_at', c.dispatched_at && fmtTime(c.dispatched_at)],
    ['deadline_at', c.deadline_at && fmtTime(c.deadline_at)], ['disposed_at', c.disposed_at && fmtTime(c.disposed_at)],
    ['closed_at', c.closed_at && fmtTime(c.closed_at)], ['resolution', c.resolution && tv('resolution', c.resolution)],
    ['counts', t('case.counts', {rework: c.rework_count, postpone: c.postpone_count, ret: c.return_count, dup: c.duplicate_count})],
    ['model', c.model_name ? `${c.model_name}@${c.model_version}` : null],
    ['score', c.score_top !== null && c.score_top !== undefined ? `${c.score_median?.toFixed(2)} / ${c.score_top.toFixed(2)}` : null],
    ['corrected', c.corrected_at ? `${tv('label', c.corrected_label)} · ${c.corrected_by} · ${fmtTime(c.corrected_at)}` : null],
    ['description', c.description],
  ];
  const dl = h('dl', {class: 'facts'});
  for (const [key, value] of rows) {
    if (value === null || value === undefined || value === '') continue;
    dl.append(h('dt', {}, t(`case.fact.${key}`)), h('dd', {}, value));
  }
  if (c.merged_into_id) dl.append(h('dt', {}, t('case.fact.merged_into')), h('dd', {}, h('a', {href: `#/cases/${c.merged_into_id}`}, `#${c.merged_into_id}`)));
  if (c.recurrence_of_id) dl.append(h('dt', {}, t('case.fact.recurrence_of')), h('dd', {}, h('a', {href: `#/cases/${c.recurrence_of_id}`}, `#${c.recurrence_of_id}`)));
  return h('div', {class: 'card facts-card'}, h('h2', {}, t('case.facts')), dl);
}

/** Before: what opened the case. After: the re-check frame that closed it, else the latest photo
 * an event brought (the field unit's rectification photo, a re-check frame). */
function beforeAfter(c, events, load) {
  const lastPhoto = [...events].reverse().find((e) => e.evidence_url && !DETECTOR_EVENTS.includes(e.kind));
  const after = c.after_evidence_url
    ? {path: c.after_evidence_url, caption: t('case.after_recheck')}
    : lastPhoto ? {path: lastPhoto.evidence_url, caption: `${tv('event', lastPhoto.kind)} · ${fmtTime(lastPhoto.at)}`} : null;
  if (!c.evidence_url || !after) return null;
  return h('div', {class: 'card', id: 'before-after'}, h('h2', {}, t('case.before_after')),
    h('div', {class: 'pair'},
      h('figure', {}, img(load, c.evidence_url, t('case.before')), h('figcaption', {}, t('case.before'))),
      h('figure', {}, img(load, after.path, t('case.after')), h('figcaption', {}, `${t('case.after')}: ${after.caption}`))));
}

function history(events, load) {
  const list = h('ol', {class: 'history', id: 'case-history'});
  for (const e of events) {
    const change = e.from_status && e.to_status && e.from_status !== e.to_status
      ? ` ${tv('status', e.from_status)} → ${tv('status', e.to_status)}` : '';
    list.append(h('li', {'data-kind': e.kind},
      h('div', {class: 'when'}, `${fmtTime(e.at, true)} · ${e.actor}`),
      h('div', {}, h('strong', {}, tv('event', e.kind)), change),
      e.note ? h('div', {}, e.note) : null,
      e.evidence_url ? img(load, e.evidence_url, tv('event', e.kind)) : null));
  }
  return h('div', {class: 'card history-card'}, h('h2', {}, t('case.history')), list);
}

function rechecks(items) {
  if (!items.length) return null;
  const cols = ['purpose', 'status', 'result', 'attempts', 'created_at', 'answered_at', 'detector'];
  return h('div', {class: 'card rechecks-card'}, h('h2', {}, t('case.rechecks')), h('div', {class: 'table-wrap'}, h('table', {id: 'case-rechecks'},
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', {}, t(`recheck.${c}`))))),
    h('tbody', {}, items.map((r) => h('tr', {},
      h('td', {}, tv('purpose', r.purpose)), h('td', {}, tv('recheck_status', r.status)),
      h('td', {}, r.result ? tv('recheck_result', r.result) : '—'), h('td', {class: 'num'}, String(r.attempts)),
      h('td', {}, fmtTime(r.created_at)), h('td', {}, fmtTime(r.answered_at)), h('td', {}, r.detector || '—')))))));
}

export async function render(root, params, ctx) {
  const id = params.id;
  const load = imageLoader(ctx);
  let evidence = null;
  let digest = null;
  let panel = null;
  let lastOffered = null;
  const head = h('div', {class: 'case-head'});
  const left = h('div');
  const right = h('div');
  root.append(h('p', {}, h('a', {href: '#/cases'}, `← ${t('page.cases')}`)), head, h('div', {class: 'case-grid'}, left, right));

  async function correctBox(label, bbox) {
    await api.post(`/cases/${id}/correct`, {label, bbox}).catch((err) => {
      toast(err.message, 'error');
      throw err;
    });
    toast(t('case.corrected_ok'));
    reload();
  }

  async function draw() {
    const [c, events, actions, checks] = await Promise.all([
      api.get(`/cases/${id}`), api.get(`/cases/${id}/events`), api.get(`/cases/${id}/actions`),
      api.get(`/cases/${id}/rechecks`),
    ]);
    if (!ctx.current()) return;
    document.title = `${t('case.title', {id: c.id})} · ${t('app.title')}`;
    replace(head, h('h1', {}, t('case.title', {id: c.id})), statusBadge(c.status, 'case-status'),
      c.overdue ? h('span', {class: 'badge overdue'}, t('case.overdue')) : null,
      c.on_hold ? h('span', {class: 'badge'}, t('case.on_hold')) : null,
      h('span', {class: 'muted'}, `${tv('rule', c.rule)} · ${c.stream || tv('source', c.source)}`));
    const correct = actions.data.find((a) => a.action === 'correct') || null;
    if (!evidence || digest !== c.evidence_sha256) {
      digest = c.evidence_sha256;
      let image = null;
      if (c.evidence_url) image = await api.blob(c.evidence_url).then(createImageBitmap).catch(() => null);
      if (!ctx.current()) return;
      evidence = evidencePanel(image, c, correct, correctBox);
    } else {
      evidence.update(c, correct);
    }
    const offered = JSON.stringify(actions.data);
    if (offered !== lastOffered) { // unchanged: keep the panel, and whatever form is being filled in
      lastOffered = offered;
      panel = actionsPanel(actions.data, {
        onDone: (action) => {
          toast(t('action.done', {action: tv('action', action.action)}));
          reload();
        },
        onCorrect: () => evidence.startCorrecting(),
      });
    }
    replace(left, evidence.element, beforeAfter(c, events.data, load), rechecks(checks));
    replace(right, panel, facts(c), history(events.data, load));
  }

  const reload = debounce(() => draw().catch((err) => toast(err.message, 'error')), 300);
  ctx.onLeave(ctx.live.on('case', (event) => {
    if (String(event.id) === String(id)) reload();
  }));
  try {
    await draw();
  } catch (err) {
    if (!ctx.current()) return;
    root.append(h('p', {class: 'notice error', 'data-test': 'case-error'},
      err.status === 403 || err.status === 404 ? t('case.unavailable', {id, error: err.message}) : err.message));
  }
}

// #/streams: every camera with its state (live / stalled / failed and why), sample rate, lag, last
// frame and its latest snapshot with the zones drawn; states follow the `stream` live events,
// snapshots are fetched again every minute (the detector sends one a minute by default).

import {api} from '../api.js';
import {h, replace, toast} from '../dom.js';
import {fmtNumber, fmtTime, t, tv} from '../i18n.js';
import {ensureStyle, imageSize, snapshotFigure, snapshotUrl} from './zone_overlay.js';

const SNAPSHOT_EVERY_MS = 60_000;
const GOOD = new Set(['live']);
const BAD = new Set(['failed']);

/** The state badge: live green, failed red, the rest amber; the reason beside it. */
export function stateBadge(state) {
  if (!state) return h('span', {class: 'badge state', 'data-state': 'unknown'}, t('streams.state.unknown'));
  const kind = GOOD.has(state.state) ? 'good' : BAD.has(state.state) ? 'bad' : 'warn';
  return h('span', {class: `badge state ${kind}`, 'data-state': state.state}, tv('streams.state', state.state),
    state.reason ? ` · ${tv('streams.reason', state.reason)}` : '');
}

/** Sample rate, lag and the last frame, as one line. */
export function figures(state) {
  if (!state) return t('streams.no_state');
  const parts = [];
  if (state.sample_fps !== null && state.sample_fps !== undefined) {
    parts.push(t('streams.rate', {fps: fmtNumber(state.sample_fps, 2), every: fmtNumber(state.sample_interval_s ?? 0, 1)}));
  }
  if (state.lag_s !== null && state.lag_s !== undefined) parts.push(t('streams.lag', {s: fmtNumber(state.lag_s, 2)}));
  parts.push(t('streams.last_seen', {at: fmtTime(state.last_seen, true)}));
  return parts.join(' · ');
}

function card(stream, url, size) {
  const zones = stream.zones || [];
  const figure = snapshotFigure(url, size, {alt: t('streams.snapshot_of', {name: stream.name || stream.id})});
  const el = h('article', {class: 'card stream-card', 'data-test': 'stream-row', 'data-stream': stream.id,
    'data-state': stream.state ? stream.state.state : 'unknown'},
    h('div', {class: 'stream-head'},
      h('h2', {}, h('a', {href: `#/streams/${encodeURIComponent(stream.id)}`}, stream.name || stream.id)),
      h('span', {class: 'state-slot'}, stateBadge(stream.state))),
    h('p', {class: 'muted stream-id'}, stream.id, stream.enabled === false ? ` · ${t('streams.disabled')}` : '',
      stream.in_file ? '' : ` · ${t('streams.not_in_file')}`),
    figure.element,
    h('p', {class: 'figures'}, figures(stream.state)),
    h('p', {class: 'error last-error', hidden: !(stream.state && stream.state.last_error)}, stream.state?.last_error || ''),
    h('p', {class: 'muted'}, stream.zones === null ? t('streams.zones_unknown') : t('streams.zone_count', {n: zones.length}),
      ' · ', h('a', {href: `#/streams/${encodeURIComponent(stream.id)}`}, t('streams.edit_zones'))));
  requestAnimationFrame(() => figure.draw(zones));
  return {el, figure, stream};
}

export async function render(root, params, ctx) {
  ensureStyle();
  const head = h('div', {class: 'row'}, h('h1', {}, t('page.streams')));
  const note = h('div', {});
  const grid = h('div', {class: 'stream-grid', id: 'streams'});
  root.append(head, note, grid);
  const urls = new Map(); // stream id -> object URL of its snapshot
  const cards = new Map();
  ctx.onLeave(() => urls.forEach((u) => u && URL.revokeObjectURL(u)));

  async function snapshot(id) {
    const url = await snapshotUrl(id).catch(() => null);
    const old = urls.get(id);
    if (old) URL.revokeObjectURL(old);
    urls.set(id, url);
    return {url, size: await imageSize(url)};
  }

  async function load() {
    const view = await api.get('/streams');
    if (!ctx.current()) return;
    const shots = await Promise.all(view.data.map((st) => snapshot(st.id)));
    if (!ctx.current()) return;
    cards.clear();
    const made = view.data.map((st, i) => card(st, shots[i].url, shots[i].size));
    made.forEach((c) => cards.set(c.stream.id, c));
    replace(grid, made.length ? made.map((c) => c.el) : h('p', {class: 'muted'}, t('streams.none')));
    replace(note, view.file_error ? h('p', {class: 'notice error'}, view.file_error)
      : !view.zones_editable && view.zones_read_only_reason ? h('p', {class: 'notice'}, t('streams.read_only', {why: view.zones_read_only_reason})) : null);
  }

  ctx.onLeave(ctx.live.on('stream', (state) => {
    const c = cards.get(state.id);
    if (!c || state.state === 'removed') {
      load().catch((err) => toast(err.message, 'error'));
      return;
    }
    c.stream.state = state;
    c.el.dataset.state = state.state;
    replace(c.el.querySelector('.state-slot'), stateBadge(state));
    c.el.querySelector('.figures').textContent = figures(state);
    const last = c.el.querySelector('.last-error');
    last.textContent = state.last_error || '';
    last.hidden = !state.last_error;
  }));
  const timer = setInterval(() => { if (ctx.current()) load().catch(() => {}); }, SNAPSHOT_EVERY_MS);
  ctx.onLeave(() => clearInterval(timer));
  await load();
}

// #/streams/{id}: the zone editor. "New zone", then click the zone's corners on the latest snapshot
// (click the first corner again, press Enter or "Finish" to close it); select a zone to drag its
// corners, drag a side's middle dot to add one, delete a corner or the zone; pick its rules and their
// parameters. "Check" asks the API to judge the zones as `citywatch config check` would
// (PUT ?dry_run=true); "Save" writes them into the detector's streams.yaml (admin), which the running
// detector then applies. The API's problems are shown next to the zone they are about.

import {api} from '../api.js';
import {add, h, replace, s, toast} from '../dom.js';
import {t, tv} from '../i18n.js';
import {figures, stateBadge} from './streams.js';
import {RULES, ensureStyle, imageSize, snapshotFigure, snapshotUrl, zoneColour} from './zone_overlay.js';

/** The parameters the editor offers per rule (the rest of a zone's `params` is kept as it is). */
const PARAMS = {
  illegal_parking: ['dwell_s', 'grace_s', 'min_score'],
  street_vending: ['dwell_s', 'grace_s', 'min_score', 'active_hours'],
  illegal_structure: ['min_samples', 'grace_s', 'min_score'],
  unclean_road: ['dwell_s', 'grace_s', 'min_score', 'min_area'],
};
const NUMBER = /^-?\d+(\.\d+)?$/;
const CLOSE_PX = 12; // a click this near the first corner closes the zone being drawn

const round = (v) => Math.round(Math.min(Math.max(v, 0), 1) * 10000) / 10000;
const copy = (v) => JSON.parse(JSON.stringify(v));
const shown = (v) => (v === undefined || v === null ? '' : Array.isArray(v) ? v.join(', ') : String(v));

/** A parameter as typed -> its value in streams.yaml (a number when it reads as one; the API judges the rest). */
function parse(name, text) {
  const v = text.trim();
  if (!v) return undefined;
  if (name === 'active_hours') return v.split(',').map((w) => w.trim()).filter(Boolean);
  return NUMBER.test(v) ? Number(v) : v;
}

export async function render(root, params, ctx) {
  ensureStyle();
  const id = params.id;
  const view = await api.get('/streams');
  if (!ctx.current()) return;
  const stream = view.data.find((x) => x.id === id);
  if (!stream) {
    root.append(h('h1', {}, t('page.stream')), h('p', {class: 'notice error'}, t('zones.unknown_stream', {id})));
    return;
  }
  const url = await snapshotUrl(id).catch(() => null);
  if (url) ctx.onLeave(() => URL.revokeObjectURL(url));
  const size = await imageSize(url);
  if (!ctx.current()) return;
  const isAdmin = ctx.me && ctx.me.role === 'admin';
  const canSave = isAdmin && view.zones_editable && stream.in_file;
  // selected: index in zones; drawing: that zone is being drawn; vertex: its selected corner
  const st = {zones: copy(stream.zones || []), selected: null, drawing: false, vertex: null,
    problems: new Map(), general: [], dirty: false};

  const figure = snapshotFigure(url, size, {alt: t('streams.snapshot_of', {name: stream.name || id}),
    caption: url ? null : t('zones.blank_frame')});
  Object.assign(figure.svg.dataset, {test: 'zone-canvas', snapshot: url ? 'loaded' : 'none'});
  figure.element.classList.add('editor-figure');
  const stateSlot = h('span', {}, stateBadge(stream.state));
  const figs = h('span', {class: 'muted'}, figures(stream.state));
  const dirtyMark = h('span', {class: 'badge', hidden: true, 'data-test': 'zone-unsaved'}, t('zones.unsaved'));
  const tools = h('div', {class: 'row zone-tools'});
  const list = h('div', {class: 'zone-list', 'data-test': 'zone-list'});
  const form = h('div', {class: 'zone-form-slot'});
  const status = h('div', {});
  const checkBtn = h('button', {type: 'button', 'data-test': 'zone-check', onclick: () => send(true)}, t('zones.check'));
  const saveBtn = h('button', {type: 'button', class: 'primary', 'data-test': 'zone-save', disabled: !canSave,
    onclick: () => send(false)}, t('zones.save'));
  const why = !stream.in_file ? t('zones.not_in_file')
    : !view.zones_editable ? t('streams.read_only', {why: view.zones_read_only_reason || ''})
      : !isAdmin ? t('zones.admin_only') : null;

  add(root,
    h('div', {class: 'row stream-title'}, h('h1', {}, stream.name || id), stateSlot, dirtyMark),
    h('p', {}, h('a', {href: '#/streams'}, t('zones.back')), ' · ', h('span', {class: 'muted'}, id), ' · ', figs),
    why ? h('p', {class: 'notice', 'data-test': 'zones-read-only'}, why) : null,
    h('div', {class: 'zones-layout'},
      h('div', {class: 'card'}, tools, figure.element, h('p', {class: 'muted help'}, t('zones.help'))),
      h('div', {class: 'card zones-side'}, h('h2', {}, t('zones.title')), list,
        h('div', {class: 'row'}, h('button', {type: 'button', 'data-test': 'zone-new', onclick: startDrawing}, t('zones.new')),
          h('span', {class: 'spacer'}), checkBtn, saveBtn),
        status, form)));

  const zone = () => (st.selected === null ? null : st.zones[st.selected]);

  // -- the snapshot and the shapes -------------------------------------------------------------
  function handle(x, y, attrs) {
    return s('circle', {cx: x * size.width, cy: y * size.height, r: 7 * figure.scale(), class: 'handle', ...attrs});
  }

  function redraw() {
    const z = zone();
    const extra = [];
    const pts = z && Array.isArray(z.polygon) ? z.polygon : [];
    if (z && !st.drawing && pts.length >= 3) {
      pts.forEach(([x, y], i) => {
        const [nx, ny] = pts[(i + 1) % pts.length];
        extra.push(handle((x + nx) / 2, (y + ny) / 2, {class: 'handle mid', 'data-mid': i}));
      });
    }
    pts.forEach(([x, y], i) => extra.push(handle(x, y, {'data-vertex': i,
      class: `handle${i === st.vertex ? ' active' : ''}${st.drawing && i === 0 ? ' first' : ''}`})));
    figure.draw(st.zones, {selected: st.selected, invalid: new Set(st.problems.keys()), extra});
    replace(tools, st.drawing
      ? [h('span', {class: 'muted'}, t('zones.drawing', {n: pts.length})),
        h('button', {type: 'button', 'data-test': 'zone-finish', disabled: pts.length < 3, onclick: finishDrawing}, t('zones.finish')),
        h('button', {type: 'button', disabled: !pts.length, onclick: () => { pts.pop(); changed(); }}, t('zones.undo_point'))]
      : [h('span', {class: 'muted'}, z ? t('zones.editing', {id: z.id}) : t('zones.pick')),
        h('button', {type: 'button', 'data-test': 'zone-delete-point', disabled: !z || st.vertex === null || pts.length <= 3,
          onclick: deletePoint}, t('zones.delete_point'))]);
    dirtyMark.hidden = !st.dirty;
  }

  function changed() {
    st.dirty = true;
    replace(status);
    redraw();
    drawList();
  }

  function select(index) {
    if (st.drawing && index !== st.selected) st.drawing = false;
    st.selected = index;
    st.vertex = null;
    drawForm();
    drawList();
    redraw();
  }

  function startDrawing() {
    const taken = new Set(st.zones.map((z) => z.id));
    let n = st.zones.length + 1;
    while (taken.has(`zone-${n}`)) n += 1;
    st.zones.push({id: `zone-${n}`, polygon: [], rules: []});
    select(st.zones.length - 1);
    st.drawing = true;
    changed();
  }

  function finishDrawing() {
    st.drawing = false;
    redraw();
  }

  function deletePoint() {
    const z = zone();
    if (!z || st.vertex === null || z.polygon.length <= 3) return;
    z.polygon.splice(st.vertex, 1);
    st.vertex = null;
    changed();
  }

  function where(event) {
    const r = figure.svg.getBoundingClientRect();
    return [round((event.clientX - r.left) / r.width), round((event.clientY - r.top) / r.height)];
  }

  let drag = null;
  figure.svg.addEventListener('pointerdown', (event) => {
    const [x, y] = where(event);
    const z = zone();
    const data = event.target.dataset || {};
    if (st.drawing && z) {
      const first = z.polygon[0];
      const r = figure.svg.getBoundingClientRect();
      const near = first && Math.hypot((first[0] - x) * r.width, (first[1] - y) * r.height) < CLOSE_PX;
      if (near && z.polygon.length >= 3) finishDrawing();
      else {
        z.polygon.push([x, y]);
        changed();
      }
      return;
    }
    if (z && data.vertex !== undefined) {
      st.vertex = Number(data.vertex);
      drag = st.vertex;
    } else if (z && data.mid !== undefined) {
      st.vertex = Number(data.mid) + 1;
      z.polygon.splice(st.vertex, 0, [x, y]);
      drag = st.vertex;
      st.dirty = true;
    } else {
      const hit = event.target.closest ? event.target.closest('g.zone') : null;
      const index = hit ? st.zones.findIndex((q) => q.id === hit.dataset.zone) : -1;
      select(index < 0 ? null : index);
      return;
    }
    figure.svg.setPointerCapture(event.pointerId);
    redraw();
  });
  figure.svg.addEventListener('pointermove', (event) => {
    if (drag === null || !zone()) return;
    zone().polygon[drag] = where(event);
    st.dirty = true;
    redraw();
  });
  const stopDrag = () => {
    if (drag !== null) drawList();
    drag = null;
  };
  figure.svg.addEventListener('pointerup', stopDrag);
  figure.svg.addEventListener('pointercancel', stopDrag);
  const onKey = (event) => {
    if (event.target instanceof HTMLInputElement) return;
    if (event.key === 'Enter' && st.drawing) finishDrawing();
    else if ((event.key === 'Delete' || event.key === 'Backspace') && st.vertex !== null) deletePoint();
  };
  document.addEventListener('keydown', onKey);
  ctx.onLeave(() => document.removeEventListener('keydown', onKey));
  const onResize = () => redraw();
  window.addEventListener('resize', onResize);
  ctx.onLeave(() => window.removeEventListener('resize', onResize));

  // -- the list and the selected zone's form ---------------------------------------------------
  function problemList(items) {
    return items.length ? h('ul', {class: 'problems', 'data-test': 'zone-errors'}, items.map((p) =>
      h('li', {}, p.path ? [h('code', {}, p.path), ': '] : null, p.msg,
        p.hint ? h('div', {class: 'muted'}, t('zones.hint', {hint: p.hint})) : null))) : null;
  }

  function drawList() {
    const rows = st.zones.map((z, i) => {
      const problems = st.problems.get(i) || [];
      const swatch = h('span', {class: 'swatch'}, '■');
      swatch.style.color = zoneColour(z); // CSSOM, not a style attribute (the CSP)
      return h('button', {type: 'button', class: `zone-item${i === st.selected ? ' selected' : ''}${problems.length ? ' invalid' : ''}`,
        'data-test': 'zone-item', 'data-zone': z.id ?? '', onclick: () => select(i)},
      swatch, h('strong', {}, z.name || z.id || '—'), ' ',
      h('span', {class: 'muted'}, (z.rules || []).map((r) => tv('rule', r)).join(' · ') || t('zones.no_rules')),
      problems.length ? h('span', {class: 'badge overdue'}, t('zones.problem_count', {n: problems.length})) : null);
    });
    replace(list, rows.length ? rows : h('p', {class: 'muted'}, t('zones.none')),
      problemList(st.general));
  }

  function field(label, input) {
    return h('label', {class: 'field'}, label, input);
  }

  function paramInputs(z, rule) {
    const values = (z.params && z.params[rule]) || {};
    const offered = PARAMS[rule];
    const set = (name, text) => {
      const value = parse(name, text);
      const own = {...((z.params && z.params[rule]) || {})};
      if (value === undefined) delete own[name];
      else own[name] = value;
      z.params = {...(z.params || {})};
      if (Object.keys(own).length) z.params[rule] = own;
      else delete z.params[rule];
      if (!Object.keys(z.params).length) delete z.params;
      changed();
    };
    const others = Object.entries(values).filter(([name]) => !offered.includes(name));
    return h('fieldset', {class: 'params', 'data-rule': rule}, h('legend', {}, tv('rule', rule)),
      offered.map((name) => field(t(`zones.param.${name}`), h('input', {type: 'text', value: shown(values[name]),
        inputmode: name === 'active_hours' ? 'text' : 'decimal', placeholder: t('zones.default'),
        'data-test': 'zone-param', 'data-param': `${rule}.${name}`, onchange: (e) => set(name, e.target.value)}))),
      others.length ? h('p', {class: 'muted'}, t('zones.other_params', {list: others.map(([k, v]) => `${k}=${shown(v)}`).join(', ')})) : null);
  }

  function drawForm() {
    const z = zone();
    if (!z) {
      replace(form);
      return;
    }
    const index = st.selected;
    const paramsSlot = h('div', {class: 'params-slot'});
    const drawParams = () => replace(paramsSlot, (z.rules || []).filter((r) => PARAMS[r]).map((r) => paramInputs(z, r)));
    const rules = RULES.map((rule) => h('label', {class: 'check'}, h('input', {
      type: 'checkbox', value: rule, checked: (z.rules || []).includes(rule), 'data-test': 'zone-rule',
      onchange: (event) => {
        const on = new Set(z.rules || []);
        if (event.target.checked) on.add(rule);
        else {
          on.delete(rule);
          if (z.params) delete z.params[rule];
        }
        z.rules = [...RULES.filter((r) => on.has(r)), ...(z.rules || []).filter((r) => !RULES.includes(r) && on.has(r))];
        drawParams(); // only the parameters: the box just ticked stays the same element
        changed();
      },
    }), tv('rule', rule)));
    replace(form, h('section', {class: 'zone-form', 'data-test': 'zone-form', 'data-zone': index},
      h('div', {class: 'row'},
        field(t('zones.id'), h('input', {type: 'text', value: z.id ?? '', 'data-test': 'zone-id',
          oninput: (e) => { z.id = e.target.value.trim(); changed(); }})),
        field(t('zones.name'), h('input', {type: 'text', value: z.name ?? '', 'data-test': 'zone-name',
          oninput: (e) => { const v = e.target.value.trim(); if (v) z.name = v; else delete z.name; changed(); }}))),
      h('div', {class: 'chips rules'}, rules),
      paramsSlot,
      problemList(st.problems.get(index) || []),
      h('div', {class: 'row'}, h('span', {class: 'spacer'}), h('button', {type: 'button', class: 'danger', 'data-test': 'zone-delete',
        onclick: () => {
          st.zones.splice(index, 1);
          st.problems.clear();
          st.drawing = false;
          select(null);
          changed();
        }}, t('zones.delete')))));
    drawParams();
  }

  // -- judging and saving ------------------------------------------------------------------------
  async function send(dryRun) {
    st.drawing = false;
    const path = `/streams/${encodeURIComponent(id)}/zones${dryRun ? '?dry_run=true' : ''}`;
    checkBtn.disabled = true;
    saveBtn.disabled = true;
    let message = null;
    try {
      const answer = await api.put(path, st.zones);
      if (!ctx.current()) return;
      st.problems.clear();
      st.general = [];
      if (!dryRun) {
        st.zones = copy(answer.zones || []);
        st.dirty = false;
        st.selected = null;
        st.vertex = null;
      }
      message = h('p', {class: 'notice', 'data-test': dryRun ? 'zone-checked' : 'zone-saved'},
        dryRun ? t('zones.checked_ok') : t('zones.saved'));
    } catch (err) {
      if (!ctx.current()) return;
      st.problems.clear();
      st.general = [];
      if (err.status === 422 && err.body && Array.isArray(err.body.detail)) {
        for (const d of err.body.detail) {
          const index = Array.isArray(d.loc) && typeof d.loc[1] === 'number' ? d.loc[1] : null;
          const item = {path: d.path || (d.loc || []).slice(1).join('.'), msg: d.msg, hint: d.hint || ''};
          if (index === null || index >= st.zones.length) st.general.push(item);
          else st.problems.set(index, [...(st.problems.get(index) || []), item]);
        }
        const first = [...st.problems.keys()].sort((a, b) => a - b)[0];
        if (first !== undefined) st.selected = first;
        message = h('p', {class: 'notice error', 'data-test': 'zone-problems'}, t('zones.problems', {n: err.body.detail.length}));
      } else {
        message = h('p', {class: 'notice error', 'data-test': 'zone-failed'}, err.message);
        toast(err.message, 'error');
      }
    } finally {
      checkBtn.disabled = false;
      saveBtn.disabled = !canSave;
    }
    drawForm();
    drawList();
    redraw();
    replace(status, message);
  }

  ctx.onLeave(ctx.live.on('stream', (state) => {
    if (state.id !== id) return;
    replace(stateSlot, stateBadge(state));
    figs.textContent = figures(state);
  }));
  drawList();
  requestAnimationFrame(redraw);
}

// #/map: the open cases and the cameras on a plain grid of latitude and longitude (SVG, no tiles).
// Positions are projected into their bounding box; a district road file bundled with the console
// (named in data/map.json: GeoJSON LineString / MultiLineString / Polygon features) is drawn under them.

import {api} from '../api.js';
import {debounce, h, replace, s} from '../dom.js';
import {fmtNumber, t, tv} from '../i18n.js';
import {OPEN_STATUSES} from '../vocab.js';

const STEPS = [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5];

async function openCases() {
  const pages = await Promise.all(OPEN_STATUSES.map((status) => api.get('/cases', {status, page_size: 500})));
  return pages.flatMap((p) => p.data);
}

/** The cameras: GET /streams (names, states, a `location` where it gives one) where this reader
 * may read it; a camera without a location sits where its cases are. */
async function cameras(cases) {
  const seenAt = new Map();
  for (const c of cases) {
    if (c.stream && Number.isFinite(c.lat) && !seenAt.has(c.stream)) seenAt.set(c.stream, [c.lat, c.lon]);
  }
  let listed = [];
  try {
    listed = (await api.get('/streams')).data || [];
  } catch (err) {
    // a field unit may not list the streams: the cases' positions only
  }
  const found = new Map();
  for (const x of listed) {
    const loc = x.location || {};
    const pos = Number.isFinite(loc.lat) && Number.isFinite(loc.lon) ? [loc.lat, loc.lon] : seenAt.get(x.id);
    if (pos) found.set(x.id, {id: x.id, name: x.name, state: x.state?.state ?? null, lat: pos[0], lon: pos[1]});
  }
  for (const [id, [lat, lon]] of seenAt) if (!found.has(id)) found.set(id, {id, lat, lon});
  return [...found.values()];
}

/** The road file data/map.json names (none: the grid only). */
async function roads() {
  try {
    const config = await (await fetch(new URL('../../data/map.json', import.meta.url), {cache: 'no-store'})).json();
    if (!config.roads) return [];
    const res = await fetch(new URL(`../../data/${config.roads}`, import.meta.url), {cache: 'no-store'});
    if (!res.ok) return [];
    const features = (await res.json()).features || [];
    const lines = [];
    for (const f of features) {
      const g = f.geometry || {};
      const parts = g.type === 'LineString' ? [g.coordinates]
        : g.type === 'MultiLineString' || g.type === 'Polygon' ? g.coordinates
          : g.type === 'MultiPolygon' ? g.coordinates.flat() : [];
      for (const p of parts) lines.push({name: f.properties?.name, points: p});
    }
    return lines;
  } catch (err) {
    return [];
  }
}

/** Projection of [lon, lat] into a `width` px wide SVG: the box of the points, east-west scaled by
 * cos(latitude) so that a metre is as long both ways. */
function projection(points, width) {
  const lats = points.map((p) => p[1]);
  const lons = points.map((p) => p[0]);
  let [south, north, west, east] = [Math.min(...lats), Math.max(...lats), Math.min(...lons), Math.max(...lons)];
  const pad = Math.max(north - south, east - west, 0.002) * 0.12;
  [south, north, west, east] = [south - pad, north + pad, west - pad, east + pad];
  const k = Math.cos(((south + north) / 2) * Math.PI / 180);
  const most = Math.max(320, Math.min(600, width * 0.7));
  const scale = Math.min(width / ((east - west) * k), most / (north - south));
  const height = Math.max(320, (north - south) * scale);
  // widen the box to the drawing, so the grid's labels cover all of it
  const halfLon = width / scale / k / 2;
  const halfLat = height / scale / 2;
  const cx = (west + east) / 2;
  const cy = (south + north) / 2;
  return {
    width, height, scale, k, south: cy - halfLat, north: cy + halfLat, west: cx - halfLon, east: cx + halfLon,
    xy: ([lon, lat]) => [width / 2 + (lon - cx) * k * scale, height / 2 - (lat - cy) * scale],
  };
}

function grid(p) {
  // lines at least 50 px apart, labels of longitude at least 100 px (they are wider)
  const latStep = STEPS.find((x) => x * p.scale >= 50) || 10;
  const lonStep = STEPS.find((x) => x * p.scale * p.k >= 100) || 10;
  const digits = (step) => Math.max(0, -Math.floor(Math.log10(step)));
  const lines = [];
  for (let lat = Math.ceil(p.south / latStep) * latStep; lat <= p.north; lat += latStep) {
    const [, y] = p.xy([p.west, lat]);
    lines.push(s('line', {x1: 0, x2: p.width, y1: y, y2: y}), s('text', {x: 4, y: y - 3}, `${lat.toFixed(digits(latStep))}°N`));
  }
  for (let lon = Math.ceil(p.west / lonStep) * lonStep; lon <= p.east; lon += lonStep) {
    const [x] = p.xy([lon, p.south]);
    lines.push(s('line', {x1: x, x2: x, y1: 0, y2: p.height}), s('text', {x: x + 3, y: p.height - 4}, `${lon.toFixed(digits(lonStep))}°E`));
  }
  return s('g', {class: 'grid'}, lines);
}

const spot = (lat, lon) => `${lat.toFixed(5)},${lon.toFixed(5)}`;

/** Cases at one spot (one camera) fan out around it, so each can be clicked and the camera seen. */
function spread(cases, streams) {
  const seen = new Map(streams.map((x) => [spot(x.lat, x.lon), 1]));
  return cases.map((c) => {
    const key = spot(c.lat, c.lon);
    const n = seen.get(key) || 0;
    seen.set(key, n + 1);
    const angle = n * 2.4;
    const r = n ? 9 + 3 * Math.sqrt(n) : 0;
    return {c, dx: Math.cos(angle) * r, dy: Math.sin(angle) * r};
  });
}

function draw(cases, streams, lines, width) {
  const placed = cases.filter((c) => Number.isFinite(c.lat) && Number.isFinite(c.lon));
  const points = [...placed.map((c) => [c.lon, c.lat]), ...streams.map((x) => [x.lon, x.lat])];
  if (!points.length) lines.forEach((l) => points.push(...l.points));
  if (!points.length) return {svg: h('p', {class: 'muted'}, t('map.nothing')), placed};
  const p = projection(points, width);
  const roadPaths = lines.map((l) => s('path', {class: 'road', d: l.points.map((pt, i) => `${i ? 'L' : 'M'}${p.xy(pt).map((v) => v.toFixed(1)).join(' ')}`).join('')},
    l.name ? s('title', {}, l.name) : null));
  const cams = streams.map((x) => {
    const [cx, cy] = p.xy([x.lon, x.lat]);
    return s('g', {class: 'stream', 'data-stream': x.id},
      s('rect', {x: cx - 6, y: cy - 6, width: 12, height: 12, rx: 2}),
      s('text', {x: cx > p.width - 120 ? cx - 9 : cx + 9, y: cy - 8, class: 'label', 'text-anchor': cx > p.width - 120 ? 'end' : 'start'}, x.id),
      s('title', {}, `${x.name || x.id}${x.state ? ` · ${x.state}` : ''}`));
  });
  const marks = spread(placed, streams).map(({c, dx, dy}) => {
    const [cx, cy] = p.xy([c.lon, c.lat]);
    return s('a', {href: `#/cases/${c.id}`, 'data-case-id': c.id},
      s('circle', {class: 'case', 'data-status': c.status, cx: cx + dx, cy: cy + dy, r: 7}),
      s('title', {}, `#${c.id} · ${tv('rule', c.rule)} · ${tv('status', c.status)}${c.address ? ` · ${c.address}` : ''}`));
  });
  const svg = s('svg', {viewBox: `0 0 ${p.width} ${p.height.toFixed(0)}`, role: 'img', 'aria-label': t('page.map'), id: 'case-map'},
    s('rect', {x: 0, y: 0, width: p.width, height: p.height, fill: 'none'}), grid(p), s('g', {}, roadPaths), s('g', {}, cams), s('g', {}, marks));
  return {svg, placed};
}

function legend() {
  return h('div', {class: 'legend'},
    OPEN_STATUSES.map((st) => h('span', {}, h('span', {class: 'dot', 'data-status': st}), tv('status', st))),
    h('span', {}, h('span', {class: 'dot cam'}), t('map.camera')));
}

export async function render(root, params, ctx) {
  const summary = h('span', {class: 'muted', id: 'map-summary'});
  const holder = h('div', {class: 'map'});
  root.append(h('div', {class: 'row'}, h('h1', {}, t('page.map')), h('span', {class: 'spacer'}), summary), holder, legend());
  const lines = await roads();

  async function load() {
    const cases = await openCases();
    const streams = await cameras(cases);
    if (!ctx.current()) return;
    const {svg, placed} = draw(cases, streams, lines, Math.max(300, Math.round(holder.clientWidth || 1000)));
    replace(holder, svg);
    summary.textContent = t('map.summary', {cases: fmtNumber(cases.length), cameras: fmtNumber(streams.length),
      unplaced: fmtNumber(cases.length - placed.length)});
  }

  const reload = debounce(() => load().catch(() => {}), 1000);
  ctx.onLeave(ctx.live.on('case', reload));
  await load();
}

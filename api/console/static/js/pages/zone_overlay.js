// A stream's snapshot with its zones drawn over it (an SVG in the image's pixels), for the stream
// list and the zone editor. Zone points are fractions of the frame (0..1), as in streams.yaml.

import {api} from '../api.js';
import {h, s} from '../dom.js';
import {t, tv} from '../i18n.js';

export const RULES = ['illegal_parking', 'street_vending', 'illegal_structure', 'unclean_road'];
const COLOURS = {
  illegal_parking: '#ff3b30', street_vending: '#ff9500', illegal_structure: '#af52de', unclean_road: '#34c759',
};
const BLANK = {width: 1280, height: 720}; // no snapshot yet: a 16:9 frame

/** The colour of a zone: its first known rule's. */
export function zoneColour(zone) {
  const rule = (zone.rules || []).find((r) => COLOURS[r]);
  return rule ? COLOURS[rule] : '#0b5cad';
}

/** Loads the stylesheet of the stream pages once (the shell's console.css stays the shell's). */
export function ensureStyle() {
  if (document.querySelector('link[data-style="streams"]')) return;
  const href = new URL('../../css/streams.css', import.meta.url).href;
  document.head.append(h('link', {rel: 'stylesheet', href, 'data-style': 'streams'}));
}

/** The latest snapshot of a stream as an object URL (null: none yet); revoke it when done. */
export async function snapshotUrl(streamId) {
  try {
    return URL.createObjectURL(await api.blob(`/streams/${encodeURIComponent(streamId)}/snapshot`));
  } catch (err) {
    if (err.status === 404) return null;
    throw err;
  }
}

/** The image's size once loaded (the blank frame's without one). */
export function imageSize(url) {
  if (!url) return Promise.resolve({...BLANK});
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve({width: img.naturalWidth || BLANK.width, height: img.naturalHeight || BLANK.height});
    img.onerror = () => resolve({...BLANK});
    img.src = url;
  });
}

function pointsAttr(points, size) {
  return points.map(([x, y]) => `${x * size.width},${y * size.height}`).join(' ');
}

/** The polygon of one zone (with its label), in image pixels. */
export function zoneShape(zone, size, {selected = false, invalid = false, scale = 1} = {}) {
  const points = Array.isArray(zone.polygon) ? zone.polygon.filter((p) => Array.isArray(p) && p.length === 2) : [];
  const colour = invalid ? '#b3261e' : zoneColour(zone);
  const group = s('g', {class: `zone${selected ? ' selected' : ''}${invalid ? ' invalid' : ''}`, 'data-zone': zone.id});
  if (points.length >= 2) {
    group.append(s(points.length >= 3 ? 'polygon' : 'polyline', {
      points: pointsAttr(points, size), fill: points.length >= 3 ? colour : 'none', 'fill-opacity': selected ? 0.28 : 0.18,
      stroke: colour, 'stroke-width': (selected ? 3 : 2) * scale, 'stroke-dasharray': invalid ? `${8 * scale} ${5 * scale}` : null,
    }));
  }
  if (points.length) {
    const [x, y] = points[0];
    const label = [zone.name || zone.id, (zone.rules || []).map((r) => tv('rule', r)).join(' · ')].filter(Boolean).join(' — ');
    group.append(s('text', {x: x * size.width + 6 * scale, y: y * size.height + 16 * scale, 'font-size': 14 * scale,
      fill: '#fff', stroke: '#000', 'stroke-width': 3 * scale, 'paint-order': 'stroke', class: 'zone-label'}, label));
  }
  return group;
}

/**
 * A snapshot with zones drawn over it: {element, svg, size, draw(zones, opts)}. `url` may be null
 * (no snapshot yet: a grey frame of the stream's shape when known).
 */
export function snapshotFigure(url, size, {alt = '', caption = null} = {}) {
  const svg = s('svg', {viewBox: `0 0 ${size.width} ${size.height}`, class: 'zones-svg', role: 'img',
    'aria-label': alt, preserveAspectRatio: 'xMidYMid meet'});
  const image = url
    ? h('img', {src: url, alt, class: 'snapshot', draggable: 'false'})
    : h('div', {class: 'snapshot blank'}, h('span', {}, t('streams.no_snapshot')));
  image.style.aspectRatio = `${size.width} / ${size.height}`; // CSSOM, not a style attribute (the CSP)
  const element = h('figure', {class: 'snapshot-figure'}, h('div', {class: 'snapshot-stack'}, image, svg),
    caption ? h('figcaption', {class: 'muted'}, caption) : null);
  const scaleOf = () => size.width / (svg.clientWidth || size.width);
  function draw(zones, {selected = null, invalid = new Set(), extra = []} = {}) {
    const scale = scaleOf();
    svg.replaceChildren(...zones.map((z, i) => zoneShape(z, size, {selected: i === selected, invalid: invalid.has(i), scale})), ...extra);
  }
  return {element, svg, size, draw, scale: scaleOf};
}

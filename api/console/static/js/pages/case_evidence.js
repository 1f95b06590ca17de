// The evidence frame on a canvas: the detector's box (normalised bbox) in red and the desk's
// corrected box (pixels) in green; a reviewer may draw a new box and send it (POST .../correct).

import {h, replace} from '../dom.js';
import {t, tv} from '../i18n.js';

const DETECTION = '#ff3b30';
const CORRECTED = '#2bb673';

function drawBox(g, box, colour, text, dashed, scale) { // scale: image pixels per screen pixel
  const [x1, y1, x2, y2] = box;
  g.save();
  g.lineWidth = 3 * scale;
  g.strokeStyle = colour;
  if (dashed) g.setLineDash([10 * scale, 6 * scale]);
  g.strokeRect(x1, y1, x2 - x1, y2 - y1);
  if (text) {
    g.font = `${Math.round(15 * scale)}px system-ui, sans-serif`;
    const pad = 4 * scale;
    const w = g.measureText(text).width + pad * 2;
    const hgt = 20 * scale;
    const top = y1 - hgt < 0 ? y1 : y1 - hgt;
    g.setLineDash([]);
    g.fillStyle = colour;
    g.fillRect(x1, top, w, hgt);
    g.fillStyle = '#fff';
    g.fillText(text, x1 + pad, top + hgt - 5 * scale);
  }
  g.restore();
}

/**
 * The evidence panel. `image` is an ImageBitmap (or null: no evidence); `correct` the `correct`
 * action from GET /cases/{id}/actions (null: this reader may not correct); `onCorrect(label, bbox)`
 * sends a correction. Returns {element, update(caseData), startCorrecting()}.
 */
export function evidencePanel(image, caseData, correctAction, onCorrect) {
  let correct = correctAction;
  let current = caseData;
  let draft = null; // [x1, y1, x2, y2] being drawn, in image pixels
  let drawing = false;
  const canvas = h('canvas', {id: 'evidence-canvas', 'aria-label': t('case.evidence')});
  const legend = h('div', {class: 'legend'},
    h('span', {}, h('span', {class: 'sw det'}), t('case.box_detected')),
    h('span', {}, h('span', {class: 'sw fix'}), t('case.box_corrected')));
  const tools = h('div', {class: 'row', hidden: true, id: 'correct-tools'});
  const element = h('div', {class: 'card evidence'}, h('h2', {}, t('case.evidence')), canvas, legend, tools);
  if (!image) {
    canvas.hidden = true;
    legend.hidden = true;
    element.append(h('p', {class: 'muted'}, t('case.no_evidence')));
    return {element, update() {}, startCorrecting() {}};
  }
  canvas.width = image.width;
  canvas.height = image.height;
  const g = canvas.getContext('2d');

  function paint() {
    const scale = canvas.width / (canvas.clientWidth || canvas.width);
    g.drawImage(image, 0, 0);
    const c = current;
    if (c.bbox) {
      const [x1, y1, x2, y2] = c.bbox;
      const box = [x1 * image.width, y1 * image.height, x2 * image.width, y2 * image.height];
      const score = c.score_top !== null && c.score_top !== undefined ? ` ${c.score_top.toFixed(2)}` : '';
      drawBox(g, box, DETECTION, `${tv('label', c.label)}${score}`, false, scale);
    }
    if (c.corrected_bbox) drawBox(g, c.corrected_bbox, CORRECTED, tv('label', c.corrected_label), true, scale);
    if (draft) drawBox(g, draft, CORRECTED, t('case.new_box'), false, scale);
  }

  function point(event) {
    const r = canvas.getBoundingClientRect();
    const x = ((event.clientX - r.left) / r.width) * canvas.width;
    const y = ((event.clientY - r.top) / r.height) * canvas.height;
    return [Math.min(Math.max(x, 0), canvas.width), Math.min(Math.max(y, 0), canvas.height)];
  }

  let start = null;
  canvas.addEventListener('pointerdown', (event) => {
    if (!drawing) return;
    canvas.setPointerCapture(event.pointerId);
    start = point(event);
    draft = [...start, ...start];
    paint();
  });
  canvas.addEventListener('pointermove', (event) => {
    if (!drawing || !start) return;
    const [x, y] = point(event);
    draft = [Math.min(start[0], x), Math.min(start[1], y), Math.max(start[0], x), Math.max(start[1], y)];
    paint();
  });
  canvas.addEventListener('pointerup', () => { start = null; });

  function stop() {
    drawing = false;
    draft = null;
    canvas.classList.remove('drawing');
    tools.hidden = true;
    paint();
  }

  function startCorrecting() {
    if (!correct) return;
    drawing = true;
    draft = null;
    canvas.classList.add('drawing');
    const labelField = correct.fields.find((f) => f.name === 'label');
    const label = h('select', {id: 'correct-label'},
      (labelField?.choices || []).map((v) => h('option', {value: v, selected: v === (current.corrected_label || current.label)}, tv('label', v))));
    const save = h('button', {type: 'button', class: 'primary', id: 'correct-save', onclick: async () => {
      if (!draft || draft[2] - draft[0] < 2 || draft[3] - draft[1] < 2) {
        hint.textContent = t('case.draw_first');
        return;
      }
      save.disabled = true;
      try {
        await onCorrect(label.value, draft.map((v) => Math.round(v * 10) / 10));
        stop();
      } finally {
        save.disabled = false;
      }
    }}, t('case.save_box'));
    const hint = h('span', {class: 'muted'}, t('case.draw_hint'));
    replace(tools, h('label', {for: 'correct-label'}, t('field.label')), label, save,
      h('button', {type: 'button', onclick: stop}, t('action.cancel')), hint);
    tools.hidden = false;
    canvas.scrollIntoView({behavior: 'smooth', block: 'center'});
  }

  paint();
  new ResizeObserver(() => paint()).observe(canvas);
  return {
    element,
    update(next, nextCorrect) {
      current = next;
      correct = nextCorrect;
      paint();
    },
    startCorrecting,
  };
}

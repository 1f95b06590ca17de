// The case's actions exactly as GET /cases/{id}/actions lists them: one button each; a button
// opens the action's form, built from the fields the API names (a reason from its list, a unit,
// hours, a note, a photo taken with the phone's camera). `correct` hands over to the canvas.

import {api} from '../api.js';
import {h} from '../dom.js';
import {t, tv} from '../i18n.js';

const MAX_PHOTO_BYTES = 4 * 1024 * 1024;
const MAX_PHOTO_SIDE = 2560;

/** A JPEG the API takes: a large or non-JPEG picture is re-encoded smaller (no EXIF goes along). */
async function preparePhoto(file) {
  if (file.type === 'image/jpeg' && file.size <= MAX_PHOTO_BYTES) return file;
  const bitmap = await createImageBitmap(file);
  const k = Math.min(1, MAX_PHOTO_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement('canvas');
  canvas.width = Math.round(bitmap.width * k);
  canvas.height = Math.round(bitmap.height * k);
  canvas.getContext('2d').drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', 0.85));
  return new File([blob], 'photo.jpg', {type: 'image/jpeg'});
}

function choiceLabel(f, value) {
  if (f.labels && f.labels[value]) return `${f.labels[value]} (${value})`;
  return tv(`choice.${f.name}`, value);
}

function input(f, id) {
  const common = {id, name: f.name, required: f.required};
  if (f.kind === 'choice') {
    return h('select', common,
      f.required && f.default !== null ? null : h('option', {value: ''}, t('action.choose')),
      f.choices.map((v) => h('option', {value: v, selected: v === f.default}, choiceLabel(f, v))));
  }
  if (f.kind === 'number' || f.kind === 'integer') {
    return h('input', {
      ...common, type: 'number', inputmode: f.kind === 'integer' ? 'numeric' : 'decimal',
      min: f.minimum ?? null, max: f.maximum ?? null, step: f.kind === 'integer' ? '1' : 'any',
    });
  }
  if (f.kind === 'file') {
    return h('input', {...common, type: 'file', accept: f.accept || 'image/jpeg', capture: 'environment'});
  }
  return h('textarea', {...common, maxlength: f.max_length ?? null, rows: 3});
}

async function send(action, form) {
  const data = new FormData(form);
  if (action.content_type === 'multipart/form-data') {
    const body = new FormData();
    for (const f of action.fields) {
      const value = data.get(f.name);
      if (f.kind === 'file') {
        if (value && value.size) body.append(f.name, await preparePhoto(value), 'photo.jpg');
      } else if (value) body.append(f.name, value);
    }
    return api.postForm(action.path, body);
  }
  const json = {};
  for (const f of action.fields) {
    const value = (data.get(f.name) ?? '').toString().trim();
    if (value === '') continue;
    json[f.name] = f.kind === 'number' ? Number(value) : f.kind === 'integer' ? parseInt(value, 10) : value;
  }
  return api.post(action.path, json);
}

/**
 * The actions panel: `actions` from GET /cases/{id}/actions; `onDone(action, result)` after a
 * success; `onCorrect()` when the `correct` button is pressed.
 */
export function actionsPanel(actions, {onDone, onCorrect}) {
  const buttons = h('div', {class: 'actions', id: 'case-actions', 'data-test': 'case-actions'});
  const slot = h('div');
  const element = h('div', {class: 'card actions-card'}, h('h2', {}, t('case.actions')), buttons, slot);
  if (!actions.length) buttons.append(h('p', {class: 'muted'}, t('case.no_actions')));
  for (const action of actions) {
    const button = h('button', {type: 'button', 'data-test': 'action', 'data-action': action.action}, tv('action', action.action));
    if (action.action === 'correct') {
      button.addEventListener('click', onCorrect);
    } else {
      button.addEventListener('click', () => {
        const open = slot.firstChild?.dataset?.action === action.action;
        slot.replaceChildren();
        if (!open) slot.append(actionForm(action, onDone, () => slot.replaceChildren()));
      });
    }
    buttons.append(button);
  }
  buttons.dataset.ready = '';
  return element;
}

function actionForm(action, onDone, close) {
  const error = h('p', {class: 'error', role: 'alert', hidden: true, 'data-test': 'action-error'});
  const submit = h('button', {type: 'submit', class: 'primary', 'data-test': 'action-submit'}, t('action.confirm', {action: tv('action', action.action)}));
  const form = h('form', {class: 'action-form', 'data-test': 'action-form', 'data-action': action.action},
    h('h3', {}, tv('action', action.action), action.target ? h('span', {class: 'muted'}, ` → ${tv('status', action.target)}`) : null),
    action.fields.filter((f) => f.kind !== 'box').map((f) => {
      const id = `act-${action.action}-${f.name}`;
      return h('div', {}, h('label', {for: id}, t(`field.${f.name}`), f.required ? ' *' : ''), input(f, id));
    }),
    h('div', {class: 'row'}, submit, h('button', {type: 'button', onclick: close}, t('action.cancel'))),
    error);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      const result = await send(action, form);
      close();
      onDone(action, result);
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

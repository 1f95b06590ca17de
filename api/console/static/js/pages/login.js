// #/login: an API key -> POST /auth/token -> bearer token (sessionStorage) -> GET /auth/me.

import {signIn} from '../api.js';
import {h} from '../dom.js';

export async function render(root, params, ctx) {
  const {t} = ctx;
  const key = h('input', {
    id: 'login-key', name: 'key', 'data-test': 'login-key', type: 'password', required: true, autocomplete: 'off', spellcheck: 'false',
  });
  const error = h('p', {class: 'error', role: 'alert', hidden: true, 'data-test': 'login-error'});
  const button = h('button', {type: 'submit', class: 'primary', 'data-test': 'login-submit'}, t('login.submit'));
  const form = h('form', {class: 'card login', id: 'login-form'},
    h('h1', {}, t('login.title')),
    h('p', {class: 'muted'}, t('login.help')),
    h('label', {for: 'login-key'}, t('login.key')),
    key,
    button,
    error,
  );
  if (ctx.me) {
    form.append(h('p', {class: 'muted'}, t('login.signed_in_as', {name: ctx.me.name})));
  }
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    button.disabled = true;
    try {
      const me = await signIn(key.value.trim());
      key.value = '';
      ctx.signedIn(me);
      const next = params.query.get('next');
      const target = next && next.startsWith('#/') && !next.startsWith('#/login') ? next : ctx.home();
      if (target === '#/login') {
        error.textContent = t('login.no_pages', {role: t(`role.${me.role}`)});
        error.hidden = false;
      } else {
        ctx.go(target);
      }
    } catch (err) {
      error.textContent = err.status === 401 ? t('login.bad_key') : err.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  root.append(form);
  key.focus();
}

// The console's shell: the pages (PAGES, one table), the hash router, the sign-in guard, the
// navigation by role, the language switch and the live connection. A page is a module
// js/pages/<name>.js exporting render(root, params, ctx); see `context` below for ctx.

import {api, onUnauthorized, signOut, token} from './api.js';
import {clear, h, toast} from './dom.js';
import {getLang, initialLang, setLang, t, translateStatic} from './i18n.js';
import {Live} from './live.js';

const STAFF = ['admin', 'reviewer', 'dispatcher', 'field_unit'];
const DESK = ['admin', 'reviewer', 'dispatcher'];

/** Every page: its route (`:name` segments become params), module, the roles that may open it
 * (null: anyone, signed in or not), the title's i18n key, and whether the navigation lists it. */
export const PAGES = [
  {route: '#/login', module: './pages/login.js', roles: null, titleKey: 'page.login', nav: false},
  {route: '#/cases', module: './pages/cases.js', roles: STAFF, titleKey: 'page.cases', nav: true},
  {route: '#/cases/:id', module: './pages/case.js', roles: STAFF, titleKey: 'page.case', nav: false},
  {route: '#/map', module: './pages/map.js', roles: STAFF, titleKey: 'page.map', nav: true},
  {route: '#/streams', module: './pages/streams.js', roles: DESK, titleKey: 'page.streams', nav: true},
  {route: '#/streams/:id', module: './pages/zones.js', roles: DESK, titleKey: 'page.stream', nav: false},
  {route: '#/assessment', module: './pages/assessment.js', roles: STAFF, titleKey: 'page.assessment', nav: true},
  {route: '#/models', module: './pages/models.js', roles: DESK, titleKey: 'page.models', nav: true},
];

const state = {me: null, leave: [], seq: 0};
export const live = new Live();

/** '#/cases/12?status=closed' -> {page, params: {id: '12', query: URLSearchParams}} or null. */
export function match(hash) {
  const [path, search = ''] = (hash || '').split('?');
  const parts = path.split('/');
  for (const page of PAGES) {
    const want = page.route.split('/');
    if (want.length !== parts.length) continue;
    const params = {query: new URLSearchParams(search)};
    if (want.every((w, i) => (w.startsWith(':') ? (params[w.slice(1)] = decodeURIComponent(parts[i])) : w === parts[i]))) {
      return {page, params};
    }
  }
  return null;
}

export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

/** The first page the signed-in role may open. */
function home() {
  const page = PAGES.find((p) => p.nav && p.roles && state.me && p.roles.includes(state.me.role));
  return page ? page.route : '#/login';
}

function renderChrome() {
  const nav = clear(document.getElementById('nav'));
  const me = state.me;
  if (me) {
    for (const page of PAGES.filter((p) => p.nav && p.roles && p.roles.includes(me.role))) {
      nav.append(h('a', {href: page.route, 'data-route': page.route, 'data-test': 'nav-link'}, t(page.titleKey)));
    }
  }
  const who = document.getElementById('me');
  who.textContent = me ? `${me.name} · ${t(`role.${me.role}`)}${me.unit ? ` · ${me.unit}` : ''}` : '';
  who.dataset.role = me ? me.role : '';
  document.getElementById('signout').hidden = !me;
  markNav();
}

function markNav() {
  const current = (location.hash || '').split('?')[0];
  for (const a of document.querySelectorAll('#nav a')) {
    const here = current === a.dataset.route || current.startsWith(`${a.dataset.route}/`);
    if (here) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function leavePage() {
  for (const fn of state.leave.splice(0)) {
    try {
      fn();
    } catch (err) {
      console.error(err);
    }
  }
}

/** What a page gets besides its root element and params. */
function context(seq) {
  return {
    api,
    t,
    live,
    go,
    me: state.me,
    lang: getLang(),
    /** Runs fn when the page is left (stop live listeners, revoke object URLs...). */
    onLeave(fn) {
      if (seq === state.seq) state.leave.push(fn);
      else fn();
    },
    /** False once the reader has moved on: a slow answer must not draw over the next page. */
    current: () => seq === state.seq,
    signedIn: (me) => setMe(me),
    home,
  };
}

async function route() {
  const seq = ++state.seq;
  leavePage();
  const found = match(location.hash);
  if (!found) {
    go(state.me ? home() : '#/login');
    return;
  }
  const {page, params} = found;
  if (page.roles && !state.me) {
    go(`#/login?next=${encodeURIComponent(location.hash)}`);
    return;
  }
  markNav();
  document.getElementById('nav').dataset.open = 'false';
  document.title = `${t(page.titleKey)} · ${t('app.title')}`;
  const view = clear(document.getElementById('view'));
  const root = h('section', {class: 'page', 'data-page': page.route});
  view.append(root);
  if (page.roles && !page.roles.includes(state.me.role)) {
    root.append(h('p', {class: 'notice', 'data-test': 'forbidden'}, t('app.forbidden', {role: t(`role.${state.me.role}`)})));
    return;
  }
  try {
    const module = await import(page.module);
    if (seq !== state.seq) return;
    await module.render(root, params, context(seq));
    if (seq === state.seq && !root.querySelector('[data-test=page-ready]')) {
      // the browser tests wait for this: the page has drawn what it loaded
      const mark = [...root.children].find((el) => !el.dataset.test);
      if (mark) mark.dataset.test = 'page-ready';
    }
    // the page has drawn what it loaded (the browser tests wait for this; tests/browser)
    if (seq === state.seq) root.dataset.ready = location.hash;
  } catch (err) {
    if (seq !== state.seq) return;
    console.error(err);
    root.append(h('p', {class: 'notice error', 'data-test': 'page-error'}, err.status ? err.message : t('app.page_failed', {error: err.message})));
  }
}

function setMe(me) {
  state.me = me;
  renderChrome();
  if (me && STAFF.includes(me.role)) live.start();
  else live.stop();
}

function signOutNow(message) {
  signOut();
  setMe(null);
  if (message) toast(message, 'error');
  go('#/login');
}

async function start() {
  await setLang(initialLang());
  translateStatic();
  const select = document.getElementById('lang');
  select.value = getLang();
  select.addEventListener('change', async () => {
    await setLang(select.value);
    translateStatic();
    renderChrome();
    route();
  });
  document.getElementById('signout').addEventListener('click', () => signOutNow());
  const toggle = document.getElementById('nav-toggle');
  toggle.addEventListener('click', () => {
    const nav = document.getElementById('nav');
    nav.dataset.open = nav.dataset.open === 'true' ? 'false' : 'true';
    toggle.setAttribute('aria-expanded', nav.dataset.open);
  });
  const dot = document.getElementById('live-status');
  live.on('status', (status) => {
    dot.dataset.status = status;
    dot.dataset.i18nLabel = `live.${status}`;
    translateStatic(dot.parentElement);
  });
  onUnauthorized(() => signOutNow(t('login.expired')));
  if (token()) {
    try {
      state.me = await api.get('/auth/me');
    } catch (err) {
      signOut();
    }
  }
  setMe(state.me);
  window.addEventListener('hashchange', route);
  route();
}

start();

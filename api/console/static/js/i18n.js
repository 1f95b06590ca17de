// Every visible string goes through t(key). Dictionaries: ../i18n/<lang>.json; English fills gaps.

export const LANGS = ['zh', 'en'];
const STORE = 'citywatch.lang';
let lang = 'en';
let dict = {};
let fallback = {};

async function fetchDict(code) {
  const res = await fetch(new URL(`../i18n/${code}.json`, import.meta.url));
  if (!res.ok) throw new Error(`i18n/${code}.json: ${res.status}`);
  return res.json();
}

/** The stored choice, else the browser's language (Chinese or English). */
export function initialLang() {
  const stored = localStorage.getItem(STORE);
  if (LANGS.includes(stored)) return stored;
  return (navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

export async function setLang(code) {
  lang = LANGS.includes(code) ? code : 'en';
  localStorage.setItem(STORE, lang);
  if (!Object.keys(fallback).length) fallback = await fetchDict('en');
  dict = lang === 'en' ? fallback : await fetchDict(lang);
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
}

export function getLang() {
  return lang;
}

/** t('case.title', {id: 3}) -> "Case 3"; an unknown key shows itself (easy to spot). */
export function t(key, vars = {}) {
  const text = dict[key] ?? fallback[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

/** t() for a value of a known set (status, rule, action...), the raw value when untranslated. */
export function tv(group, value) {
  if (value === null || value === undefined || value === '') return '—';
  const key = `${group}.${value}`;
  return (dict[key] ?? fallback[key]) !== undefined ? t(key) : String(value);
}

/** Fills [data-i18n] (text) and [data-i18n-label] (aria-label and title) under root. */
export function translateStatic(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-label]')) {
    el.setAttribute('aria-label', t(el.dataset.i18nLabel));
    el.title = t(el.dataset.i18nLabel);
  }
}

const LOCALES = {zh: 'zh-CN', en: 'en-GB'};

/** A time in the reader's zone and language. */
export function fmtTime(iso, withSeconds = false) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(LOCALES[lang], {
    year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
    ...(withSeconds ? {second: '2-digit'} : {}),
  });
}

export function fmtNumber(value, digits = 0) {
  if (value === null || value === undefined) return '—';
  return Number(value).toLocaleString(LOCALES[lang], {maximumFractionDigits: digits, minimumFractionDigits: digits});
}

export function fmtPercent(value) {
  return value === null || value === undefined ? '—' : `${fmtNumber(value * 100, 1)} %`;
}

// The case API from the console: the bearer token (sessionStorage), JSON in and out, errors as
// ApiError with the API's own message. The API is this console's origin: ../../ of this file.

const BASE = new URL('../../', import.meta.url);
const TOKEN = 'citywatch.token';
let unauthorized = () => {};

export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function url(path, query = {}) {
  const u = new URL(path.replace(/^\//, ''), BASE);
  for (const [key, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== '') u.searchParams.set(key, value);
  }
  return u;
}

export function token() {
  return sessionStorage.getItem(TOKEN);
}

export function signOut() {
  sessionStorage.removeItem(TOKEN);
}

/** Called (once per failure) when the API answers 401: the token expired or the key was removed. */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

export function authHeaders(extra = {}) {
  const bearer = token();
  return bearer ? {...extra, Authorization: `Bearer ${bearer}`} : extra;
}

/** The API's words for a failed answer: detail (text or FastAPI's list), or an OAuth2 error. */
function describe(body, res) {
  if (body && typeof body.detail === 'string') {
    return body.allowed && body.allowed.length ? `${body.detail} (${body.allowed.join(', ')})` : body.detail;
  }
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((e) => [(e.loc || []).slice(1).join('.'), e.msg].filter(Boolean).join(': ')).join('; ');
  }
  if (body && body.error_description) return body.error_description;
  return `${res.status} ${res.statusText}`;
}

export async function request(method, path, {query, json, form, raw} = {}) {
  const headers = authHeaders(json !== undefined ? {'Content-Type': 'application/json'} : {});
  let body;
  if (json !== undefined) body = JSON.stringify(json);
  else if (form !== undefined) body = form;
  let res;
  try {
    res = await fetch(url(path, query), {method, headers, body, cache: 'no-store'});
  } catch (err) {
    throw new ApiError(0, `${err.message || err}`);
  }
  if (!res.ok) {
    const data = await res.json().catch(() => null);
    if (res.status === 401 && token()) unauthorized();
    throw new ApiError(res.status, describe(data, res), data);
  }
  if (raw) return res;
  return res.status === 204 ? null : res.json();
}

export const api = {
  get: (path, query) => request('GET', path, {query}),
  post: (path, json) => request('POST', path, {json: json ?? {}}),
  postForm: (path, form) => request('POST', path, {form}),
  put: (path, json) => request('PUT', path, {json}),
  /** An image or file the API serves behind the credential, as a blob. */
  blob: async (path, query) => (await request('GET', path, {query, raw: true})).blob(),
};

/** Trades an API key for a bearer token (POST /auth/token), then says who it is (GET /auth/me). */
export async function signIn(key) {
  const form = new URLSearchParams({grant_type: 'client_credentials', client_secret: key});
  const res = await fetch(url('/auth/token'), {method: 'POST', body: form, cache: 'no-store'});
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, describe(data, res), data);
  sessionStorage.setItem(TOKEN, data.access_token);
  return api.get('/auth/me');
}

/** Saves a blob under a file name (the CSV export). */
export function download(blob, filename) {
  const href = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = href;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 1000);
}

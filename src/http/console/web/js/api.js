// Calls to Herald's /api routes from the console: the session cookie goes
// along by itself, state changes add the CSRF token, and errors come back
// as ApiError with the server's {error: {code, message, field}}.

let session = { open: true, signed_in: true, roles: [] };
let onSignedOut = () => {};

export function setSession(value) { session = value; }
export function currentSession() { return session; }
export function whenSignedOut(callback) { onSignedOut = callback; }

/** Whether the signed-in key has `role` (read, admin, enqueue). */
export function can(role) { return (session.roles || []).includes(role); }

export class ApiError extends Error {
  constructor(status, body) {
    const detail = (body && body.error) || {};
    super(detail.message || `HTTP ${status}`);
    this.status = status;
    this.code = detail.code;
    this.field = detail.field;
  }
}

function url(path, query) {
  const target = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') target.searchParams.set(name, value);
  }
  return target;
}

export async function call(method, path, { query, body } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && session.csrf) headers['X-CSRF-Token'] = session.csrf;
  const response = await fetch(url(path, query), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    cache: 'no-store',
  });
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    // The session route answers for itself (a wrong key at sign-in is a 401 too).
    if (response.status === 401 && !session.open && !path.startsWith('/console/')) onSignedOut(error);
    throw error;
  }
  return data;
}

export const get = (path, query) => call('GET', path, { query });
export const post = (path, body) => call('POST', path, { body });
export const del = (path) => call('DELETE', path);

// The console's shell: the session (sign-in when keys are configured),
// the navigation and the hash router that renders one page at a time.
// Each page module exports render(main, route) and may return a stop
// function, called when the reader leaves (timers, charts).

import { call, setSession, whenSignedOut, currentSession } from './api.js';
import { h, fill, failure } from './ui.js';
import * as overview from './pages/overview.js';
import * as transports from './pages/transports.js';
import * as messages from './pages/messages.js';
import * as message from './pages/message.js';
import * as deadLetters from './pages/dead_letters.js';
import * as analytics from './pages/analytics.js';
import * as alerts from './pages/alerts.js';
import * as suppressions from './pages/suppressions.js';

const PAGES = {
  overview,
  transports,
  messages,
  message,
  'dead-letters': deadLetters,
  analytics,
  alerts,
  suppressions,
};

const main = document.getElementById('main');
let stopPage = null;

/** `#/messages/01H...?status=dead` → {page: 'message', id, query}. */
function parseRoute() {
  const hash = window.location.hash.replace(/^#\/?/, '');
  const [path] = hash.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'messages' && parts[1]) return { page: 'message', nav: 'messages', id: parts[1] };
  const page = PAGES[parts[0]] ? parts[0] : 'overview';
  return { page, nav: page };
}

async function render({ focus = false } = {}) {
  if (stopPage) { stopPage(); stopPage = null; }
  const route = parseRoute();
  for (const link of document.querySelectorAll('nav a')) {
    if (link.dataset.page === route.nav) {
      link.setAttribute('aria-current', 'page');
      document.title = `${route.page === 'message' ? 'Message' : link.textContent} · Herald console`;
    } else {
      link.removeAttribute('aria-current');
    }
  }
  // A keyboard or screen-reader user lands on the new page, not on the link they left.
  if (focus) main.focus({ preventScroll: true });
  document.getElementById('nav').classList.remove('open');
  document.querySelector('.menu-toggle').setAttribute('aria-expanded', 'false');
  fill(main, h('p', { class: 'muted' }, 'Loading…'));
  try {
    const stop = await PAGES[route.page].render(main, route);
    stopPage = typeof stop === 'function' ? stop : null;
  } catch (error) {
    fill(main, failure(error));
  }
}

function showWho() {
  const session = currentSession();
  const who = document.getElementById('who');
  if (session.open) {
    fill(who, h('span', { class: 'badge warn', title: 'No [[api_keys]] are configured; the console is open on loopback' }, 'open, no keys'));
    return;
  }
  fill(who,
    h('span', {}, `Roles: ${session.roles.join(', ')}`),
    h('button', { type: 'button', class: 'small', id: 'sign-out', onclick: signOut }, 'Sign out'));
}

async function signOut() {
  await call('DELETE', '/console/session').catch(() => {});
  await start();
}

function showSignIn(message) {
  stopPage?.(); stopPage = null;
  fill(document.getElementById('who'));
  const input = h('input', { type: 'password', name: 'key', id: 'key', autocomplete: 'current-password', required: true });
  const error = h('div', { role: 'alert' }, message ? failure({ message }) : null);
  const form = h('form', { class: 'panel login', id: 'sign-in' },
    h('h1', {}, 'Sign in to Herald'),
    h('p', { class: 'muted' }, 'Enter an API key from the server\'s [[api_keys]]. It is kept in a session cookie that scripts cannot read, until you sign out or close the browser.'),
    h('label', { for: 'key' }, 'API key', input),
    error,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Sign in')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const session = await call('POST', '/console/session', { body: { key: input.value } });
      setSession(session);
      showWho();
      await render();
    } catch (err) {
      fill(error, failure(err.status === 401 ? { message: 'That key is not valid.' } : err));
      input.select();
    }
  });
  fill(main, form);
  input.focus();
}

async function start() {
  let session;
  try {
    session = await call('GET', '/console/session');
  } catch (error) {
    fill(main, failure(error));
    return;
  }
  setSession(session);
  if (!session.signed_in) {
    showSignIn();
    return;
  }
  showWho();
  await render();
}

whenSignedOut(() => showSignIn('Your session ended; sign in again.'));
window.addEventListener('hashchange', () => { if (currentSession().signed_in) render({ focus: true }); });
document.querySelector('.menu-toggle').addEventListener('click', (event) => {
  const nav = document.getElementById('nav');
  const open = nav.classList.toggle('open');
  event.currentTarget.setAttribute('aria-expanded', String(open));
});
start();

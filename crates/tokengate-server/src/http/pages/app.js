// tokengate's pages: sign in (/), your account (/account), the admin
// console (/admin). Hand-written, no framework, no build step; served by
// the service under `script-src 'self'` (no inline script, no eval).
//
// The session lives in cookies the service sets with `?mode=cookie`: the
// access and refresh tokens are HttpOnly (this script never sees them);
// the CSRF token is the one cookie it reads, to echo it in X-CSRF-Token on
// every request that changes something. URLs are relative, so the pages
// work behind a path prefix too.
'use strict';

(function () {
  const page = document.body.dataset.page;
  const $ = (id) => document.getElementById(id);

  // --- Talking to the service ------------------------------------------

  /** The session's CSRF token: `__Host-tg_csrf`, or `tg_csrf` in the
   *  insecure development mode. */
  function csrfToken() {
    const cookies = {};
    for (const part of document.cookie.split(';')) {
      const at = part.indexOf('=');
      if (at > 0) cookies[part.slice(0, at).trim()] = part.slice(at + 1).trim();
    }
    return cookies['__Host-tg_csrf'] || cookies['tg_csrf'] || '';
  }

  /** One request: same-origin cookies, JSON body, the CSRF header on
   *  anything but GET. `referrerPolicy: 'same-origin'` makes the browser
   *  send this page's Origin (the service's own pages are served with
   *  `Referrer-Policy: no-referrer`, under which a POST says `Origin: null`,
   *  which the CSRF check refuses). */
  function send(method, path, body) {
    const headers = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (method !== 'GET') headers['x-csrf-token'] = csrfToken();
    return fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      referrerPolicy: 'same-origin',
      cache: 'no-store',
    });
  }

  // One refresh at a time, shared by every request that met a 401.
  let refreshing = null;
  function refreshSession() {
    if (!refreshing) {
      refreshing = send('POST', 'auth/refresh', {})
        .then((r) => {
          if (r.ok) {
            const count = Number(document.body.dataset.refreshes || 0) + 1;
            document.body.dataset.refreshes = String(count);
          }
          return r.ok;
        })
        .catch(() => false)
        .finally(() => { refreshing = null; });
    }
    return refreshing;
  }

  /** A request of a signed-in page: on a 401 it refreshes the session
   *  once (the access cookie expired) and retries; if that fails too, the
   *  session is over and the page goes back to sign-in. */
  async function api(method, path, body) {
    let response = await send(method, path, body);
    if (response.status === 401) {
      if (await refreshSession()) response = await send(method, path, body);
      if (response.status === 401) {
        signedOut();
        throw new Error('signed out');
      }
    }
    return response;
  }

  function signedOut() {
    window.location.assign('./');
  }

  /** The problem+json detail of a failed response, or a general line. */
  async function problemText(response) {
    if (response.status === 429) return rateLimitText(response);
    try {
      const problem = await response.json();
      if (problem && typeof problem.detail === 'string' && problem.detail) return problem.detail;
    } catch (_) { /* not JSON */ }
    return 'Something went wrong (HTTP ' + response.status + '). Please try again.';
  }

  function retryAfter(response) {
    const seconds = parseInt(response.headers.get('retry-after') || '', 10);
    return Number.isFinite(seconds) && seconds > 0 ? seconds : 60;
  }

  function rateLimitText(response) {
    const seconds = retryAfter(response);
    const wait = seconds >= 120 ? Math.ceil(seconds / 60) + ' minutes' : seconds + (seconds === 1 ? ' second' : ' seconds');
    return 'Too many attempts. For your safety, please wait ' + wait + ' before trying again.';
  }

  /** Keeps a button disabled until the service's Retry-After has passed. */
  function holdOff(button, response) {
    button.disabled = true;
    window.setTimeout(() => { button.disabled = false; }, retryAfter(response) * 1000);
  }

  function say(element, text, kind) {
    element.textContent = text;
    element.className = 'message ' + (kind || 'error');
  }

  function when(seconds) {
    if (seconds === null || seconds === undefined) return '';
    return new Date(seconds * 1000).toLocaleString();
  }

  /** A table cell with text (never HTML: nothing from the service is
   *  parsed as markup). */
  function cell(row, text, className) {
    const td = document.createElement('td');
    td.textContent = text === null || text === undefined ? '' : String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function button(text, className, onClick) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = text;
    if (className) b.className = className;
    b.addEventListener('click', onClick);
    return b;
  }

  function badge(text, off) {
    const span = document.createElement('span');
    span.className = off ? 'badge off' : 'badge';
    span.textContent = text;
    return span;
  }

  /** Signs out, and leaves the page only when the service says the
   *  session ended (204): a sign-out that failed (429, 5xx, no network)
   *  must not look like one that worked, or the next person at this
   *  browser finds the session alive. */
  async function signOut(scope) {
    const message = $('page-message');
    let response;
    try {
      response = await api('POST', 'auth/logout', { scope });
    } catch (error) {
      // api() already went to sign-in: a 401 whose refresh failed means
      // there is no session left to end.
      if (error && error.message === 'signed out') return;
      if (message) say(message, 'The service could not be reached: you are still signed in. Please try again.');
      return;
    }
    if (response.status === 204) {
      signedOut();
      return;
    }
    if (message) say(message, 'You are still signed in. ' + (await problemText(response)));
  }

  function wireSignOut() {
    $('signout').addEventListener('click', () => signOut('local'));
  }

  // --- / : sign in and register ----------------------------------------

  async function signInPage() {
    if (document.body.dataset.registration === 'true') $('register-section').hidden = false;
    // A CSRF cookie lives as long as the refresh cookie: a session may be
    // here, its access cookie run out. The form waits for one check.
    const main = document.querySelector('main');
    const resuming = Boolean(csrfToken());
    if (resuming) main.hidden = true;

    const form = $('signin');
    const message = $('signin-message');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const submit = $('signin-submit');
      const email = $('signin-email').value.trim();
      const password = $('signin-password').value;
      if (!email || !password) {
        say(message, 'Enter your email and your password.');
        (email ? $('signin-password') : $('signin-email')).focus();
        return;
      }
      submit.disabled = true;
      say(message, 'Signing in…', 'info');
      let response;
      try {
        response = await send('POST', 'auth/login?mode=cookie', { email, password });
      } catch (_) {
        say(message, 'The service cannot be reached. Check your connection and try again.');
        submit.disabled = false;
        return;
      }
      if (response.ok) {
        window.location.assign('account');
        return;
      }
      submit.disabled = false;
      if (response.status === 401) {
        // Deliberately the same for an unknown email and a wrong password.
        say(message, 'The email or password is incorrect.');
      } else if (response.status === 429) {
        say(message, rateLimitText(response));
        holdOff(submit, response);
      } else {
        say(message, await problemText(response));
      }
      $('signin-password').select();
      $('signin-password').focus();
    });

    const register = $('register');
    const registerMessage = $('register-message');
    register.addEventListener('submit', async (event) => {
      event.preventDefault();
      const submit = $('register-submit');
      const email = $('register-email').value.trim();
      const password = $('register-password').value;
      if (!email || !password) {
        say(registerMessage, 'Enter an email and a password.');
        return;
      }
      submit.disabled = true;
      try {
        const created = await send('POST', 'auth/register', { email, password });
        if (created.status !== 201) {
          say(registerMessage, created.status === 409
            ? 'That email already has an account: sign in above.'
            : await problemText(created));
          if (created.status === 429) holdOff(submit, created); else submit.disabled = false;
          return;
        }
        const login = await send('POST', 'auth/login?mode=cookie', { email, password });
        if (login.ok) {
          window.location.assign('account');
          return;
        }
        say(registerMessage, 'Your account is created. Sign in above.', 'info');
      } catch (_) {
        say(registerMessage, 'The service cannot be reached. Check your connection and try again.');
      }
      submit.disabled = false;
    });

    if (resuming) {
      if (await resumeSession()) {
        window.location.assign('account');
        return;
      }
      main.hidden = false;
      // Autofocus passed over the hidden form.
      $('signin-email').focus();
    }
    document.body.dataset.ready = 'true';
  }

  /** Whether the session in this browser's cookies still works: its access
   *  cookie, or else one silent refresh by the refresh cookie. */
  async function resumeSession() {
    try {
      const me = await send('GET', 'auth/me');
      if (me.ok) return true;
      return me.status === 401 && await refreshSession();
    } catch (_) {
      // Unreachable: the form says so when it is used.
      return false;
    }
  }

  // --- /account -------------------------------------------------------

  async function accountPage() {
    wireSignOut();
    const message = $('page-message');
    const meResponse = await api('GET', 'auth/me');
    if (!meResponse.ok) {
      say(message, await problemText(meResponse));
      return;
    }
    const me = await meResponse.json();
    $('me-email').textContent = me.email;
    $('me-roles').textContent = me.roles.join(', ');
    $('me-id').textContent = me.id;
    if (me.roles.includes('admin')) $('nav-admin').hidden = false;
    document.body.dataset.user = me.email;

    async function loadSessions() {
      const response = await api('GET', 'auth/sessions');
      if (!response.ok) {
        say(message, await problemText(response));
        return;
      }
      const { sessions } = await response.json();
      const body = $('sessions').tBodies[0];
      body.replaceChildren();
      for (const s of sessions) {
        const row = document.createElement('tr');
        row.dataset.session = s.id;
        const device = cell(row, s.user_agent || 'unknown device');
        if (s.current) {
          device.appendChild(badge('this device'));
          row.classList.add('current');
        }
        cell(row, s.ip || '', 'mono');
        cell(row, when(s.created_at));
        cell(row, when(s.last_used_at));
        const actions = cell(row, '');
        actions.appendChild(button('Sign out', 'secondary', async () => {
          if (s.current) {
            await signOut('local');
            return;
          }
          const ended = await api('DELETE', 'auth/sessions/' + encodeURIComponent(s.id));
          if (ended.status === 204 || ended.status === 404) {
            say(message, 'That session is signed out.', 'info');
          } else {
            say(message, await problemText(ended));
          }
          await loadSessions();
        }));
        body.appendChild(row);
      }
      document.body.dataset.sessions = String(sessions.length);
    }

    $('signout-others').addEventListener('click', async () => {
      const response = await api('POST', 'auth/logout', { scope: 'others' });
      if (response.status === 204) say(message, 'Your other sessions are signed out.', 'info');
      else say(message, await problemText(response));
      await loadSessions();
    });
    $('signout-everywhere').addEventListener('click', () => signOut('global'));

    const form = $('password');
    const passwordMessage = $('password-message');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const submit = $('password-submit');
      const current = $('password-current').value;
      const next = $('password-new').value;
      if (!current || !next) {
        say(passwordMessage, 'Enter your current password and a new one.');
        return;
      }
      if (next !== $('password-repeat').value) {
        say(passwordMessage, 'The two new passwords differ.');
        $('password-repeat').focus();
        return;
      }
      submit.disabled = true;
      const response = await api('POST', 'auth/password', { current_password: current, new_password: next });
      if (response.status === 204) {
        form.reset();
        say(passwordMessage, 'Your password is changed, and your other sessions are signed out.', 'info');
        submit.disabled = false;
        await loadSessions();
        return;
      }
      say(passwordMessage, await problemText(response));
      if (response.status === 429) holdOff(submit, response); else submit.disabled = false;
    });

    await loadSessions();
    document.body.dataset.ready = 'true';
  }

  // --- /admin ---------------------------------------------------------

  async function adminPage() {
    wireSignOut();
    const message = $('page-message');
    const meResponse = await api('GET', 'auth/me');
    if (!meResponse.ok) {
      say(message, await problemText(meResponse));
      return;
    }
    const me = await meResponse.json();
    if (!me.roles.includes('admin')) {
      refuse();
      return;
    }
    $('console').hidden = false;

    function refuse() {
      $('console').hidden = true;
      $('refused').hidden = false;
      document.body.dataset.ready = 'refused';
    }

    /** An admin call; a 403 means the role was taken away meanwhile. */
    async function admin(method, path, body) {
      const response = await api(method, path, body);
      if (response.status === 403) {
        const problem = await response.clone().json().catch(() => ({}));
        if (!String(problem.type || '').includes('csrf')) refuse();
      }
      return response;
    }

    // Users.
    let usersAfter = null;
    let usersEmail = '';
    async function loadUsers(append) {
      const query = new URLSearchParams({ limit: '50' });
      if (usersEmail) query.set('email', usersEmail);
      if (append && usersAfter) query.set('after', usersAfter);
      const response = await admin('GET', 'admin/users?' + query);
      if (!response.ok) {
        say(message, await problemText(response));
        return;
      }
      const page = await response.json();
      const body = $('users').tBodies[0];
      if (!append) body.replaceChildren();
      for (const user of page.users) body.appendChild(userRow(user));
      usersAfter = page.next_after;
      $('users-more').hidden = !usersAfter;
    }

    function userRow(user) {
      const row = document.createElement('tr');
      row.dataset.user = user.email;
      cell(row, user.email);
      const rolesCell = cell(row, '');
      const roles = document.createElement('input');
      roles.className = 'roles';
      roles.value = user.roles.join(', ');
      roles.setAttribute('aria-label', 'Roles of ' + user.email + ', comma-separated');
      rolesCell.appendChild(roles);
      const status = cell(row, user.disabled ? 'disabled' : 'active');
      cell(row, when(user.created_at));
      const actions = cell(row, '');
      const group = document.createElement('div');
      group.className = 'actions';
      actions.appendChild(group);
      const replaceWith = async (response, done) => {
        if (response.ok) {
          const changed = response.status === 200 ? await response.json() : null;
          if (changed && changed.email) row.replaceWith(userRow(changed));
          say(message, done, 'info');
        } else {
          say(message, await problemText(response));
        }
      };
      group.appendChild(button('Save roles', 'secondary', async () => {
        const list = roles.value.split(',').map((r) => r.trim()).filter((r) => r);
        await replaceWith(await admin('PATCH', 'admin/users/' + encodeURIComponent(user.id), { roles: list }),
          'Roles of ' + user.email + ' saved.');
      }));
      group.appendChild(button(user.disabled ? 'Enable' : 'Disable', user.disabled ? 'secondary' : 'danger', async () => {
        await replaceWith(await admin('PATCH', 'admin/users/' + encodeURIComponent(user.id), { disabled: !user.disabled }),
          user.email + (user.disabled ? ' is enabled.' : ' is disabled; their sessions stop working at once.'));
      }));
      group.appendChild(button('Revoke sessions', 'secondary', async () => {
        const response = await admin('POST', 'admin/users/' + encodeURIComponent(user.id) + '/revoke-sessions');
        if (response.ok) {
          const { sessions_ended } = await response.json();
          say(message, sessions_ended + ' session' + (sessions_ended === 1 ? '' : 's') + ' of ' + user.email + ' ended.', 'info');
        } else {
          say(message, await problemText(response));
        }
      }));
      if (user.disabled) status.appendChild(badge('disabled', true));
      return row;
    }

    $('user-search').addEventListener('submit', (event) => {
      event.preventDefault();
      usersEmail = $('user-search-email').value.trim();
      loadUsers(false);
    });
    $('users-more').addEventListener('click', () => loadUsers(true));

    // The audit log, newest first, paged by cursor.
    let auditBefore = null;
    async function loadAudit(before) {
      const query = new URLSearchParams({ limit: '25' });
      const type = $('audit-type').value;
      const user = $('audit-user').value.trim();
      if (type) query.set('type', type);
      if (user) query.set('user', user);
      if (before) query.set('before', String(before));
      const response = await admin('GET', 'admin/audit?' + query);
      if (!response.ok) {
        say(message, await problemText(response));
        return;
      }
      const page = await response.json();
      const body = $('audit').tBodies[0];
      body.replaceChildren();
      for (const e of page.events) {
        const row = document.createElement('tr');
        row.dataset.type = e.type;
        cell(row, when(e.at));
        cell(row, e.type);
        cell(row, e.user_id || '', 'mono');
        cell(row, e.ip || '', 'mono');
        cell(row, JSON.stringify(e.detail), 'mono detail');
        body.appendChild(row);
      }
      if (page.events.length === 0) cell(body.insertRow(), 'No events.').colSpan = 5;
      auditBefore = page.next_before;
      $('audit-older').disabled = !auditBefore;
      $('audit-first').disabled = !before;
      document.body.dataset.auditRows = String(page.events.length);
    }
    $('audit-filter').addEventListener('submit', (event) => {
      event.preventDefault();
      loadAudit(null);
    });
    $('audit-older').addEventListener('click', () => loadAudit(auditBefore));
    $('audit-first').addEventListener('click', () => loadAudit(null));

    await Promise.all([loadActivity(admin), loadUsers(false), loadAudit(null)]);
    if (document.body.dataset.ready !== 'refused') document.body.dataset.ready = 'true';
  }

  // --- The activity chart: inline SVG, drawn here --------------------

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(name, attributes, parent) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
    if (parent) parent.appendChild(element);
    return element;
  }

  const twoDigits = (n) => String(n).padStart(2, '0');

  /** HH:MM of an instant (Unix seconds) in the viewer's zone. */
  function clockTime(seconds) {
    const at = new Date(seconds * 1000);
    return twoDigits(at.getHours()) + ':' + twoDigits(at.getMinutes());
  }

  /** The viewer's zone at an instant, as `UTC+05:30`. */
  function utcOffset(seconds) {
    const east = -new Date(seconds * 1000).getTimezoneOffset();
    const size = Math.abs(east);
    return 'UTC' + (east < 0 ? '-' : '+') + twoDigits(Math.floor(size / 60)) + ':' + twoDigits(size % 60);
  }

  async function loadActivity(admin) {
    const response = await admin('GET', 'admin/stats?hours=24');
    if (!response.ok) {
      $('activity-summary').textContent = await problemText(response);
      return;
    }
    const stats = await response.json();
    const series = [
      ['logins_succeeded', 'ok', 'successful logins'],
      ['logins_failed', 'fail', 'failed logins'],
      ['rate_limited', 'limit', 'rate-limit refusals'],
    ];
    const totals = {};
    for (const [key] of series) totals[key] = stats.buckets.reduce((sum, b) => sum + b[key], 0);
    $('activity-summary').textContent = totals.logins_succeeded + ' successful logins, '
      + totals.logins_failed + ' failed logins and ' + totals.rate_limited
      + ' rate-limit refusals in the last ' + stats.hours + ' hours.';

    const width = 960; const height = 260;
    const left = 40; const right = 10; const top = 12; const bottom = 34;
    const plotWidth = width - left - right; const plotHeight = height - top - bottom;
    const peak = Math.max(1, ...stats.buckets.flatMap((b) => series.map(([key]) => b[key])));
    const step = Math.max(1, Math.ceil(peak / 4));
    const scaleTop = step * 4;
    const chart = svg('svg', { viewBox: '0 0 ' + width + ' ' + height, role: 'img', 'aria-labelledby': 'activity-title activity-summary' });
    for (let tick = 0; tick <= scaleTop; tick += step) {
      const y = top + plotHeight - (tick / scaleTop) * plotHeight;
      svg('line', { x1: left, x2: width - right, y1: y, y2: y, class: 'grid' }, chart);
      svg('text', { x: left - 6, y: y + 4, 'text-anchor': 'end' }, chart).textContent = String(tick);
    }
    // The buckets are whole UTC hours; each is labelled by the instant it
    // starts in the viewer's zone, minutes included (in a zone at :30 or
    // :45 an hour bucket starts at 05:30, not 05:00), and the zone is said.
    const last = stats.buckets.length ? stats.buckets[stats.buckets.length - 1].start : Date.now() / 1000;
    $('activity-zone').textContent = 'Each bar is one hour, labelled by when it starts in your local time ('
      + utcOffset(last) + ').';
    const slot = plotWidth / stats.buckets.length;
    const barWidth = Math.max(2, (slot - 4) / series.length);
    stats.buckets.forEach((bucket, index) => {
      const x0 = left + index * slot + 2;
      const label = clockTime(bucket.start);
      const span = label + '–' + clockTime(bucket.start + stats.bucket_seconds);
      series.forEach(([key, className, noun], s) => {
        const count = bucket[key];
        const barHeight = (count / scaleTop) * plotHeight;
        const bar = svg('rect', {
          x: x0 + s * barWidth, y: top + plotHeight - barHeight, width: barWidth - 1, height: barHeight,
          class: className, 'data-series': key, 'data-count': count, 'data-start': bucket.start,
        }, chart);
        svg('title', {}, bar).textContent = span + ': ' + count + ' ' + noun;
      });
      if (index % 3 === 0) {
        svg('text', {
          x: x0 + slot / 2, y: height - bottom + 16, 'text-anchor': 'middle', class: 'hour', 'data-start': bucket.start,
        }, chart).textContent = label;
      }
    });
    svg('line', { x1: left, x2: width - right, y1: top + plotHeight, y2: top + plotHeight, class: 'axis' }, chart);
    $('activity-chart').replaceChildren(chart);
  }

  // --- Start ----------------------------------------------------------

  const pages = { signin: signInPage, account: accountPage, admin: adminPage };
  const start = pages[page];
  if (start) {
    start().catch((error) => {
      if (error && error.message === 'signed out') return;
      const message = $('page-message') || $('signin-message');
      if (message) say(message, 'The service cannot be reached. Check your connection and reload the page.');
    });
  }
})();

// Signing in: user name and password; the controller sets an HttpOnly session cookie.
import { html, useState } from '../vendor/preact-htm.js';
import { api } from '../api.js';

export function SignIn({ onSignedIn }) {
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    setBusy(true);
    setError('');
    try {
      const session = await api('/api/v1/session', {
        method: 'POST',
        body: { username: form.get('username'), password: form.get('password') },
      });
      onSignedIn(session);
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <main class="signin">
      <form class="card" data-test="signin-form" onSubmit=${submit} aria-describedby=${error ? 'signin-error' : undefined}>
        <h1><img src="/ui/icon.svg" alt="" width="28" height="28" /> Sign in to Sluice</h1>
        <label>User name <input name="username" autocomplete="username" required value="admin" /></label>
        <label>Password <input name="password" type="password" autocomplete="current-password" required autofocus /></label>
        ${error && html`<p id="signin-error" class="error" role="alert" data-test="signin-error">${error}</p>`}
        <button type="submit" class="primary" disabled=${busy}>${busy ? 'Signing in…' : 'Sign in'}</button>
        <p class="hint">The admin password was printed when the controller first started
          (or set with <code>--admin-password</code>).</p>
      </form>
    </main>`;
}

// The shell: who is signed in, the header, and the page the address names
// (hash routes, so the controller serves one page and links keep working offline).
import { html, render, useEffect, useState, createContext } from './vendor/preact-htm.js';
import { api, setCsrfToken } from './api.js';
import { SignIn } from './pages/signin.js';
import { Overview } from './pages/overview.js';
import { PipelinePage } from './pages/pipeline.js';
import { ExecutionPage } from './pages/execution.js';
import { HistoryPage } from './pages/history.js';
import { AgentsPage } from './pages/agents.js';
import { PluginsPage } from './pages/plugins.js';

/** The signed-in session: user, permissions, and `can(permission)`. */
export const Session = createContext(null);

function parseRoute() {
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
  const [path, query = ''] = hash.split('?');
  const parts = path.split('/').filter(Boolean);
  return { parts, query: new URLSearchParams(query) };
}

function useRoute() {
  const [route, setRoute] = useState(parseRoute());
  useEffect(() => {
    const onChange = () => setRoute(parseRoute());
    window.addEventListener('hashchange', onChange);
    return () => window.removeEventListener('hashchange', onChange);
  }, []);
  return route;
}

function Page({ route }) {
  const [first, second, third] = route.parts;
  if (first === 'pipelines' && second && third === 'history') return html`<${HistoryPage} name=${second} query=${route.query} />`;
  if (first === 'pipelines' && second) return html`<${PipelinePage} name=${second} query=${route.query} />`;
  if (first === 'agents') return html`<${AgentsPage} query=${route.query} />`;
  if (first === 'plugins') return html`<${PluginsPage} query=${route.query} />`;
  if (first === 'executions' && second) return html`<${ExecutionPage} id=${second} query=${route.query} />`;
  return html`<${Overview} query=${route.query} />`;
}

function Shell({ session, onSignOut }) {
  const route = useRoute();
  const section = route.parts[0] || 'pipelines';
  return html`
    <a class="skip" href="#main">Skip to content</a>
    <header class="top">
      <a class="brand" href="#/"><img src="/ui/icon.svg" alt="" width="24" height="24" /> Sluice</a>
      <nav aria-label="Sections">
        <a href="#/" aria-current=${section === 'pipelines' || section === 'executions' ? 'page' : undefined}>Pipelines</a>
        <a href="#/agents" aria-current=${section === 'agents' ? 'page' : undefined}>Agents</a>
        <a href="#/plugins" aria-current=${section === 'plugins' ? 'page' : undefined}>Plugins</a>
      </nav>
      <div class="user">
        <span title=${`role: ${session.user.role}`} data-test="user">${session.user.name}</span>
        <button class="link" data-test="sign-out" onClick=${onSignOut}>Sign out</button>
      </div>
    </header>
    <main id="main" tabindex="-1">
      <${Session.Provider} value=${session}>
        <${Page} route=${route} />
      <//>
    </main>`;
}

function App() {
  const [session, setSession] = useState(undefined);
  const adopt = (s) => {
    if (s) {
      setCsrfToken(s.csrfToken);
      s.can = (permission) => (s.permissions || []).includes(permission);
    }
    setSession(s);
  };
  useEffect(() => {
    api('/api/v1/session').then(adopt, () => adopt(null));
    const signedOut = () => adopt(null);
    window.addEventListener('sluice:signed-out', signedOut);
    return () => window.removeEventListener('sluice:signed-out', signedOut);
  }, []);
  if (session === undefined) return html`<p class="loading">Loading Sluice…</p>`;
  if (session === null) return html`<${SignIn} onSignedIn=${adopt} />`;
  const signOut = async () => {
    try {
      await api('/api/v1/session', { method: 'DELETE' });
    } finally {
      adopt(null);
    }
  };
  return html`<${Shell} session=${session} onSignOut=${signOut} />`;
}

render(html`<${App} />`, document.getElementById('app'));

import { useCallback, useEffect, useState } from "preact/hooks";
import { api, errorText, events, type MeView, type SessionInfo } from "./api";
import { ErrorBox, Loading } from "./components";
import { Approvals } from "./views/Approvals";
import { History } from "./views/History";
import { Login } from "./views/Login";
import { MyAccess } from "./views/MyAccess";
import { RequestAccess } from "./views/RequestAccess";
import { Settings } from "./views/Settings";

export type View = "approvals" | "request" | "mine" | "history" | "settings";

const NAV: { view: View; label: string }[] = [
  { view: "approvals", label: "Approvals" },
  { view: "request", label: "Request access" },
  { view: "mine", label: "My access" },
  { view: "history", label: "History" },
  { view: "settings", label: "Settings" },
];

export function App() {
  const [session, setSession] = useState<SessionInfo | null>(null);
  const [sessionError, setSessionError] = useState<string | null>(null);
  const [me, setMe] = useState<MeView | null>(null);
  const [view, setView] = useState<View>("mine");
  const [highlight, setHighlight] = useState<string | null>(null);
  const [tick, setTick] = useState(0);
  const [offsetMs, setOffsetMs] = useState(0);
  const [pending, setPending] = useState<number | null>(null);
  const [loginBusy, setLoginBusy] = useState(false);
  const [loginError, setLoginError] = useState<string | null>(null);
  const loggedIn = session?.logged_in === true;

  const loadSession = useCallback(() => {
    setSessionError(null);
    api
      .getSession()
      .then(setSession)
      .catch((e: unknown) => setSessionError(errorText(e)));
  }, []);

  const syncClock = useCallback(() => {
    api
      .serverClock()
      .then((c) => setOffsetMs(c.offset_ms))
      .catch(() => undefined);
  }, []);

  const openRequest = useCallback(async (id: string) => {
    setHighlight(id);
    try {
      const review = await api.listRequests({ to_review: true });
      setView(review.some((r) => r.id === id) ? "approvals" : "mine");
    } catch {
      setView("mine");
    }
  }, []);

  // Events from the Tauri side: live server events, session changes, and
  // "open this request" from notifications and the tray.
  useEffect(() => {
    loadSession();
    const subs = [
      events.onSession((s) => setSession(s)),
      events.onEvent(() => {
        setTick((t) => t + 1);
        syncClock();
      }),
      events.onOpenRequest((id) => void openRequest(id)),
    ];
    return () => subs.forEach((p) => p.then((un) => un()).catch(() => undefined));
  }, [loadSession, syncClock, openRequest]);

  // Who I am, what I approve, and the server clock, once logged in.
  useEffect(() => {
    if (!loggedIn) {
      setMe(null);
      return;
    }
    api
      .getMe()
      .then((m) => {
        setMe(m);
        if (m.approves.length > 0) setView((v) => (v === "mine" ? "approvals" : v));
      })
      .catch(() => undefined);
    syncClock();
    const t = setInterval(syncClock, 60_000);
    return () => clearInterval(t);
  }, [loggedIn, syncClock]);

  // Pending count for the nav badge.
  useEffect(() => {
    if (!loggedIn) return;
    api
      .listRequests({ to_review: true })
      .then((rows) => setPending(rows.length))
      .catch(() => undefined);
  }, [loggedIn, tick]);

  async function login() {
    setLoginBusy(true);
    setLoginError(null);
    try {
      setSession(await api.login());
    } catch (e) {
      setLoginError(errorText(e));
    } finally {
      setLoginBusy(false);
    }
  }

  async function logout() {
    try {
      setSession(await api.logout());
    } catch (e) {
      setLoginError(errorText(e));
      loadSession();
    }
  }

  function go(v: View) {
    setView(v);
    setHighlight(null);
  }

  const conn = session?.connection ?? "connecting";

  return (
    <div class="shell">
      <header class="topbar">
        <div class="brand">
          <img src="/icon.png" alt="" width={22} height={22} />
          <span>JIT Access</span>
        </div>
        <div class="session">
          <span class={`conn conn-${conn}`} title={`Connection to jitd: ${conn}`}>
            <span class="dot" aria-hidden="true" />
            <span class="sr-only">Connection: </span>
            <span data-testid="connection-state">{conn}</span>
          </span>
          {loggedIn && (
            <>
              <span class="user" data-testid="session-user" title={me?.id ?? ""}>
                {session?.username ?? me?.username ?? ""}
              </span>
              <button type="button" class="btn subtle" data-testid="logout-button" onClick={logout}>
                Log out
              </button>
            </>
          )}
        </div>
      </header>
      {session?.notice && (
        <div class="notice" data-testid="notice" role="status">
          {session.notice}
        </div>
      )}
      {!session && !sessionError && <Loading what="session" />}
      {sessionError && <ErrorBox error={sessionError} retry={loadSession} />}
      {session && !loggedIn && <Login session={session} busy={loginBusy} error={loginError} onLogin={login} />}
      {session && loggedIn && (
        <div class="main">
          <nav class="nav" aria-label="Views">
            {NAV.map((n) => (
              <button
                type="button"
                key={n.view}
                class={`nav-item${view === n.view ? " active" : ""}`}
                data-testid={`nav-${n.view}`}
                aria-current={view === n.view ? "page" : undefined}
                onClick={() => go(n.view)}
              >
                {n.label}
                {n.view === "approvals" && pending !== null && pending > 0 && (
                  <span class="count" aria-label={`${pending} pending`}>
                    {pending}
                  </span>
                )}
              </button>
            ))}
          </nav>
          <main class="content">
            {view === "approvals" && <Approvals tick={tick} offsetMs={offsetMs} highlight={highlight} />}
            {view === "request" && <RequestAccess onCreated={(id) => { setHighlight(id); setView("mine"); }} />}
            {view === "mine" && <MyAccess tick={tick} offsetMs={offsetMs} highlight={highlight} />}
            {view === "history" && <History tick={tick} />}
            {view === "settings" && <Settings session={session} />}
          </main>
        </div>
      )}
    </div>
  );
}

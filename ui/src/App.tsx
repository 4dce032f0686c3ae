import { useCallback, useEffect, useState } from "preact/hooks";
import {
  api,
  errorText,
  events,
  newerSession,
  type DeepLink,
  type LoginUrl,
  type MeView,
  type QuitRequest,
  type SessionInfo,
} from "./api";
import { ErrorBox, Loading } from "./components";
import { ActionsBlocked, forgetLoaded } from "./hooks";
import { actionsBlocked } from "./logic/actions";
import { Approvals } from "./views/Approvals";
import { History } from "./views/History";
import { Login } from "./views/Login";
import { QuitDialog } from "./views/QuitDialog";
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
  const [loginUrl, setLoginUrl] = useState<LoginUrl | null>(null);
  const [quit, setQuit] = useState<QuitRequest | null>(null);
  const [link, setLink] = useState<DeepLink | null>(null);
  const [prefill, setPrefill] = useState<string | null>(null);
  const [loadedAt, setLoadedAt] = useState<Date | null>(null);
  const loggedIn = session?.logged_in === true;
  const conn = session?.connection ?? "connecting";
  const outage = loggedIn ? (session?.outage ?? null) : null;
  const healthy = loggedIn && outage === null && (conn === "live" || conn === "polling");

  const loadSession = useCallback(() => {
    setSessionError(null);
    api
      .getSession()
      .then((s) => setSession((cur) => newerSession(cur, s)))
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
      events.onSession((s) => setSession((cur) => newerSession(cur, s))),
      events.onEvent(() => {
        setTick((t) => t + 1);
        syncClock();
      }),
      events.onOpenRequest((id) => void openRequest(id)),
      events.onLoginUrl((u) => setLoginUrl(u)),
      events.onQuitRequested((q) => setQuit(q)),
      events.onDeepLink((l) => setLink(l)),
    ];
    // A deep link the app was started with.
    api
      .takeDeepLink()
      .then((l) => l && setLink(l))
      .catch(() => undefined);
    return () => subs.forEach((p) => p.then((un) => un()).catch(() => undefined));
  }, [loadSession, syncClock, openRequest]);

  // Back to healthy (jitd or Keycloak reachable again): reload everything,
  // so nothing stale stays on screen; remember when data was last fresh.
  useEffect(() => {
    if (healthy) {
      setTick((t) => t + 1);
      setLoadedAt(new Date());
    }
  }, [healthy]);

  // A deep link opens its request (or the prefilled form) once logged in.
  useEffect(() => {
    if (!link || !loggedIn) return;
    if (link.kind === "request") void openRequest(link.id);
    else {
      setPrefill(link.entitlement);
      setView("request");
    }
    setLink(null);
  }, [link, loggedIn, openRequest]);

  // Another user's lists never show: what the views loaded last is
  // forgotten whenever the user changes.
  useEffect(() => forgetLoaded(), [session?.username]);

  // Who I am, what I approve, and the server clock, once logged in.
  useEffect(() => {
    if (!loggedIn) {
      setMe(null);
      forgetLoaded();
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
    setLoginUrl(null);
    try {
      const s = await api.login();
      setSession((cur) => newerSession(cur, s));
    } catch (e) {
      setLoginError(errorText(e));
    } finally {
      setLoginBusy(false);
      setLoginUrl(null);
    }
  }

  async function logout() {
    try {
      const s = await api.logout();
      setSession((cur) => newerSession(cur, s));
    } catch (e) {
      setLoginError(errorText(e));
      loadSession();
    }
  }

  /** Switching user is explicit: log out here and in Keycloak, then log in. */
  async function switchUser() {
    await logout();
    await login();
  }

  function go(v: View) {
    setView(v);
    setHighlight(null);
  }

  // The pill never says "live" beside data that may be stale: while a part
  // is down it names that part (the event stream to jitd can still be up
  // while Keycloak is down and the login cannot be renewed).
  const pill = !loggedIn
    ? "not logged in"
    : outage
      ? outage.part === "jitd"
        ? "offline"
        : "Keycloak down"
      : conn;

  return (
    <div class="shell">
      <header class="topbar">
        <div class="brand">
          <img src="/icon.png" alt="" width={22} height={22} />
          <span>JIT Access</span>
        </div>
        <div class="session">
          <span
            class={`conn conn-${loggedIn ? (outage ? "offline" : conn) : "none"}`}
            title={
              !loggedIn
                ? "Not connected: log in first"
                : outage?.part === "keycloak"
                  ? `Keycloak cannot be reached (connection to jitd: ${conn})`
                  : `Connection to jitd: ${conn}`
            }
          >
            <span class="dot" aria-hidden="true" />
            <span class="sr-only">Connection: </span>
            <span data-testid="connection-state" data-jitd={loggedIn ? conn : "none"}>
              {pill}
            </span>
          </span>
          {loggedIn && (
            <>
              <span class="user" data-testid="session-user" title={me?.id ?? ""}>
                {session?.username ?? me?.username ?? ""}
              </span>
              <button type="button" class="btn subtle" data-testid="switch-user-button" onClick={switchUser}>
                Switch user
              </button>
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
      {outage && (
        <div class={`outage outage-${outage.part}`} data-testid="outage" data-part={outage.part} role="alert">
          <strong>{outage.part === "jitd" ? "jitd is unreachable." : "Keycloak is unreachable."}</strong> {outage.message}
          {loadedAt && (
            <span class="stale-note" data-testid="stale-marker">
              {" "}
              Shown data is from {loadedAt.toLocaleTimeString()} and may be out of date.
            </span>
          )}
        </div>
      )}
      {quit && <QuitDialog quit={quit} onClose={() => setQuit(null)} />}
      {!session && !sessionError && <Loading what="session" />}
      {sessionError && <ErrorBox error={sessionError} retry={loadSession} />}
      {session && !loggedIn && (
        <Login session={session} busy={loginBusy} error={loginError} loginUrl={loginUrl} onLogin={login} />
      )}
      {session && loggedIn && (
        <ActionsBlocked.Provider value={actionsBlocked(outage)}>
          <div class={`main${outage ? " stale" : ""}`} aria-busy={outage ? "true" : undefined}>
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
              {view === "request" && (
                <RequestAccess
                  prefill={prefill}
                  onCreated={(id) => {
                    setPrefill(null);
                    setHighlight(id);
                    setView("mine");
                  }}
                />
              )}
              {view === "mine" && <MyAccess tick={tick} offsetMs={offsetMs} highlight={highlight} />}
              {view === "history" && <History tick={tick} />}
              {view === "settings" && <Settings session={session} />}
            </main>
          </div>
        </ActionsBlocked.Provider>
      )}
    </div>
  );
}

// Telehub dashboard: boot, token, routing, connection indicator, alert badge.
//
// Routes: #/ (fleet), #/devices/{id}, #/alerts. The token comes from the
// ?token= of the URL the hub prints (then it is kept in localStorage and
// removed from the address bar) or from the sign-in form.

import { h } from "./util.js";
import { Api } from "./api.js";
import { Live } from "./live.js";
import { FleetStore } from "./fleet-store.js";
import { AlertStore } from "./alerts-store.js";
import { FleetView } from "./fleet-view.js";
import { DeviceView, seriesOf } from "./device-view.js";
import { AlertsView } from "./alerts-view.js";

const TOKEN_KEY = "telehub.token";

function takeToken() {
  const params = new URLSearchParams(location.search);
  const t = params.get("token");
  if (t) {
    localStorage.setItem(TOKEN_KEY, t);
    params.delete("token");
    const q = params.toString();
    history.replaceState(null, "", location.pathname + (q ? "?" + q : "") + location.hash);
  }
  return localStorage.getItem(TOKEN_KEY) || "";
}

function signIn(message) {
  const root = document.getElementById("view");
  document.getElementById("conn").hidden = true;
  const input = h("input", { class: "input", type: "password", placeholder: "API token", "aria-label": "API token", autocomplete: "current-password" });
  root.replaceChildren(h("section", { class: "card login" },
    h("h1", null, "Sign in to Telehub"),
    h("p", null, message || "Open the dashboard URL the hub printed at start, or paste an API token. The admin token is in <data-dir>/admin.token; `telehub token create --role viewer` makes one for a wall screen."),
    h("form", { onsubmit: e => {
      e.preventDefault();
      if (!input.value.trim()) return;
      localStorage.setItem(TOKEN_KEY, input.value.trim());
      location.reload();
    } }, input, h("button", { class: "btn primary", type: "submit" }, "Sign in"))));
  input.focus();
}

function boot() {
  const token = takeToken();
  if (!token) {
    signIn();
    return;
  }
  const api = new Api(token);
  const live = new Live(api);
  const fleet = new FleetStore(api, live);
  const alerts = new AlertStore(api, live);

  // Messages per second over the last five seconds, for the top bar.
  const samples = [];
  const rate = () => {
    if (samples.length < 2) return 0;
    const [t0, n0] = samples[0], [t1, n1] = samples[samples.length - 1];
    return Math.round(((n1 - n0) * 1000) / Math.max(1, t1 - t0));
  };
  const ctx = { api, live, fleet, alerts, rate };
  const rateEl = document.getElementById("rate");
  setInterval(() => {
    samples.push([performance.now(), live.received]);
    while (samples.length > 6) samples.shift();
    rateEl.textContent = live.state === "live" && samples.length > 2 ? rate().toLocaleString() + " msg/s" : "";
  }, 1000);

  let unauthorized = false;
  api.onUnauthorized = () => {
    if (unauthorized) return;
    unauthorized = true;
    live.close();
    localStorage.removeItem(TOKEN_KEY);
    signIn("The token was refused (revoked or mistyped). Sign in again.");
  };

  // Connection indicator.
  const conn = document.getElementById("conn");
  const connText = conn.querySelector(".conn-text");
  const LABELS = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", unauthorized: "Not signed in" };
  live.on("connection", ({ state }) => {
    conn.dataset.state = state;
    connText.textContent = LABELS[state] || state;
    conn.title = state === "live" ? `Connected; resumes from message ${live.lastSeq} after a drop` : "";
  });
  window.addEventListener("online", () => live.reconnectNow());

  // A banner while the hub refuses telemetry (/readyz answers 503 with a
  // problem document saying why, e.g. the durable log cannot write to disk).
  const banner = document.getElementById("hub-banner");
  let readyChecks = 0;
  const checkReady = async () => {
    if (document.hidden) return;
    let text = "";
    try {
      const res = await fetch("/readyz", { cache: "no-store" });
      if (res.status === 503) {
        const p = await res.json().catch(() => ({}));
        text = `The hub is not taking readings: ${p.title || "not ready"}${p.detail ? " — " + p.detail : ""}`;
      }
    } catch { /* unreachable: the connection indicator says so */ }
    banner.textContent = text;
    banner.hidden = text === "";
    readyChecks++;
  };
  checkReady();
  setInterval(checkReady, 5000);

  // Alert badge on every page.
  const badge = document.getElementById("alert-badge");
  const alertsTab = document.querySelector('[data-nav="alerts"]');
  alerts.onChange(() => {
    alertsTab.hidden = alerts.available === false;
    const n = alerts.firingCount();
    badge.hidden = n === 0;
    badge.textContent = n > 99 ? "99+" : String(n);
    badge.title = `${n} firing alert${n === 1 ? "" : "s"} not acknowledged`;
  });

  // Router.
  const root = document.getElementById("view");
  let unmount = () => {};
  let current = null;
  const route = () => {
    const path = location.hash.replace(/^#/, "") || "/";
    unmount();
    let view, nav;
    const m = path.match(/^\/devices\/(.+)$/);
    if (m) {
      view = new DeviceView(ctx, decodeURIComponent(m[1]));
      nav = "fleet";
    } else if (path === "/alerts") {
      view = new AlertsView(ctx);
      nav = "alerts";
    } else {
      view = new FleetView(ctx);
      nav = "fleet";
    }
    current = view;
    for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
    unmount = view.mount(root);
    document.title = m ? `${decodeURIComponent(m[1])} · Telehub` : nav === "alerts" ? "Alerts · Telehub" : "Telehub";
    window.scrollTo(0, 0);
  };
  window.addEventListener("hashchange", route);

  // Hooks for the browser tests and for poking around in the console.
  window.__telehub = {
    ctx,
    dropConnection: (holdMs = 0) => live.drop(holdMs),
    connection: () => live.state,
    lastSeq: () => live.lastSeq,
    duplicates: () => live.duplicates,
    connects: () => live.connects,
    series: field => (current instanceof DeviceView ? seriesOf(current, field) : null),
    chartsReady: () => current instanceof DeviceView && current.uPlot !== undefined && !current.loadingHistory,
    hubBanner: () => (banner.hidden ? "" : banner.textContent),
    readyChecks: () => readyChecks,
    renderedRows: () => document.querySelectorAll(".viewport .row:not([hidden])").length,
  };

  // The token's role: a viewer's page offers no controls it may not use
  // (CSS: body[data-role="viewer"] .needs-operator).
  api.optional("/api/v1/whoami").then(me => {
    if (!me?.role) return;
    document.body.dataset.role = me.role;
    document.getElementById("role").textContent = me.role === "viewer" ? "read-only" : "";
  }).catch(() => {});

  live.connect();
  fleet.load();
  alerts.refresh();
  route();
}

boot();

// Alerts in the page: the recent alerts of the hub, refreshed when the live
// stream says an alert changed. available is false when this hub has no
// alerts API (the alerts panels and the badge then stay hidden).

import { debounce, toMs } from "./util.js";

const STATE_RANK = { firing: 0, pending: 1, resolved: 2 };
const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };

/** rank orders alerts: firing and not acknowledged first, then by severity, newest first. */
export function compareAlerts(a, b) {
  const ra = (STATE_RANK[a.state] ?? 3) * 2 + (a.state === "firing" && a.acked_at ? 1 : 0);
  const rb = (STATE_RANK[b.state] ?? 3) * 2 + (b.state === "firing" && b.acked_at ? 1 : 0);
  if (ra !== rb) return ra - rb;
  const sa = SEVERITY_RANK[a.severity] ?? 3, sb = SEVERITY_RANK[b.severity] ?? 3;
  if (sa !== sb) return sa - sb;
  return toMs(b.fired_at || b.started_at) - toMs(a.fired_at || a.started_at);
}

/** AlertStore keeps the alert list; onChange(f) is called after every refresh. */
export class AlertStore {
  constructor(api, live) {
    this.api = api;
    this.alerts = [];
    this.available = undefined;
    this.listeners = new Set();
    this.inflight = null;
    this.again = false;
    this.refreshSoon = debounce(() => this.refresh(), 250);
    live.on("alert", m => this.event(m));
    live.on("gap", () => this.refresh());
    live.on("resumed", () => this.refresh());
  }

  onChange(f) {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  changed() {
    for (const f of this.listeners) f();
  }

  /** event applies an alert message at once (when it carries the alert), then refreshes. */
  event(m) {
    const a = m.alert?.alert ?? m.alert;
    if (a && a.id) {
      const i = this.alerts.findIndex(x => x.id === a.id);
      if (i >= 0) this.alerts[i] = { ...this.alerts[i], ...a };
      else this.alerts.unshift(a);
      this.changed();
    }
    this.refreshSoon();
  }

  /** refresh reloads the list; concurrent calls share one request and one follow-up. */
  refresh() {
    if (this.inflight) {
      this.again = true;
      return this.inflight;
    }
    this.inflight = (async () => {
      try {
        const res = await this.api.optional("/api/v1/alerts?limit=500");
        if (res === undefined) {
          this.available = false;
        } else {
          this.available = true;
          this.alerts = Array.isArray(res) ? res : res.alerts || [];
        }
      } catch {
        // Keep what is shown; the next event or reconnect refreshes.
      } finally {
        this.inflight = null;
        this.changed();
        if (this.again) {
          this.again = false;
          this.refresh();
        }
      }
    })();
    return this.inflight;
  }

  sorted() {
    return [...this.alerts].sort(compareAlerts);
  }

  /** firingCount is the badge: firing alerts nobody has acknowledged yet. */
  firingCount() {
    let n = 0;
    for (const a of this.alerts) if (a.state === "firing" && !a.acked_at) n++;
    return n;
  }

  async ack(id) {
    const res = await this.api.post(`/api/v1/alerts/${encodeURIComponent(id)}/ack`, {});
    const a = res?.alert ?? res;
    if (a && a.id) {
      const i = this.alerts.findIndex(x => x.id === a.id);
      if (i >= 0) this.alerts[i] = a;
      this.changed();
    }
    this.refresh();
  }
}

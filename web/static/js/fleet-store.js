// The fleet's state in the page: every device with its presence and latest
// readings, kept current from the device list and the live stream.

import { toMs, debounce } from "./util.js";

/**
 * FleetStore holds one record per device. Views subscribe with onChange(f):
 * f(id, structural) is called for every change, structural when something a
 * filter or sort depends on changed (a device came or went, its presence,
 * type or labels). Views collect the ids and redraw once per frame.
 */
export class FleetStore {
  constructor(api, live) {
    this.api = api;
    this.devices = new Map();
    this.listeners = new Set();
    this.loaded = false;
    this.loading = null;
    this.error = null;
    this.reloadSoon = debounce(() => this.load(), 1500);
    live.on("reading", m => this.reading(m));
    live.on("presence", m => this.presence(m));
    live.on("gap", () => this.load());
  }

  onChange(f) {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  changed(id, structural) {
    for (const f of this.listeners) f(id, structural);
  }

  record(id) {
    let d = this.devices.get(id);
    if (!d) {
      d = { id, type: "", name: "", labels: {}, online: false, lastSeen: 0, latest: {}, latestTs: 0, connection: null, listed: false };
      this.devices.set(id, d);
    }
    return d;
  }

  /** load reads the whole device list, page by page, and merges it. */
  load() {
    if (this.loading) return this.loading;
    this.loading = (async () => {
      try {
        const seen = new Set();
        let after = "";
        for (;;) {
          const q = new URLSearchParams({ limit: "1000" });
          if (after) q.set("after", after);
          const page = await this.api.get("/api/v1/devices?" + q);
          for (const v of page.devices || []) {
            seen.add(v.id);
            this.merge(v);
          }
          if (!page.next) break;
          after = page.next;
        }
        for (const id of [...this.devices.keys()]) {
          if (!seen.has(id)) {
            this.devices.delete(id);
            this.changed(id, true);
          }
        }
        this.loaded = true;
        this.error = null;
      } catch (e) {
        this.error = e;
      } finally {
        this.loading = null;
        this.changed(null, true);
      }
    })();
    return this.loading;
  }

  merge(v) {
    const d = this.record(v.id);
    d.listed = true;
    d.type = v.type || "";
    d.name = v.name || "";
    d.labels = v.labels || {};
    d.online = !!v.online;
    d.connection = v.connection || null;
    d.lastSeen = Math.max(d.lastSeen, toMs(v.last_seen));
    const ts = toMs(v.latest_ts);
    if (v.latest && ts >= d.latestTs) {
      d.latest = { ...d.latest, ...v.latest };
      d.latestTs = ts;
    }
    this.changed(v.id, true);
  }

  reading(m) {
    const d = this.record(m.device_id);
    if (!d.listed) this.reloadSoon(); // a new device: fetch its type and labels
    if (m.device_type && !d.type) d.type = m.device_type;
    const ts = toMs(m.ts);
    if (ts >= d.latestTs) {
      Object.assign(d.latest, m.fields);
      d.latestTs = ts;
    }
    d.lastSeen = Math.max(d.lastSeen, ts);
    const structural = !d.online;
    d.online = true; // it publishes, so it is connected
    this.changed(d.id, structural);
  }

  presence(m) {
    const p = m.presence || {};
    const d = this.record(m.device_id);
    if (!d.listed) this.reloadSoon();
    d.online = !!p.online;
    if (p.online) d.connection = p.connection || d.connection;
    d.lastSeen = Math.max(d.lastSeen, toMs(p.at || m.ts));
    this.changed(d.id, true);
  }
}

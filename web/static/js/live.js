// The live stream client: one WebSocket, automatic reconnect with resume.
//
// Every message carries a seq. The client remembers the last one it handled
// and reconnects with ?since=SEQ, so the hub replays what was missed; a
// message whose seq was already handled is dropped, so nothing is applied
// twice. When the client fell further behind than the hub's replay buffer,
// the hub says so with a "gap" message and listeners reload what they show.

const MAX_BACKOFF = 10000;

/**
 * Live is the stream connection. Listeners: on(kind, f) for reading,
 * presence, alert, command, state; on("gap", f) when messages were lost;
 * on("resumed", f) after a reconnect; on("state", f) for the connection state
 * (connecting, live, reconnecting, unauthorized).
 */
export class Live {
  constructor(api) {
    this.api = api;
    this.lastSeq = 0;
    this.state = "connecting";
    this.ws = null;
    this.listeners = new Map();
    this.backoff = 500;
    this.timer = 0;
    this.connects = 0;
    this.received = 0; // messages handled, for the rate display
    this.duplicates = 0; // messages dropped because their seq was handled already
    this.closed = false;
    this.ticketsWork = true;
    this.holdUntil = 0; // drop(holdMs) keeps the connection down until then
  }

  on(kind, f) {
    if (!this.listeners.has(kind)) this.listeners.set(kind, []);
    this.listeners.get(kind).push(f);
    return () => {
      const l = this.listeners.get(kind);
      l.splice(l.indexOf(f), 1);
    };
  }

  emit(kind, m) {
    for (const f of this.listeners.get(kind) || []) {
      try { f(m); } catch (e) { console.error("live listener", kind, e); }
    }
  }

  setState(s, detail) {
    this.state = s;
    this.emit("connection", { state: s, detail });
  }

  /** url returns the stream URL: a one-time ticket when the hub issues them, else the token. */
  async url() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = new URLSearchParams();
    if (this.ticketsWork) {
      try {
        const t = await this.api.post("/api/v1/live/ticket");
        q.set("ticket", t.ticket);
      } catch (e) {
        if (e.status === 404 || e.status === 405) this.ticketsWork = false;
        else throw e;
      }
    }
    if (!q.has("ticket")) q.set("token", this.api.token);
    if (this.lastSeq > 0) q.set("since", String(this.lastSeq));
    return `${proto}//${location.host}/api/v1/live?${q}`;
  }

  async connect() {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.setState(this.connects === 0 ? "connecting" : "reconnecting");
    let url;
    try {
      url = await this.url();
    } catch (e) {
      if (e.status === 401) { this.setState("unauthorized"); return; }
      this.retry();
      return;
    }
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 500;
      const resumed = this.connects > 0;
      this.connects++;
      this.setState("live");
      if (resumed) this.emit("resumed", { since: this.lastSeq });
    };
    ws.onmessage = ev => this.handle(ev.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.retry();
    };
    ws.onerror = () => {}; // onclose follows
  }

  retry() {
    if (this.closed) return;
    this.setState("reconnecting", { in: this.backoff });
    const wait = Math.max(this.backoff * (0.75 + Math.random() * 0.5), this.holdUntil - Date.now());
    this.backoff = Math.min(MAX_BACKOFF, this.backoff * 2);
    this.timer = setTimeout(() => this.connect(), wait);
  }

  handle(data) {
    let m;
    try { m = JSON.parse(data); } catch { return; }
    if (typeof m.seq === "number") {
      if (m.seq <= this.lastSeq) { this.duplicates++; return; }
      this.lastSeq = m.seq;
    }
    this.received++;
    if (m.kind === "gap") {
      // Messages are lost: continue from where the hub resumes (also when it
      // starts below our position: a restarted hub), and reload the views.
      if (typeof m.next === "number" && m.next > 0) this.lastSeq = m.next - 1;
      this.emit("gap", m);
      return;
    }
    this.emit(m.kind, m);
  }

  /** reconnectNow cancels a pending backoff wait (the browser went online again). */
  reconnectNow() {
    if (!this.ws && !this.closed) { this.backoff = 500; this.connect(); }
  }

  /**
   * drop closes the socket as a network failure would, and stays away for
   * holdMs; then the client reconnects and resumes.
   */
  drop(holdMs = 0) {
    this.holdUntil = Date.now() + holdMs;
    if (this.ws) this.ws.close(4000, "dropped by the page");
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
  }
}

// The alerts view: active alerts first (firing before pending, by
// severity), then recent resolved ones; operators acknowledge from here.

import { h, ago, fmtValue, toMs, fmtTime, toast } from "./util.js";

let filter = "active"; // active | all

function ackButton(ctx, a, label = "Acknowledge") {
  if (a.state !== "firing") return h("span");
  if (a.acked_at) {
    return h("span", { class: "sub", title: `Acknowledged by ${a.acked_by || "?"} at ${fmtTime(toMs(a.acked_at))}` }, "acked " + ago(toMs(a.acked_at)));
  }
  return h("button", { class: "btn small needs-operator", type: "button", dataset: { ack: a.id }, onclick: async e => {
    const b = e.currentTarget;
    b.disabled = true;
    b.textContent = "Acking…";
    try {
      await ctx.alerts.ack(a.id);
      toast("Alert acknowledged");
    } catch (err) {
      b.disabled = false;
      b.textContent = label;
      toast(err.status === 403 ? "Acknowledging needs an operator token." : "Acknowledge failed: " + err.message, "error");
    }
  } }, label);
}

function stateLabel(a) {
  if (a.state === "firing" && a.acked_at) return h("span", { class: "pill acknowledged" }, "acked");
  return h("span", { class: "pill " + a.state }, a.state);
}

function title(a) {
  return a.rule_name || a.rule_id || "alert";
}

/** alertRow renders one alert: a table row, or a list item (compact, in the device view). */
export function alertRow(ctx, a, { compact = false } = {}) {
  const since = toMs(a.fired_at || a.started_at);
  if (compact) {
    return h("li", { dataset: { alert: a.id, state: a.state } },
      h("span", { class: "pill " + (a.severity || "") }, a.severity || "–"),
      h("div", { class: "main" }, h("div", null, title(a)), h("div", { class: "sub" }, stateLabel(a), " ", a.state === "resolved" ? ago(toMs(a.resolved_at)) : ago(since))),
      ackButton(ctx, a, "Ack"));
  }
  return h("div", { class: "row-a sev-" + (a.severity || ""), role: "row", dataset: { alert: a.id, state: a.state } },
    h("div", { class: "c-sev" }, h("span", { class: "pill " + (a.severity || "") }, a.severity || "–")),
    h("div", { class: "c-state" }, stateLabel(a)),
    h("div", { class: "main c-main" }, h("div", null, h("b", null, title(a))), h("div", { class: "sub" }, a.summary || (a.field ? `${a.field} ${fmtValue(a.value)}` : ""))),
    h("div", { class: "c-dev" }, h("a", { href: "#/devices/" + encodeURIComponent(a.device_id) }, a.device_id)),
    h("div", { class: "sub c-since", title: fmtTime(since) }, a.state === "resolved" ? "resolved " + ago(toMs(a.resolved_at)) : "since " + ago(since)),
    h("div", { class: "c-ack" }, ackButton(ctx, a)));
}

/** AlertsView lists the hub's alerts. */
export class AlertsView {
  constructor(ctx) { this.ctx = ctx; }

  mount(root) {
    const ctx = this.ctx;
    const seg = h("div", { class: "seg", role: "group", "aria-label": "Which alerts" },
      ...[["active", "Active"], ["all", "All"]].map(([v, t]) => h("button", { type: "button", "aria-pressed": String(filter === v), onclick: e => {
        filter = v;
        for (const b of seg.children) b.setAttribute("aria-pressed", String(b === e.currentTarget));
        this.render();
      } }, t)));
    this.list = h("div", { class: "alerts", role: "table" });
    this.countEl = h("span", { class: "count" });
    root.replaceChildren(
      h("div", { class: "dev-head" }, h("h1", null, "Alerts")),
      h("section", { class: "card" }, h("header", null, seg, h("span", { class: "spacer" }), this.countEl), this.list));
    const off = ctx.alerts.onChange(() => this.render());
    const tick = setInterval(() => this.render(), 10000);
    ctx.alerts.refresh();
    this.render();
    return () => { off(); clearInterval(tick); };
  }

  render() {
    const store = this.ctx.alerts;
    if (store.available === false) {
      this.list.replaceChildren(h("div", { class: "empty" }, "This hub has no alerting yet."));
      this.countEl.textContent = "";
      return;
    }
    let all = store.sorted();
    if (filter === "active") all = all.filter(a => a.state === "firing" || a.state === "pending");
    this.countEl.textContent = `${store.firingCount()} firing, not acknowledged`;
    this.list.replaceChildren(
      h("div", { class: "row-a head", role: "row" }, h("div", null, "Severity"), h("div", null, "State"), h("div", null, "Alert"), h("div", null, "Device"), h("div", { class: "c-since" }, "When"), h("div")),
      ...(all.length ? all.map(a => alertRow(this.ctx, a)) : [h("div", { class: "empty" }, filter === "active" ? "No active alerts. All quiet." : "No alerts yet.")]));
  }
}

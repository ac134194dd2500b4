// The state panel of the device view: desired and reported state side by
// side, the keys where they differ marked, and an editor for the desired
// state. Hidden when the hub has no state API.

import { h, toMs, ago, toast } from "./util.js";
import { enc } from "./api.js";

/** StatePanel shows GET /api/v1/devices/{id}/state and follows "state" events. */
export class StatePanel {
  constructor(ctx, id) {
    this.ctx = ctx;
    this.id = id;
    this.state = null;
    this.body = h("div", { class: "body" });
    this.el = h("section", { class: "card", hidden: true, "aria-label": "State" },
      h("header", null, h("h2", null, "State"), h("span", { class: "spacer" }),
        this.editBtn = h("button", { class: "btn small needs-operator", type: "button", onclick: () => this.edit() }, "Edit desired")),
      this.body);
    this.off = ctx.live.on("state", m => {
      if (m.device_id !== this.id) return;
      if (m.state && typeof m.state === "object" && "desired_version" in m.state) {
        this.state = m.state;
        this.el.hidden = false;
        if (!this.editing) this.render();
      } else this.load();
    });
  }

  async load() {
    try {
      const s = await this.ctx.api.optional(`/api/v1/devices/${enc(this.id)}/state`);
      if (s === undefined) {
        this.el.hidden = true;
        return;
      }
      this.state = s;
      this.el.hidden = false;
      if (!this.editing) this.render();
    } catch {
      // keep what is shown
    }
  }

  render() {
    const s = this.state || {};
    const desired = s.desired || {}, reported = s.reported || {};
    const delta = s.delta || {};
    const keys = [...new Set([...Object.keys(desired), ...Object.keys(reported)])].sort();
    const show = v => (v === undefined ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v));
    const rows = keys.map(k => [
      h("span", { class: "k" }, k),
      h("span", { class: "v" }, show(reported[k]), k in desired && JSON.stringify(desired[k]) !== JSON.stringify(reported[k]) ? h("span", { class: "muted" }, " → " + show(desired[k])) : ""),
      k in delta || (k in desired && JSON.stringify(desired[k]) !== JSON.stringify(reported[k])) ? h("span", { class: "d", title: "desired differs from reported" }, "pending") : h("span"),
    ]).flat();
    const when = at => (at ? ", " + ago(toMs(at)) : "");
    this.body.replaceChildren(
      keys.length ? h("div", { class: "kv" }, h("span", { class: "k" }, "key"), h("span", { class: "k" }, "reported → desired"), h("span"), ...rows)
        : h("div", { class: "muted" }, "The device has reported no state and none is desired."),
      h("div", { class: "sub muted", style: "margin-top:.6rem;display:flex;gap:.4rem 1rem;flex-wrap:wrap;align-items:center" },
        keys.length ? h("span", { class: "pill " + (s.in_sync ? "ok" : "pending") }, s.in_sync ? "in sync" : "syncing") : "",
        h("span", { title: s.desired_by ? "by " + s.desired_by : "" }, `desired v${s.desired_version ?? 0}${when(s.desired_at)}`),
        h("span", null, `reported v${s.reported_version ?? 0}${when(s.reported_at)}`)));
  }

  edit() {
    this.editing = true;
    const s = this.state || {};
    const ta = h("textarea", { class: "input", rows: 5, "aria-label": "Desired state (JSON)" });
    ta.value = JSON.stringify(s.desired || {}, null, 2);
    const save = async () => {
      let desired;
      try { desired = JSON.parse(ta.value); } catch { toast("The desired state is not valid JSON.", "error"); return; }
      try {
        // Conditional on the version shown, so a concurrent change is not overwritten.
        await this.ctx.api.put(`/api/v1/devices/${enc(this.id)}/state`, desired, { "If-Match": `"${s.desired_version ?? 0}"` });
        this.editing = false;
        toast("Desired state saved");
        await this.load();
      } catch (e) {
        toast(e.status === 412 || e.status === 409 ? "The state changed meanwhile; reload and edit again." : e.status === 403 ? "Changing state needs an operator token." : "Save failed: " + (e.detail || e.message), "error");
      }
    };
    this.body.replaceChildren(ta, h("div", { class: "form-row", style: "margin-top:.6rem" },
      h("button", { class: "btn primary small", type: "button", onclick: save }, "Save"),
      h("button", { class: "btn small", type: "button", onclick: () => { this.editing = false; this.render(); } }, "Cancel")));
  }

  destroy() { this.off(); }
}

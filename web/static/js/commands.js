// The command panel of the device view: controls for the device's type
// (a setpoint for thermostats, vibrate for wearables, a free form for the
// rest) and the device's recent commands, whose status follows the live
// stream: queued, sent, delivered, succeeded, failed, expired.

import { h, ago, toMs, toast, fmtTime } from "./util.js";
import { enc } from "./api.js";

const FINAL = new Set(["succeeded", "failed", "expired"]);
const SETPOINT = { min: 5, max: 30, step: 0.5 };

/** CommandPanel is the card; it hides itself when the hub has no commands API. */
export class CommandPanel {
  constructor(ctx, id, device) {
    this.ctx = ctx;
    this.id = id;
    this.device = device;
    this.commands = new Map(); // command id -> command
    this.available = undefined;
    this.type = null;
    this.controls = h("div", { class: "body needs-operator" });
    this.listEl = h("ul", { class: "list", "aria-label": "Recent commands" });
    this.el = h("section", { class: "card", hidden: true, "aria-label": "Commands" },
      h("header", null, h("h2", null, "Commands")),
      h("p", { class: "body muted viewer-only" }, "Sending commands needs an operator token; this one is a viewer's."),
      this.controls, this.listEl);
    this.off = ctx.live.on("command", m => {
      if (m.device_id !== this.id) return;
      const c = m.command?.command ?? m.command;
      if (c && c.id) this.update(c);
    });
  }

  /** load fetches the recent commands; a 404 means this hub has no commands API. */
  async load() {
    try {
      const res = await this.ctx.api.optional(`/api/v1/devices/${enc(this.id)}/commands?limit=10`);
      if (res === undefined) {
        this.available = false;
        this.el.hidden = true;
        return;
      }
      this.available = true;
      for (const c of Array.isArray(res) ? res : res.commands || []) this.update(c, true);
    } catch {
      this.available ??= true; // the API exists; it failed this time
    }
    this.el.hidden = !this.available;
    this.deviceChanged();
    this.renderList();
  }

  /** deviceChanged rebuilds the controls when the device's type becomes known. */
  deviceChanged() {
    const d = this.device();
    if (!this.available || !d || !d.type || d.type === this.type) {
      if (d && this.setpointOut && !this.touched && typeof d.latest.setpoint === "number") this.setSetpoint(d.latest.setpoint);
      return;
    }
    this.type = d.type;
    this.schema = null;
    this.controls.replaceChildren(...this.controlsFor(d));
    // The type's declared commands, where the hub has schemas: they bound
    // the setpoint and drive the form for any other command.
    this.ctx.api.optional(`/api/v1/device-types/${enc(d.type)}/commands`).then(sc => {
      if (!sc?.commands || this.type !== d.type) return;
      this.schema = sc;
      const v = sc.commands.set_setpoint?.params?.value;
      if (v) {
        SETPOINT.min = v.minimum ?? SETPOINT.min;
        SETPOINT.max = v.maximum ?? SETPOINT.max;
      }
      this.controls.replaceChildren(...this.controlsFor(d));
    }).catch(() => {});
  }

  controlsFor(d) {
    if (d.type === "thermostat") {
      this.value = typeof d.latest.setpoint === "number" ? d.latest.setpoint : 21;
      this.setpointOut = h("output", { "aria-live": "polite" });
      this.setSetpoint(this.value);
      const step = dir => () => { this.touched = true; this.setSetpoint(this.value + dir * SETPOINT.step); };
      return [
        h("div", { class: "form-row" }, h("label", null, "Setpoint"),
          h("div", { class: "setpoint" },
            h("button", { class: "btn", type: "button", "aria-label": "Lower setpoint", onclick: step(-1) }, "−"),
            this.setpointOut,
            h("button", { class: "btn", type: "button", "aria-label": "Raise setpoint", onclick: step(1) }, "+")),
          h("button", { class: "btn primary", type: "button", dataset: { command: "set_setpoint" }, onclick: () => {
            this.touched = false;
            this.send("set_setpoint", { value: this.value });
          } }, "Set")),
        h("div", { class: "form-row" }, h("label", null, "Mode"),
          h("div", { class: "seg" },
            h("button", { type: "button", dataset: { command: "set_mode", mode: "heat" }, onclick: () => this.send("set_mode", { mode: "heat" }) }, "Heat"),
            h("button", { type: "button", dataset: { command: "set_mode", mode: "off" }, onclick: () => this.send("set_mode", { mode: "off" }) }, "Off"))),
        this.freeForm(),
      ];
    }
    if (d.type === "wearable") {
      return [
        h("div", { class: "form-row" }, h("label", null, "Vibrate"),
          h("button", { class: "btn primary", type: "button", dataset: { command: "vibrate" }, onclick: () => this.send("vibrate", { duration_ms: 500 }) }, "Short"),
          h("button", { class: "btn", type: "button", onclick: () => this.send("vibrate", { duration_ms: 2000 }) }, "Long (2 s)")),
        h("div", { class: "form-row" }, h("label", { title: "How often the wearable publishes" }, "Interval"),
          h("div", { class: "seg" }, ...[[1000, "1 s"], [5000, "5 s"], [30000, "30 s"], [60000, "1 min"]].map(([ms, t]) =>
            h("button", { type: "button", dataset: { command: "set_interval", ms: String(ms) }, onclick: () => this.send("set_interval", { interval_ms: ms }) }, t)))),
        this.freeForm(),
      ];
    }
    return [this.freeForm(true)];
  }

  setSetpoint(v) {
    this.value = Math.min(SETPOINT.max, Math.max(SETPOINT.min, Math.round(v / SETPOINT.step) * SETPOINT.step));
    this.setpointOut.value = this.value.toFixed(1) + " °C";
    this.setpointOut.textContent = this.value.toFixed(1) + " °C";
  }

  /**
   * freeForm sends any other command: picked from the type's schema with an
   * input per parameter, or by name with JSON parameters when there is none.
   */
  freeForm(open = false) {
    if (this.schema?.commands && Object.keys(this.schema.commands).length) return this.schemaForm(open);
    const name = h("input", { class: "input", placeholder: "command name", "aria-label": "Command name", style: "flex:1" });
    const params = h("textarea", { class: "input", rows: 2, placeholder: '{"key": "value"}', "aria-label": "Parameters (JSON)" });
    const form = h("form", { class: "form-row", style: "flex-direction:column;align-items:stretch", onsubmit: e => {
      e.preventDefault();
      let p = {};
      try { p = params.value.trim() ? JSON.parse(params.value) : {}; } catch { toast("The parameters are not valid JSON.", "error"); return; }
      if (!name.value.trim()) return;
      this.send(name.value.trim(), p);
    } }, h("div", { class: "form-row" }, name, h("button", { class: "btn", type: "submit" }, "Send")), params);
    return h("details", { open, style: "margin-top:.75rem" }, h("summary", { class: "muted", style: "cursor:pointer" }, "Other command"), form);
  }

  schemaForm(open) {
    const cmds = this.schema.commands;
    const names = Object.keys(cmds).sort();
    const select = h("select", { class: "input", "aria-label": "Command", style: "flex:1" }, ...names.map(n => h("option", { value: n }, n)));
    const fields = h("div");
    const desc = h("div", { class: "sub muted" });
    let inputs = {};
    const build = () => {
      const spec = cmds[select.value] || {};
      desc.textContent = spec.description || "";
      inputs = {};
      fields.replaceChildren(...Object.entries(paramsOf(spec)).sort().map(([p, ps]) => {
        let input;
        if (ps.enum) input = h("select", { class: "input" }, ...(ps.required ? [] : [h("option", { value: "" }, "–")]), ...ps.enum.map(v => h("option", { value: JSON.stringify(v) }, String(v))));
        else if (ps.type === "boolean") input = h("select", { class: "input" }, h("option", { value: "" }, "–"), h("option", { value: "true" }, "true"), h("option", { value: "false" }, "false"));
        else if (ps.type === "number" || ps.type === "integer") input = h("input", { class: "input", type: "number", min: ps.minimum, max: ps.maximum, step: ps.type === "integer" ? 1 : "any", required: !!ps.required, style: "width:8rem" });
        else input = h("input", { class: "input", type: "text", required: !!ps.required, placeholder: ps.type === "object" || ps.type === "array" ? "JSON" : "" });
        inputs[p] = [input, ps];
        return h("div", { class: "form-row", style: "margin-top:.5rem" }, h("label", { title: ps.description || "" }, p), input, ps.unit ? h("span", { class: "muted" }, ps.unit) : "");
      }));
    };
    select.addEventListener("change", build);
    build();
    const form = h("form", { onsubmit: e => {
      e.preventDefault();
      const params = {};
      for (const [p, [input, ps]] of Object.entries(inputs)) {
        const v = input.value.trim();
        if (v === "") continue;
        try {
          params[p] = ps.enum || ps.type === "boolean" || ps.type === "object" || ps.type === "array" ? JSON.parse(v) : ps.type === "number" || ps.type === "integer" ? Number(v) : v;
        } catch { toast(`${p}: not valid JSON`, "error"); return; }
      }
      this.send(select.value, params);
    } }, h("div", { class: "form-row" }, select, h("button", { class: "btn", type: "submit" }, "Send")), desc, fields);
    return h("details", { open, style: "margin-top:.75rem" }, h("summary", { class: "muted", style: "cursor:pointer" }, "Other command"), form);
  }

  async send(name, params) {
    try {
      const c = await this.ctx.api.post(`/api/v1/devices/${enc(this.id)}/commands`, { name, params });
      const cmd = c?.command ?? c;
      if (cmd && cmd.id) this.update(cmd);
    } catch (e) {
      toast(e.status === 403 ? "Sending commands needs an operator token." : `${name} refused: ${e.detail || e.message}`, "error");
    }
  }

  /** update merges a command; a newer revision (or a later status) wins. */
  update(c, quiet = false) {
    const old = this.commands.get(c.id);
    if (old && (c.revision ?? 0) < (old.revision ?? 0)) return;
    this.commands.set(c.id, { ...old, ...c });
    if (!quiet) this.renderList();
  }

  renderList() {
    const list = [...this.commands.values()].sort((a, b) => toMs(b.created_at) - toMs(a.created_at)).slice(0, 10);
    for (const c of [...this.commands.values()]) if (!list.includes(c)) this.commands.delete(c.id);
    this.listEl.replaceChildren(...(list.length ? list.map(c => h("li", { dataset: { commandId: c.id, status: c.status } },
      h("div", { class: "main" },
        h("div", null, h("b", null, c.name), " ", h("span", { class: "mono muted" }, paramsText(c.params))),
        h("div", { class: "sub", title: `by ${c.created_by || "?"} at ${fmtTime(toMs(c.created_at))}` },
          ago(toMs(c.created_at)), c.error ? " · " + c.error : "")),
      h("span", { class: "pill " + c.status, title: FINAL.has(c.status) ? "final" : "in progress" }, c.status)))
      : [h("li", { class: "muted" }, "No commands sent yet.")]));
  }

  destroy() { this.off(); }
}

// paramsOf lists a command's parameters as the form shows them: the short
// form as declared, or a params_schema's top-level properties in the
// nearest short form (one without a single plain type is entered as JSON).
function paramsOf(spec) {
  if (spec.params) return spec.params;
  const s = spec.params_schema || {};
  const required = new Set(s.required || []);
  return Object.fromEntries(Object.entries(s.properties || {}).map(([p, ps]) => [p, {
    type: typeof ps.type === "string" ? ps.type : "object", enum: ps.enum, minimum: ps.minimum, maximum: ps.maximum,
    description: ps.description, required: required.has(p),
  }]));
}

function paramsText(p) {
  if (!p || typeof p !== "object") return "";
  const s = Object.entries(p).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
  return s.length > 40 ? s.slice(0, 39) + "…" : s;
}

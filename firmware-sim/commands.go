package firmwaresim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Command limits of the simulated devices.
const (
	// MinIntervalMillis is the shortest publish interval set_interval accepts.
	MinIntervalMillis = 100
	// MaxIntervalMillis is the longest publish interval set_interval accepts.
	MaxIntervalMillis = 3_600_000
)

// Control plumbing of one simulated device.
const (
	inboxSize     = 64  // commands and desired states waiting for the run loop
	rememberedIDs = 128 // command IDs remembered to answer resends without re-running them
	subscribeWait = 10 * time.Second
)

// Param is one parameter in a command schema, in the form the hub's
// PUT /api/v1/device-types/{type}/commands takes.
type Param struct {
	Type        string   `json:"type"`
	Description string   `json:"description,omitempty"`
	Required    bool     `json:"required,omitempty"`
	Minimum     *float64 `json:"minimum,omitempty"`
	Maximum     *float64 `json:"maximum,omitempty"`
	Enum        []any    `json:"enum,omitempty"`
	Unit        string   `json:"unit,omitempty"`
}

// CommandSpec declares one command of a device type.
type CommandSpec struct {
	Description string           `json:"description,omitempty"`
	Params      map[string]Param `json:"params,omitempty"`
}

// CommandSchema is the set of commands a device type declares to the hub.
type CommandSchema struct {
	Commands map[string]CommandSpec `json:"commands"`
}

func ptr(v float64) *float64 { return &v }

// CommandSchemas returns the command schemas of the simulated device types,
// which the Fleet declares to the hub so that it refuses invalid commands
// before they are sent.
func CommandSchemas() map[string]CommandSchema {
	return map[string]CommandSchema{
		TypeThermostat: {Commands: map[string]CommandSpec{
			"set_setpoint": {Description: "Set the target room temperature.", Params: map[string]Param{
				"value": {Type: "number", Required: true, Minimum: ptr(MinSetpoint), Maximum: ptr(MaxSetpoint), Unit: "°C"}}},
			"set_mode": {Description: "Run the heater to hold the setpoint (heat) or keep it off.", Params: map[string]Param{
				"mode": {Type: "string", Required: true, Enum: []any{ModeHeat, ModeOff}}}},
		}},
		TypeWearable: {Commands: map[string]CommandSpec{
			"vibrate": {Description: "Vibrate to get the wearer's attention.", Params: map[string]Param{
				"duration_ms": {Type: "number", Minimum: ptr(1), Maximum: ptr(MaxVibrateMillis), Unit: "ms",
					Description: "Default 500."}}},
			"set_interval": {Description: "Change how often the wearable publishes readings.", Params: map[string]Param{
				"interval_ms": {Type: "integer", Required: true, Minimum: ptr(MinIntervalMillis), Maximum: ptr(MaxIntervalMillis), Unit: "ms"}}},
		}},
	}
}

// declareSchemas declares the command schema of each simulated type in
// use. A hub without the endpoint (404, 405) is told nothing; other failures
// are logged: the devices still obey, the hub only validates less.
func (f *Fleet) declareSchemas(ctx context.Context, devs []*simDevice) {
	schemas := CommandSchemas()
	done := map[string]bool{}
	for _, d := range devs {
		cs, ok := schemas[d.typ]
		if !ok || done[d.typ] {
			continue
		}
		done[d.typ] = true
		err := f.prov.put(ctx, "/api/v1/device-types/"+url.PathEscape(d.typ)+"/commands", cs)
		var apiErr *APIError
		switch {
		case errors.As(err, &apiErr) && (apiErr.Status == http.StatusNotFound || apiErr.Status == http.StatusMethodNotAllowed):
			f.log.Debug("hub takes no command schemas", "device_type", d.typ)
		case err != nil:
			f.log.Warn("command schema not declared", "device_type", d.typ, "err", err)
		}
	}
}

// put sends a JSON PUT to path and expects 200 or 204.
func (p *provisioner) put(ctx context.Context, path string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimSuffix(p.base.String(), "/")+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("hub api: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxAPIResponse))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		return decodeProblem(resp.StatusCode, data)
	}
	return nil
}

// inbound is a message for the device from the hub.
type inbound struct {
	topic   string
	payload []byte
}

// deviceControl is a simulated device's side of commands and state. The
// inbox is fed by the MQTT client; everything else belongs to the run
// goroutine.
type deviceControl struct {
	inbox    chan inbound
	interval time.Duration // set by set_interval; 0 keeps the configured one
	base     time.Duration // the configured interval
	epoch    time.Time     // start of simulated time
	scale    float64       // simulated seconds per real second
	answers  map[string][]byte
	order    []string // answered IDs, oldest first
}

func (d *simDevice) initControl(cfg Config) {
	scale := cfg.TimeScale
	if scale <= 0 {
		scale = 1
	}
	d.ctl = deviceControl{inbox: make(chan inbound, inboxSize), base: cfg.Interval, epoch: time.Now(), scale: scale,
		answers: map[string][]byte{}}
}

// simTime maps real time onto the model's clock, which runs scale times
// faster from the device's start.
func (d *simDevice) simTime(now time.Time) time.Time {
	if d.ctl.scale == 1 {
		return now
	}
	return d.ctl.epoch.Add(time.Duration(float64(now.Sub(d.ctl.epoch)) * d.ctl.scale))
}

// publishInterval is the interval set by set_interval, or def.
func (d *simDevice) publishInterval(def time.Duration) time.Duration {
	if d.ctl.interval > 0 {
		return d.ctl.interval
	}
	return def
}

func (d *simDevice) commandTopic() string { return "devices/" + d.id + "/commands/+" }
func (d *simDevice) desiredTopic() string { return "devices/" + d.id + "/state/desired" }

// subscribe subscribes to the device's commands and desired state, then
// reports its state. It runs on the client's connect handler goroutine.
func (d *simDevice) subscribe() {
	tok := d.client.SubscribeMultiple(map[string]byte{d.commandTopic(): 1, d.desiredTopic(): 1},
		func(_ paho.Client, m paho.Message) { d.deliver(m) })
	if !tok.WaitTimeout(subscribeWait) || tok.Error() != nil {
		d.log.Warn("subscribe to commands failed", "err", tok.Error())
		return
	}
	select {
	case d.ctl.inbox <- inbound{payload: payloadReport}:
	default:
	}
}

// payloadReport asks the run loop to report the device's state.
var payloadReport = []byte("report")

// deliver hands a message to the run loop. When the inbox is full a command
// is answered at once with a failure; a desired state is dropped (the delta
// on the hub shows it, and it comes again retained on reconnect).
func (d *simDevice) deliver(m paho.Message) {
	in := inbound{topic: m.Topic(), payload: append([]byte(nil), m.Payload()...)}
	select {
	case d.ctl.inbox <- in:
		return
	default:
	}
	if id, ok := d.commandID(in.topic); ok {
		d.publishResult(id, answer(nil, errors.New("device busy: too many commands waiting")))
		return
	}
	d.log.Warn("desired state dropped: inbox full")
}

// commandID extracts the command ID from devices/{id}/commands/{cid}.
func (d *simDevice) commandID(topic string) (string, bool) {
	id, ok := strings.CutPrefix(topic, "devices/"+d.id+"/commands/")
	return id, ok && id != "" && !strings.Contains(id, "/")
}

// handleInbound runs a message on the run goroutine. It returns the new
// publish interval when it changed, else 0.
func (d *simDevice) handleInbound(in inbound) time.Duration {
	before := d.ctl.interval
	switch {
	case in.topic == "" && bytes.Equal(in.payload, payloadReport):
		d.reportState()
		return 0
	case in.topic == d.desiredTopic():
		d.applyDesired(in.payload)
	default:
		id, ok := d.commandID(in.topic)
		if !ok {
			return 0
		}
		d.handleCommand(id, in.payload)
	}
	if d.ctl.interval != before {
		return d.ctl.interval
	}
	return 0
}

// commandMessage is a command as the hub publishes it.
type commandMessage struct {
	Name      string         `json:"name"`
	Params    map[string]any `json:"params"`
	ExpiresAt *time.Time     `json:"expires_at"`
}

// handleCommand runs a command once and answers it; a command ID seen
// before (a resend) gets the earlier answer again without running twice.
func (d *simDevice) handleCommand(id string, payload []byte) {
	if prev, ok := d.ctl.answers[id]; ok {
		d.publishResult(id, prev)
		return
	}
	var msg commandMessage
	var res map[string]any
	err := json.Unmarshal(payload, &msg)
	switch {
	case err != nil:
		err = fmt.Errorf("%w: command is not JSON: %v", ErrInvalidParams, err)
	case msg.ExpiresAt != nil && time.Now().After(*msg.ExpiresAt):
		err = fmt.Errorf("command expired at %s before it could run", msg.ExpiresAt.Format(time.RFC3339))
	default:
		res, err = d.runCommand(Command{Name: msg.Name, Params: msg.Params})
	}
	if err != nil {
		d.log.Info("command refused", "command_id", id, "command", msg.Name, "err", err)
	}
	out := answer(res, err)
	d.remember(id, out)
	d.publishResult(id, out)
	if err == nil {
		d.reportState()
	}
}

// runCommand applies a command: set_interval for wearables here, the rest
// in the model.
func (d *simDevice) runCommand(cmd Command) (map[string]any, error) {
	if cmd.Name == "set_interval" && d.model.Type() == TypeWearable {
		ms, err := numberParam(cmd.Params, "interval_ms")
		if err != nil {
			return nil, fmt.Errorf("set_interval: %w", err)
		}
		if ms < MinIntervalMillis || ms > MaxIntervalMillis || ms != float64(int64(ms)) {
			return nil, fmt.Errorf("set_interval: %w: interval_ms %g is not a whole number in [%d, %d]",
				ErrInvalidParams, ms, MinIntervalMillis, MaxIntervalMillis)
		}
		d.ctl.interval = time.Duration(ms) * time.Millisecond
		return map[string]any{"interval_ms": int64(ms)}, nil
	}
	return d.model.HandleCommand(cmd)
}

// answer encodes a result in the hub's result format.
func answer(res map[string]any, err error) []byte {
	var v any = map[string]any{"status": "ok", "result": res}
	if err != nil {
		v = map[string]any{"status": "error", "error": err.Error()}
	}
	b, _ := json.Marshal(v)
	return b
}

func (d *simDevice) remember(id string, out []byte) {
	d.ctl.answers[id] = out
	d.ctl.order = append(d.ctl.order, id)
	if len(d.ctl.order) > rememberedIDs {
		delete(d.ctl.answers, d.ctl.order[0])
		d.ctl.order = d.ctl.order[1:]
	}
}

// publishResult publishes an answer QoS 1. It does not wait: the client
// resends it after a reconnect.
func (d *simDevice) publishResult(id string, payload []byte) {
	d.client.Publish("devices/"+d.id+"/commands/"+id+"/result", 1, false, payload)
}

// desiredMessage is the hub's desired state message.
type desiredMessage struct {
	Version uint64         `json:"version"`
	State   map[string]any `json:"state"`
}

// applyDesired applies the members of a desired state the device knows
// (thermostat: setpoint, mode; wearable: interval_ms) and reports the
// result. Invalid values are logged and left: the hub's delta shows them.
func (d *simDevice) applyDesired(payload []byte) {
	var msg desiredMessage
	if err := json.Unmarshal(payload, &msg); err != nil {
		d.log.Warn("desired state is not JSON", "err", err)
		return
	}
	apply := func(name, param, key string) {
		if v, ok := msg.State[key]; ok {
			if _, err := d.runCommand(Command{Name: name, Params: map[string]any{param: v}}); err != nil {
				d.log.Warn("desired state not applied", "key", key, "version", msg.Version, "err", err)
			}
		}
	}
	switch d.model.Type() {
	case TypeThermostat:
		apply("set_setpoint", "value", "setpoint")
		apply("set_mode", "mode", "mode")
	case TypeWearable:
		apply("set_interval", "interval_ms", "interval_ms")
	}
	d.reportState()
}

// reportState publishes the device's state retained on devices/{id}/state.
func (d *simDevice) reportState() {
	st := map[string]any{}
	switch m := d.model.(type) {
	case *Thermostat:
		st["setpoint"], st["mode"] = m.Setpoint(), m.Mode()
	case *Wearable:
		st["interval_ms"] = d.publishInterval(d.ctl.base).Milliseconds()
	}
	b, _ := json.Marshal(st)
	d.client.Publish("devices/"+d.id+"/state", 1, true, b)
}

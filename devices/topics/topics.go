// Package topics owns the MQTT topic layout of devices: everything a device
// publishes or receives lies under devices/{id}/, and this package is the
// one place that spells it. The broker (which confines each device to its
// own topics and routes what arrives) and devices/control (which addresses
// commands and desired state) build and split topics through it.
//
//	devices/{id}/telemetry               readings, device -> hub
//	devices/{id}/alerts                  alerts forwarded upstream (ingest/forward)
//	devices/{id}/state                   reported state, device -> hub
//	devices/{id}/state/desired           desired state, hub -> device (retained)
//	devices/{id}/commands/{cid}          a command, hub -> device
//	devices/{id}/commands/{cid}/result   its result, device -> hub
//	devices/{id}/responses               MQTT 5 response topic (command ID as correlation data)
//
// The device side (firmware-sim, testenv's sequence device) and the tests
// spell these topics as literals on purpose, as real firmware does: they
// are the wire format, and a change made here alone fails them.
package topics

import "strings"

// Prefix begins every device topic.
const Prefix = "devices/"

// Any is the single-level wildcard, in the device ID's place in a filter.
const Any = "+"

// What follows devices/{id}/: the rest that Split returns.
const (
	RestTelemetry = "telemetry"
	RestAlerts    = "alerts"
	RestState     = "state"
	RestDesired   = "state/desired"
	RestResponses = "responses"
	// RestCommands is followed by the command ID.
	RestCommands = "commands/"
	// ResultSuffix follows commands/{cid} on a result topic.
	ResultSuffix = "/result"
)

// Filters that match a topic of every device.
const (
	TelemetryFilter = Prefix + Any + "/" + RestTelemetry
	DesiredFilter   = Prefix + Any + "/" + RestDesired
	CommandsFilter  = Prefix + Any + "/" + RestCommands + Any
)

// Telemetry returns devices/{id}/telemetry.
func Telemetry(id string) string { return Prefix + id + "/" + RestTelemetry }

// Alerts returns devices/{id}/alerts.
func Alerts(id string) string { return Prefix + id + "/" + RestAlerts }

// State returns devices/{id}/state, where a device reports its state.
func State(id string) string { return Prefix + id + "/" + RestState }

// Desired returns devices/{id}/state/desired, where a device's desired
// state is retained.
func Desired(id string) string { return Prefix + id + "/" + RestDesired }

// Responses returns devices/{id}/responses, the MQTT 5 response topic of a
// device's commands. The command ID travels as correlation data.
func Responses(id string) string { return Prefix + id + "/" + RestResponses }

// Command returns devices/{id}/commands/{cid}, the topic a command is
// published on.
func Command(id, cid string) string { return Prefix + id + "/" + RestCommands + cid }

// Result returns devices/{id}/commands/{cid}/result, where the device
// answers the command.
func Result(id, cid string) string { return Prefix + id + "/" + RestCommands + cid + ResultSuffix }

// Split splits devices/{id}/{rest} into id and rest.
func Split(topic string) (id, rest string, ok bool) {
	after, found := strings.CutPrefix(topic, Prefix)
	if !found {
		return "", "", false
	}
	id, rest, found = strings.Cut(after, "/")
	if !found || id == "" || rest == "" {
		return "", "", false
	}
	return id, rest, true
}

// Owns reports whether a topic or filter lies under devices/{id}/.
// Device IDs cannot contain wildcards, so a literal prefix test is enough.
func Owns(id, topic string) bool {
	return id != "" && len(topic) > len(Prefix)+len(id)+1 &&
		strings.HasPrefix(topic, Prefix) && strings.HasPrefix(topic[len(Prefix):], id) &&
		topic[len(Prefix)+len(id)] == '/'
}

// SplitCommand splits devices/{id}/commands/{cid} into the device and
// command IDs; a result topic is not a command topic.
func SplitCommand(topic string) (deviceID, commandID string, ok bool) {
	id, rest, ok := Split(topic)
	if !ok {
		return "", "", false
	}
	cid, found := strings.CutPrefix(rest, RestCommands)
	if !found || cid == "" || strings.Contains(cid, "/") {
		return "", "", false
	}
	return id, cid, true
}

// Package firmwaresim simulates device firmware for Telehub: deterministic
// models of thermostats and wearables, and a Fleet that provisions simulated
// devices through the hub's HTTP API and publishes their telemetry over MQTT.
//
// The models are pure: given the same *rand.Rand seed and the same sequence of
// Step times they produce the same readings, which makes them usable in tests
// and reproducible demos. The Fleet adds the timestamp ("ts", Unix
// milliseconds, unique per device) and the network.
package firmwaresim

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Device types, as registered with the hub.
const (
	// TypeThermostat is the hub device type of a Thermostat.
	TypeThermostat = "thermostat"
	// TypeWearable is the hub device type of a Wearable.
	TypeWearable = "wearable"
)

// Reading field names shared by every model.
const (
	// FieldTS is the reading timestamp in Unix milliseconds, added by the Fleet.
	FieldTS = "ts"
	// FieldRSSI is the received signal strength in dBm, present in every reading.
	FieldRSSI = "rssi"
)

// RSSI bounds in dBm: every reading's rssi lies in [MinRSSI, MaxRSSI].
const (
	// MinRSSI is the weakest signal a simulated device reports.
	MinRSSI = -90
	// MaxRSSI is the strongest signal a simulated device reports.
	MaxRSSI = -40
)

// maxStep bounds the time a single Step may simulate, so that a clock jump
// (a laptop waking from sleep) does not produce absurd readings.
const maxStep = time.Hour

// Errors returned by HandleCommand. They are wrapped with detail; test with errors.Is.
var (
	// ErrUnknownCommand means the device does not implement the named command.
	ErrUnknownCommand = errors.New("unknown command")
	// ErrInvalidParams means the command's parameters are missing or out of range.
	ErrInvalidParams = errors.New("invalid command parameters")
)

// Command is a control command addressed to a device, as carried on
// devices/{id}/commands/{commandID}: a name and its parameters.
type Command struct {
	// Name is the command name, e.g. "set_setpoint".
	Name string `json:"name"`
	// Params holds the command parameters as decoded from JSON.
	Params map[string]any `json:"params,omitempty"`
}

// Device is the firmware of one simulated device. Implementations are not
// safe for concurrent use: one goroutine owns a Device.
type Device interface {
	// Type returns the hub device type, e.g. TypeThermostat.
	Type() string
	// Step advances the simulation to now and returns a fresh reading: a map
	// of field names to JSON-encodable values that always includes FieldRSSI.
	// Times that go backwards are treated as no time passing.
	Step(now time.Time) map[string]any
	// HandleCommand applies a command and returns its result. The error wraps
	// ErrUnknownCommand or ErrInvalidParams when the command is rejected.
	HandleCommand(cmd Command) (map[string]any, error)
}

// radio models a device's link quality: a fixed base level with jitter.
type radio struct {
	base float64
}

func newRadio(rng *rand.Rand) radio {
	return radio{base: -85 + rng.Float64()*35} // -85..-50 dBm
}

// rssi returns one signal strength sample in [MinRSSI, MaxRSSI].
func (r radio) rssi(rng *rand.Rand) int {
	v := math.Round(r.base + rng.NormFloat64()*2)
	return int(clamp(v, MinRSSI, MaxRSSI))
}

// stepClock turns absolute Step times into elapsed seconds.
type stepClock struct {
	last time.Time
}

// advance returns the seconds elapsed since the previous call, 0 on the first
// call or when time went backwards, and at most maxStep.
func (c *stepClock) advance(now time.Time) float64 {
	prev := c.last
	if prev.IsZero() || now.After(prev) {
		c.last = now
	}
	if prev.IsZero() || !now.After(prev) {
		return 0
	}
	return min(now.Sub(prev), maxStep).Seconds()
}

// approach moves x towards target as a first-order system with time constant
// tau seconds over dt seconds.
func approach(x, target, tau, dt float64) float64 {
	return x + (target-x)*(1-math.Exp(-dt/tau))
}

func clamp(v, lo, hi float64) float64 {
	return math.Max(lo, math.Min(hi, v))
}

func round(v float64, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.Round(v*p) / p
}

// chance reports whether an event with the given mean interval (seconds)
// happens within dt seconds, for a Poisson process.
func chance(rng *rand.Rand, meanInterval, dt float64) bool {
	if dt <= 0 {
		return false
	}
	return rng.Float64() < 1-math.Exp(-dt/meanInterval)
}

// numberParam reads a numeric command parameter.
func numberParam(params map[string]any, name string) (float64, error) {
	v, ok := params[name]
	if !ok {
		return 0, fmt.Errorf("%w: missing %q", ErrInvalidParams, name)
	}
	var f float64
	switch n := v.(type) {
	case float64:
		f = n
	case float32:
		f = float64(n)
	case int:
		f = float64(n)
	case int64:
		f = float64(n)
	case json.Number:
		var err error
		if f, err = n.Float64(); err != nil {
			return 0, fmt.Errorf("%w: %q is not a number", ErrInvalidParams, name)
		}
	default:
		return 0, fmt.Errorf("%w: %q is not a number", ErrInvalidParams, name)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%w: %q is not a finite number", ErrInvalidParams, name)
	}
	return f, nil
}

// stringParam reads a string command parameter, trying each name in turn.
func stringParam(params map[string]any, names ...string) (string, error) {
	for _, name := range names {
		if v, ok := params[name]; ok {
			s, ok := v.(string)
			if !ok {
				return "", fmt.Errorf("%w: %q is not a string", ErrInvalidParams, name)
			}
			return s, nil
		}
	}
	return "", fmt.Errorf("%w: missing %q", ErrInvalidParams, names[0])
}

package firmwaresim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Thermostat modes.
const (
	// ModeHeat lets the thermostat run its heater to hold the setpoint.
	ModeHeat = "heat"
	// ModeOff keeps the heater off; the room drifts to the outdoor temperature.
	ModeOff = "off"
)

// Setpoint bounds accepted by the set_setpoint command, in °C.
const (
	// MinSetpoint is the lowest setpoint a Thermostat accepts.
	MinSetpoint = 5.0
	// MaxSetpoint is the highest setpoint a Thermostat accepts.
	MaxSetpoint = 30.0
)

// Thermal model constants.
const (
	thermoHysteresis = 0.5    // °C either side of the setpoint
	heaterDrive      = 3.0    // the heater pulls towards setpoint+heaterDrive
	heatTau          = 600.0  // s, time constant while heating
	lossTau          = 1800.0 // s, time constant of losses to the outdoors
	tempProcessNoise = 0.01   // °C per sqrt(s)
	tempSensorNoise  = 0.05   // °C
	humidityTau      = 900.0  // s, mean reversion of humidity
	humidityNoise    = 0.08   // %RH per sqrt(s)
	humidityHeatDrop = 5.0    // %RH lower while heating (warm air is drier)
	minHumidity      = 20.0
	maxHumidity      = 80.0
)

// Thermostat simulates a room thermostat with a hysteresis-controlled heater.
// When the heater runs, the room warms towards the setpoint (slightly past it,
// so that the upper hysteresis threshold is reached and the heater switches
// off); otherwise it cools towards the outdoor temperature, which follows a
// daily cycle. Humidity wanders around a per-room mean and drops a little
// while heating.
//
// Readings: temperature (°C), humidity (%RH), setpoint (°C), heating (bool),
// mode ("heat" or "off"), rssi (dBm).
//
// A Thermostat is not safe for concurrent use.
type Thermostat struct {
	rng   *rand.Rand
	clock stepClock
	radio radio

	temperature  float64 // true room temperature
	humidity     float64
	humidityMean float64
	outdoorBase  float64
	setpoint     float64
	mode         string
	heating      bool
}

var _ Device = (*Thermostat)(nil)

// NewThermostat returns a thermostat in heat mode whose room starts a few
// degrees below its setpoint. All randomness comes from rng.
func NewThermostat(rng *rand.Rand) *Thermostat {
	t := &Thermostat{
		rng:          rng,
		radio:        newRadio(rng),
		setpoint:     float64(19 + rng.IntN(4)), // 19..22
		outdoorBase:  2 + rng.Float64()*12,      // 2..14
		humidityMean: 38 + rng.Float64()*14,     // 38..52
		mode:         ModeHeat,
	}
	t.temperature = t.setpoint - 1.5 - rng.Float64()*2.5
	t.humidity = t.humidityMean + rng.NormFloat64()*2
	t.control()
	return t
}

// Type returns TypeThermostat.
func (t *Thermostat) Type() string { return TypeThermostat }

// Setpoint returns the target temperature in °C.
func (t *Thermostat) Setpoint() float64 { return t.setpoint }

// Mode returns ModeHeat or ModeOff.
func (t *Thermostat) Mode() string { return t.mode }

// Heating reports whether the heater is on.
func (t *Thermostat) Heating() bool { return t.heating }

// Temperature returns the true room temperature in °C, without sensor noise.
func (t *Thermostat) Temperature() float64 { return t.temperature }

// Step advances the room to now and returns a reading.
func (t *Thermostat) Step(now time.Time) map[string]any {
	dt := t.clock.advance(now)
	if dt > 0 {
		target := outdoorTemperature(t.outdoorBase, now)
		tau := lossTau
		if t.heating {
			target, tau = t.setpoint+heaterDrive, heatTau
		}
		t.temperature = approach(t.temperature, target, tau, dt) +
			t.rng.NormFloat64()*tempProcessNoise*math.Sqrt(dt)

		mean := t.humidityMean
		if t.heating {
			mean -= humidityHeatDrop
		}
		t.humidity = clamp(approach(t.humidity, mean, humidityTau, dt)+
			t.rng.NormFloat64()*humidityNoise*math.Sqrt(dt), minHumidity, maxHumidity)
	}
	t.control()

	return map[string]any{
		"temperature": round(t.temperature+t.rng.NormFloat64()*tempSensorNoise, 2),
		"humidity":    round(t.humidity, 1),
		"setpoint":    t.setpoint,
		"heating":     t.heating,
		"mode":        t.mode,
		FieldRSSI:     t.radio.rssi(t.rng),
	}
}

// control switches the heater with hysteresis around the setpoint.
func (t *Thermostat) control() {
	switch {
	case t.mode != ModeHeat:
		t.heating = false
	case t.heating && t.temperature >= t.setpoint+thermoHysteresis:
		t.heating = false
	case !t.heating && t.temperature <= t.setpoint-thermoHysteresis:
		t.heating = true
	}
}

// HandleCommand applies set_setpoint ({"value": °C}) or set_mode
// ({"mode": "heat"|"off"}, "value" is accepted too) and returns the new state.
func (t *Thermostat) HandleCommand(cmd Command) (map[string]any, error) {
	switch cmd.Name {
	case "set_setpoint":
		v, err := numberParam(cmd.Params, "value")
		if err != nil {
			return nil, fmt.Errorf("set_setpoint: %w", err)
		}
		if v < MinSetpoint || v > MaxSetpoint {
			return nil, fmt.Errorf("set_setpoint: %w: value %g outside [%g, %g]",
				ErrInvalidParams, v, MinSetpoint, MaxSetpoint)
		}
		t.setpoint = v
	case "set_mode":
		m, err := stringParam(cmd.Params, "mode", "value")
		if err != nil {
			return nil, fmt.Errorf("set_mode: %w", err)
		}
		if m != ModeHeat && m != ModeOff {
			return nil, fmt.Errorf("set_mode: %w: mode %q is not %q or %q",
				ErrInvalidParams, m, ModeHeat, ModeOff)
		}
		t.mode = m
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownCommand, cmd.Name)
	}
	t.control()
	return map[string]any{"setpoint": t.setpoint, "mode": t.mode, "heating": t.heating}, nil
}

// outdoorTemperature is base plus a daily cycle of ±5 °C peaking at 15:00 UTC.
func outdoorTemperature(base float64, now time.Time) float64 {
	u := now.UTC()
	hours := float64(u.Hour()) + float64(u.Minute())/60 + float64(u.Second())/3600
	return base + 5*math.Sin(2*math.Pi*(hours-9)/24)
}

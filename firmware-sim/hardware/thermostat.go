package hardware

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	firmwaresim "github.com/telehub/telehub/firmware-sim"
)

// Sensor measures the room.
type Sensor interface {
	Sense() (Measurement, error)
}

// Switch turns the heater on and off.
type Switch interface {
	Set(on bool) error
}

// DefaultHysteresis is how far (°C) the room may drift either side of the
// setpoint before the heater switches, so that the relay does not chatter.
const DefaultHysteresis = 0.5

// Thermostat is a room thermostat on real hardware: it measures the room
// with a Sensor (a BME280) and runs the heater through a Switch (a relay).
// It is a firmwaresim.Device, so the fleet runner publishes its readings
// and hands it the hub's commands. It fails safe: when the sensor cannot be
// read, the heater is switched off until a measurement succeeds.
//
// Readings: temperature (°C), humidity (%RH), pressure (hPa), setpoint,
// heating, mode; sensor_error instead of the measurements when the sensor
// fails. A wired device has no radio, so there is no rssi.
//
// Like every Device it is owned by one goroutine.
type Thermostat struct {
	sensor     Sensor
	heater     Switch
	hysteresis float64

	setpoint float64
	mode     string
	heating  bool
	last     Measurement
	valid    bool // last is a successful measurement
}

var _ firmwaresim.Device = (*Thermostat)(nil)

// NewThermostat returns a thermostat in heat mode holding setpoint (°C),
// with the heater off until its first measurement.
func NewThermostat(sensor Sensor, heater Switch, setpoint float64) (*Thermostat, error) {
	if setpoint < firmwaresim.MinSetpoint || setpoint > firmwaresim.MaxSetpoint {
		return nil, fmt.Errorf("setpoint %g outside [%g, %g]", setpoint, firmwaresim.MinSetpoint, firmwaresim.MaxSetpoint)
	}
	t := &Thermostat{sensor: sensor, heater: heater, hysteresis: DefaultHysteresis, setpoint: setpoint, mode: firmwaresim.ModeHeat}
	if err := heater.Set(false); err != nil {
		return nil, err
	}
	return t, nil
}

// Type returns firmwaresim.TypeThermostat.
func (t *Thermostat) Type() string { return firmwaresim.TypeThermostat }

// Setpoint returns the target temperature in °C.
func (t *Thermostat) Setpoint() float64 { return t.setpoint }

// Mode returns firmwaresim.ModeHeat or firmwaresim.ModeOff.
func (t *Thermostat) Mode() string { return t.mode }

// Heating reports whether the heater is on.
func (t *Thermostat) Heating() bool { return t.heating }

// Step measures the room, switches the heater and returns a reading.
func (t *Thermostat) Step(time.Time) map[string]any {
	serr := t.measure()
	cerr := t.control()
	r := map[string]any{"setpoint": t.setpoint, "heating": t.heating, "mode": t.mode}
	if serr != nil {
		r["sensor_error"] = serr.Error()
	} else {
		r["temperature"] = round(t.last.Temperature, 2)
		r["humidity"] = round(t.last.Humidity, 1)
		r["pressure"] = round(t.last.Pressure/100, 2)
	}
	if cerr != nil {
		r["heater_error"] = cerr.Error()
	}
	return r
}

func (t *Thermostat) measure() error {
	m, err := t.sensor.Sense()
	if err != nil {
		t.valid = false
		return err
	}
	t.last, t.valid = m, true
	return nil
}

// control switches the heater with hysteresis around the setpoint; off in
// mode off and while the temperature is unknown.
func (t *Thermostat) control() error {
	want := t.heating
	switch {
	case t.mode != firmwaresim.ModeHeat || !t.valid:
		want = false
	case t.heating && t.last.Temperature >= t.setpoint+t.hysteresis:
		want = false
	case !t.heating && t.last.Temperature <= t.setpoint-t.hysteresis:
		want = true
	}
	if want == t.heating {
		return nil
	}
	if err := t.heater.Set(want); err != nil {
		return fmt.Errorf("heater: %w", err)
	}
	t.heating = want
	return nil
}

// HandleCommand applies set_setpoint ({"value": °C}) or set_mode
// ({"mode": "heat"|"off"}) and switches the heater at once: a setpoint that
// calls for heat turns the relay on before the answer goes out. It
// measures first when it has no valid measurement.
func (t *Thermostat) HandleCommand(cmd firmwaresim.Command) (map[string]any, error) {
	switch cmd.Name {
	case "set_setpoint":
		v, err := number(cmd.Params, "value")
		if err != nil {
			return nil, fmt.Errorf("set_setpoint: %w", err)
		}
		if v < firmwaresim.MinSetpoint || v > firmwaresim.MaxSetpoint {
			return nil, fmt.Errorf("set_setpoint: %w: value %g outside [%g, %g]",
				firmwaresim.ErrInvalidParams, v, firmwaresim.MinSetpoint, firmwaresim.MaxSetpoint)
		}
		t.setpoint = v
	case "set_mode":
		m, ok := cmd.Params["mode"].(string)
		if !ok {
			m, ok = cmd.Params["value"].(string)
		}
		if !ok || (m != firmwaresim.ModeHeat && m != firmwaresim.ModeOff) {
			return nil, fmt.Errorf("set_mode: %w: mode must be %q or %q",
				firmwaresim.ErrInvalidParams, firmwaresim.ModeHeat, firmwaresim.ModeOff)
		}
		t.mode = m
	default:
		return nil, fmt.Errorf("%w: %q", firmwaresim.ErrUnknownCommand, cmd.Name)
	}
	if !t.valid {
		_ = t.measure() // on failure the heater stays off; the next reading says why
	}
	if err := t.control(); err != nil {
		return nil, err
	}
	return map[string]any{"setpoint": t.setpoint, "mode": t.mode, "heating": t.heating}, nil
}

// number reads a numeric command parameter.
func number(params map[string]any, name string) (float64, error) {
	var f float64
	switch v := params[name].(type) {
	case float64:
		f = v
	case int:
		f = float64(v)
	case json.Number:
		var err error
		if f, err = v.Float64(); err != nil {
			return 0, fmt.Errorf("%w: %q is not a number", firmwaresim.ErrInvalidParams, name)
		}
	case nil:
		return 0, fmt.Errorf("%w: missing %q", firmwaresim.ErrInvalidParams, name)
	default:
		return 0, fmt.Errorf("%w: %q is not a number", firmwaresim.ErrInvalidParams, name)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%w: %q is not a finite number", firmwaresim.ErrInvalidParams, name)
	}
	return f, nil
}

func round(v float64, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.Round(v*p) / p
}

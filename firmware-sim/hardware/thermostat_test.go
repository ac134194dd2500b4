package hardware

import (
	"time"

	"testing"

	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/i2c/i2ctest"

	firmwaresim "github.com/telehub/telehub/firmware-sim"
)

// newTestThermostat is a thermostat on a BME280 that plays back the
// recorded traffic (the room is at 25.08 °C for each measurement) and a
// relay on a fake pin.
func newTestThermostat(t *testing.T, activeLow bool, measurements int) (*Thermostat, *gpiotest.Pin, *i2ctest.Playback) {
	t.Helper()
	ops := [][]i2ctest.IO{opsOpen}
	for range measurements {
		ops = append(ops, opsMeasure)
	}
	bus := playback(ops...)
	sensor, err := newBME280(bus, BME280Addr, nil, (&noSleep{}).sleep)
	require.NoError(t, err)
	pin := &gpiotest.Pin{N: "GPIO17", Num: 17, L: gpio.High}
	relay, err := NewRelay(pin, activeLow)
	require.NoError(t, err)
	th, err := NewThermostat(sensor, relay, 20)
	require.NoError(t, err)
	return th, pin, bus
}

func TestThermostatSetpointThatCallsForHeatTurnsTheRelayOn(t *testing.T) {
	tests := []struct {
		name      string
		activeLow bool
		on, off   gpio.Level
	}{
		{"active high relay", false, gpio.High, gpio.Low},
		{"active low relay", true, gpio.Low, gpio.High},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var dev firmwaresim.Device
			th, pin, bus := newTestThermostat(t, tc.activeLow, 1)
			dev = th
			require.Equal(t, tc.off, pin.Read(), "the relay starts off")

			r := dev.Step(time.Time{})
			require.Equal(t, 25.08, r["temperature"])
			require.InDelta(t, 1006.53, r["pressure"], 0.01, "hPa")
			require.InDelta(t, 44.8, r["humidity"], 0.1)
			require.Equal(t, false, r["heating"], "25.08 °C is above a setpoint of 20")
			require.Equal(t, tc.off, pin.Read())

			res, err := dev.HandleCommand(firmwaresim.Command{Name: "set_setpoint", Params: map[string]any{"value": 28.0}})
			require.NoError(t, err)
			require.Equal(t, true, res["heating"])
			require.Equal(t, tc.on, pin.Read(), "a setpoint above the room calls for heat: relay on")

			res, err = dev.HandleCommand(firmwaresim.Command{Name: "set_mode", Params: map[string]any{"mode": "off"}})
			require.NoError(t, err)
			require.Equal(t, false, res["heating"])
			require.Equal(t, tc.off, pin.Read(), "mode off: relay off")
			require.NoError(t, bus.Close(), "no measurement beyond the recorded one")
		})
	}
}

func TestThermostatHysteresis(t *testing.T) {
	th, pin, _ := newTestThermostat(t, false, 1)
	th.Step(time.Time{})
	tests := []struct {
		setpoint float64
		heating  bool
	}{
		{25.5, false}, // 25.08 is not below 25.5 - 0.5: stays off
		{25.6, true},  // 25.08 <= 25.1: on
		{24.7, true},  // 25.08 < 24.7 + 0.5: stays on
		{24.5, false}, // 25.08 >= 25.0: off
	}
	for _, tc := range tests {
		_, err := th.HandleCommand(firmwaresim.Command{Name: "set_setpoint", Params: map[string]any{"value": tc.setpoint}})
		require.NoError(t, err)
		require.Equal(t, tc.heating, th.Heating(), "setpoint %g", tc.setpoint)
		require.Equal(t, gpio.Level(tc.heating), pin.Read(), "setpoint %g", tc.setpoint)
	}
}

func TestThermostatMeasuresBeforeItsFirstCommand(t *testing.T) {
	th, pin, bus := newTestThermostat(t, false, 1)
	_, err := th.HandleCommand(firmwaresim.Command{Name: "set_setpoint", Params: map[string]any{"value": 30.0}})
	require.NoError(t, err)
	require.Equal(t, gpio.High, pin.Read())
	require.NoError(t, bus.Close())
}

// TestThermostatFailsSafe: when the sensor stops answering (the recorded
// traffic runs out, so the bus refuses every transaction), the heater goes
// off and the reading says why.
func TestThermostatFailsSafe(t *testing.T) {
	th, pin, _ := newTestThermostat(t, false, 1)
	_, err := th.HandleCommand(firmwaresim.Command{Name: "set_setpoint", Params: map[string]any{"value": 30.0}})
	require.NoError(t, err)
	require.Equal(t, gpio.High, pin.Read())

	r := th.Step(time.Time{})
	require.Contains(t, r["sensor_error"], "bme280")
	require.NotContains(t, r, "temperature")
	require.Equal(t, false, r["heating"])
	require.Equal(t, gpio.Low, pin.Read(), "no temperature, no heat")
}

func TestThermostatRefusesBadCommands(t *testing.T) {
	th, _, _ := newTestThermostat(t, false, 1)
	th.Step(time.Time{})
	tests := []struct {
		name string
		cmd  firmwaresim.Command
		want error
	}{
		{"unknown", firmwaresim.Command{Name: "reboot"}, firmwaresim.ErrUnknownCommand},
		{"setpoint missing", firmwaresim.Command{Name: "set_setpoint"}, firmwaresim.ErrInvalidParams},
		{"setpoint too high", firmwaresim.Command{Name: "set_setpoint", Params: map[string]any{"value": 90.0}}, firmwaresim.ErrInvalidParams},
		{"setpoint not a number", firmwaresim.Command{Name: "set_setpoint", Params: map[string]any{"value": "warm"}}, firmwaresim.ErrInvalidParams},
		{"bad mode", firmwaresim.Command{Name: "set_mode", Params: map[string]any{"mode": "cool"}}, firmwaresim.ErrInvalidParams},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := th.HandleCommand(tc.cmd)
			require.ErrorIs(t, err, tc.want)
			require.Equal(t, 20.0, th.Setpoint(), "a refused command changes nothing")
		})
	}
}

package firmwaresim

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// simStart is a fixed simulation start, so outdoor temperatures are reproducible.
var simStart = time.Date(2024, 1, 15, 6, 0, 0, 0, time.UTC)

func newRNG(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, 7))
}

func TestThermostatConvergesToSetpoint(t *testing.T) {
	tests := []struct {
		name     string
		seed     uint64
		setpoint float64
	}{
		{name: "setpoint 20", seed: 1, setpoint: 20},
		{name: "setpoint 22", seed: 2, setpoint: 22},
		{name: "setpoint 24", seed: 3, setpoint: 24},
		{name: "setpoint 21.5", seed: 4, setpoint: 21.5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			th := NewThermostat(newRNG(tc.seed))
			_, err := th.HandleCommand(Command{Name: "set_setpoint", Params: map[string]any{"value": tc.setpoint}})
			require.NoError(t, err)
			require.True(t, th.Heating(), "a room below its setpoint starts heating")

			const step, settle, observe = 10 * time.Second, 1000, 1000 // ~2.8 h to settle, ~2.8 h observed
			now := simStart
			for range settle {
				now = now.Add(step)
				th.Step(now)
			}
			var on, off int
			for range observe {
				now = now.Add(step)
				r := th.Step(now)
				temp := r["temperature"].(float64)
				require.InDelta(t, tc.setpoint, th.Temperature(), 1.2, "true temperature at %v", now)
				require.InDelta(t, tc.setpoint, temp, 1.5, "reported temperature at %v", now)
				if r["heating"].(bool) {
					on++
				} else {
					off++
				}
			}
			require.Positive(t, on, "the heater runs to hold the setpoint")
			require.Positive(t, off, "hysteresis switches the heater off above the setpoint")
		})
	}
}

func TestThermostatOffDriftsToOutdoor(t *testing.T) {
	th := NewThermostat(newRNG(5))
	_, err := th.HandleCommand(Command{Name: "set_mode", Params: map[string]any{"mode": ModeOff}})
	require.NoError(t, err)
	require.False(t, th.Heating())

	now := simStart
	for range 3000 { // ~8 h, several time constants
		now = now.Add(10 * time.Second)
		r := th.Step(now)
		require.False(t, r["heating"].(bool))
		require.Equal(t, ModeOff, r["mode"])
	}
	require.InDelta(t, outdoorTemperature(th.outdoorBase, now), th.Temperature(), 2.0)
}

func TestThermostatReadingsInRange(t *testing.T) {
	for seed := range uint64(10) {
		th := NewThermostat(newRNG(seed))
		now := simStart
		for i := range 2000 {
			now = now.Add(time.Duration(1+i%30) * time.Second)
			r := th.Step(now)
			for _, f := range []string{"temperature", "humidity", "setpoint", "heating", "mode", FieldRSSI} {
				require.Contains(t, r, f)
			}
			require.InDelta(t, 15, r["temperature"].(float64), 15, "temperature")
			require.GreaterOrEqual(t, r["humidity"].(float64), minHumidity)
			require.LessOrEqual(t, r["humidity"].(float64), maxHumidity)
			rssi := r[FieldRSSI].(int)
			require.GreaterOrEqual(t, rssi, MinRSSI)
			require.LessOrEqual(t, rssi, MaxRSSI)
		}
	}
}

func TestThermostatCommands(t *testing.T) {
	tests := []struct {
		name    string
		cmd     Command
		wantErr error
		check   func(t *testing.T, th *Thermostat, result map[string]any)
	}{
		{
			name: "set setpoint",
			cmd:  Command{Name: "set_setpoint", Params: map[string]any{"value": 23.5}},
			check: func(t *testing.T, th *Thermostat, result map[string]any) {
				require.Equal(t, 23.5, th.Setpoint())
				require.Equal(t, 23.5, result["setpoint"])
			},
		},
		{
			name:    "setpoint too high",
			cmd:     Command{Name: "set_setpoint", Params: map[string]any{"value": 45}},
			wantErr: ErrInvalidParams,
		},
		{
			name:    "setpoint missing",
			cmd:     Command{Name: "set_setpoint"},
			wantErr: ErrInvalidParams,
		},
		{
			name:    "setpoint not a number",
			cmd:     Command{Name: "set_setpoint", Params: map[string]any{"value": "warm"}},
			wantErr: ErrInvalidParams,
		},
		{
			name: "mode off stops the heater",
			cmd:  Command{Name: "set_mode", Params: map[string]any{"mode": "off"}},
			check: func(t *testing.T, th *Thermostat, result map[string]any) {
				require.Equal(t, ModeOff, th.Mode())
				require.False(t, th.Heating())
				require.Equal(t, false, result["heating"])
			},
		},
		{
			name: "mode as value",
			cmd:  Command{Name: "set_mode", Params: map[string]any{"value": "heat"}},
			check: func(t *testing.T, th *Thermostat, _ map[string]any) {
				require.Equal(t, ModeHeat, th.Mode())
			},
		},
		{
			name:    "unknown mode",
			cmd:     Command{Name: "set_mode", Params: map[string]any{"mode": "cool"}},
			wantErr: ErrInvalidParams,
		},
		{
			name:    "unknown command",
			cmd:     Command{Name: "vibrate"},
			wantErr: ErrUnknownCommand,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			th := NewThermostat(newRNG(1))
			before := th.Setpoint()
			result, err := th.HandleCommand(tc.cmd)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				require.Equal(t, before, th.Setpoint(), "a rejected command changes nothing")
				return
			}
			require.NoError(t, err)
			tc.check(t, th, result)
		})
	}
}

func TestModelsDeterministic(t *testing.T) {
	tests := []struct {
		name string
		new  func(*rand.Rand) Device
	}{
		{name: "thermostat", new: func(r *rand.Rand) Device { return NewThermostat(r) }},
		{name: "wearable", new: func(r *rand.Rand) Device { return NewWearable(r) }},
	}
	run := func(d Device) []map[string]any {
		var out []map[string]any
		now := simStart
		for i := range 500 {
			now = now.Add(time.Duration(1+i%7) * time.Second)
			out = append(out, d.Step(now))
		}
		return out
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b, c := tc.new(newRNG(42)), tc.new(newRNG(42)), tc.new(newRNG(43))
			require.Equal(t, tc.name, a.Type())
			ra := run(a)
			require.Equal(t, ra, run(b), "same seed, same readings")
			require.NotEqual(t, ra, run(c), "another seed, other readings")
		})
	}
}

func TestStepTimeGoingBackwards(t *testing.T) {
	w := NewWearable(newRNG(9))
	w.Step(simStart)
	w.Step(simStart.Add(time.Hour))
	steps, battery := w.Steps(), w.Battery()
	r := w.Step(simStart.Add(30 * time.Minute))
	require.Equal(t, steps, w.Steps())
	require.Equal(t, battery, w.Battery())
	require.Equal(t, steps, r["steps"])
}

func TestTSClock(t *testing.T) {
	base := time.UnixMilli(1_700_000_000_000)
	tests := []struct {
		name  string
		times []time.Time
		want  []int64
	}{
		{
			name:  "increasing",
			times: []time.Time{base, base.Add(time.Second)},
			want:  []int64{1_700_000_000_000, 1_700_000_001_000},
		},
		{
			name:  "same millisecond bumped",
			times: []time.Time{base, base.Add(300 * time.Microsecond), base.Add(600 * time.Microsecond)},
			want:  []int64{1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_002},
		},
		{
			name:  "clock going backwards",
			times: []time.Time{base, base.Add(-time.Second), base.Add(5 * time.Millisecond)},
			want:  []int64{1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_005},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c tsClock
			var got []int64
			for _, tm := range tc.times {
				got = append(got, c.next(tm))
			}
			require.Equal(t, tc.want, got)
		})
	}
}

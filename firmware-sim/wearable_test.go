package firmwaresim

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWearableOverTime(t *testing.T) {
	tests := []struct {
		name  string
		seed  uint64
		step  time.Duration
		steps int
	}{
		{name: "minutes over 100 hours", seed: 1, step: time.Minute, steps: 6000},
		{name: "seconds over 3 hours", seed: 2, step: time.Second, steps: 3 * 3600},
		{name: "irregular", seed: 3, step: 17 * time.Second, steps: 20000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWearable(newRNG(tc.seed))
			now := simStart
			first := w.Step(now)
			prevBattery, prevSteps := first["battery"].(float64), first["steps"].(int64)
			var active, spo2Normal, spo2Low, restHRSum, restN int
			for range tc.steps {
				now = now.Add(tc.step)
				r := w.Step(now)

				battery := r["battery"].(float64)
				require.LessOrEqual(t, battery, prevBattery, "battery never rises")
				require.GreaterOrEqual(t, battery, 0.0, "battery never below 0")
				prevBattery = battery

				steps := r["steps"].(int64)
				require.GreaterOrEqual(t, steps, prevSteps, "steps never decrease")
				prevSteps = steps

				hr := r["heart_rate"].(int)
				require.GreaterOrEqual(t, hr, MinHeartRate)
				require.LessOrEqual(t, hr, MaxHeartRate)

				spo2 := r["spo2"].(int)
				require.GreaterOrEqual(t, spo2, MinSpO2)
				require.LessOrEqual(t, spo2, MaxSpO2)
				if spo2 >= 95 {
					spo2Normal++
				} else {
					spo2Low++
				}

				activity := r["activity"].(float64)
				require.GreaterOrEqual(t, activity, 0.0)
				require.LessOrEqual(t, activity, 1.0)
				if activity > 0 {
					active++
				} else {
					restHRSum += hr
					restN++
				}

				rssi := r[FieldRSSI].(int)
				require.GreaterOrEqual(t, rssi, MinRSSI)
				require.LessOrEqual(t, rssi, MaxRSSI)
			}
			require.Greater(t, prevSteps, first["steps"].(int64), "the wearer walks")
			require.Less(t, prevBattery, first["battery"].(float64), "the battery drains")
			require.Positive(t, active, "activity bursts happen")
			require.Positive(t, restN)
			restHR := float64(restHRSum) / float64(restN)
			require.InDelta(t, 70, restHR, 15, "resting heart rate")
			require.Greater(t, float64(spo2Normal)/float64(spo2Normal+spo2Low), 0.9, "SpO2 mostly 95-100")
		})
	}
}

func TestWearableBatteryEmptiesAtZero(t *testing.T) {
	w := NewWearable(newRNG(4))
	now := simStart
	for range 100 {
		now = now.Add(time.Hour)
		w.Step(now)
	}
	require.Equal(t, 0.0, w.Battery())
	r := w.Step(now.Add(time.Hour))
	require.Equal(t, 0.0, r["battery"])
	_, err := w.HandleCommand(Command{Name: "vibrate"})
	require.NoError(t, err)
	require.Equal(t, 0.0, w.Battery(), "vibrating an empty battery leaves it at 0")
}

func TestWearableSpO2Dips(t *testing.T) {
	w := NewWearable(newRNG(5))
	now := simStart
	low := 0
	for range 48 * 3600 / 5 { // two days, every 5 s
		now = now.Add(5 * time.Second)
		if w.Step(now)["spo2"].(int) < 95 {
			low++
		}
	}
	require.Positive(t, low, "occasional dips below 95%")
}

func TestWearableCommands(t *testing.T) {
	tests := []struct {
		name    string
		cmd     Command
		wantErr error
		wantMS  float64
	}{
		{name: "default duration", cmd: Command{Name: "vibrate"}, wantMS: 500},
		{name: "duration", cmd: Command{Name: "vibrate", Params: map[string]any{"duration_ms": 1200.0}}, wantMS: 1200},
		{name: "too long", cmd: Command{Name: "vibrate", Params: map[string]any{"duration_ms": 60000}}, wantErr: ErrInvalidParams},
		{name: "zero", cmd: Command{Name: "vibrate", Params: map[string]any{"duration_ms": 0}}, wantErr: ErrInvalidParams},
		{name: "not a number", cmd: Command{Name: "vibrate", Params: map[string]any{"duration_ms": true}}, wantErr: ErrInvalidParams},
		{name: "thermostat command", cmd: Command{Name: "set_setpoint", Params: map[string]any{"value": 21}}, wantErr: ErrUnknownCommand},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWearable(newRNG(1))
			before := w.Battery()
			result, err := w.HandleCommand(tc.cmd)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				require.Equal(t, before, w.Battery())
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantMS, result["duration_ms"])
			require.Equal(t, 1, result["vibrations"])
			require.Less(t, w.Battery(), before, "vibrating costs battery")
		})
	}
}

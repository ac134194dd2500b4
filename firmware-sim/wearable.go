package firmwaresim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Wearable value bounds.
const (
	// MinHeartRate is the lowest heart rate a Wearable reports, in bpm.
	MinHeartRate = 40
	// MaxHeartRate is the highest heart rate a Wearable reports, in bpm.
	MaxHeartRate = 200
	// MinSpO2 is the lowest oxygen saturation a Wearable reports, in percent,
	// reached only during a dip; outside dips it stays within 95..100.
	MinSpO2 = 88
	// MaxSpO2 is the highest oxygen saturation a Wearable reports, in percent.
	MaxSpO2 = 100
	// MaxVibrateMillis is the longest vibration the vibrate command accepts.
	MaxVibrateMillis = 10_000
)

// Activity and physiology constants.
const (
	meanRest        = 600.0               // s between activity bursts, on average
	minBurst        = 60.0                // s
	maxBurst        = 600.0               // s
	hrTau           = 30.0                // s, heart rate response time
	hrNoise         = 1.5                 // bpm
	hrReserve       = 100.0               // bpm above resting at full intensity
	idleCadence     = 0.02                // steps/s at rest (fidgeting)
	walkCadence     = 1.2                 // steps/s at the lowest activity intensity
	cadencePerLevel = 1.6                 // extra steps/s at full intensity
	meanDipInterval = 1800.0              // s between SpO2 dips, on average
	drainPerSecond  = 100.0 / (36 * 3600) // %/s: a full battery lasts 36 h at rest
	drainActive     = 0.0005              // extra %/s at full intensity
	drainVibration  = 0.00002             // % per millisecond of vibration
)

// Wearable simulates a fitness band: a heart rate near its wearer's resting
// rate with occasional activity bursts, a step counter that grows with
// activity, blood oxygen saturation with occasional dips, and a battery that
// drains over time (faster when active) and stops at 0.
//
// Readings: heart_rate (bpm), steps (count since start, never decreasing),
// spo2 (%), battery (%, never increasing, never below 0), activity (0..1),
// rssi (dBm).
//
// A Wearable is not safe for concurrent use.
type Wearable struct {
	rng   *rand.Rand
	clock stepClock
	radio radio

	restingHR float64
	heartRate float64
	intensity float64 // 0 at rest, up to 1 in a burst
	burstLeft float64 // s left in the current burst
	steps     int64
	stepFrac  float64 // fractional steps carried over
	spo2Base  float64
	dipDepth  float64
	dipLeft   float64 // s left in the current SpO2 dip
	battery   float64
	vibrated  int // vibrate commands received
}

var _ Device = (*Wearable)(nil)

// NewWearable returns a wearable at rest with a partly charged battery. All
// randomness comes from rng.
func NewWearable(rng *rand.Rand) *Wearable {
	w := &Wearable{
		rng:       rng,
		radio:     newRadio(rng),
		restingHR: 58 + rng.Float64()*20, // 58..78
		spo2Base:  97 + rng.Float64()*2,  // 97..99
		battery:   60 + rng.Float64()*40, // 60..100
	}
	w.heartRate = w.restingHR
	return w
}

// Type returns TypeWearable.
func (w *Wearable) Type() string { return TypeWearable }

// Battery returns the battery charge in percent.
func (w *Wearable) Battery() float64 { return w.battery }

// Steps returns the step count since the wearable started.
func (w *Wearable) Steps() int64 { return w.steps }

// Step advances the wearer to now and returns a reading.
func (w *Wearable) Step(now time.Time) map[string]any {
	dt := w.clock.advance(now)
	if dt > 0 {
		w.stepActivity(dt)
		w.stepHeart(dt)
		w.stepSteps(dt)
		w.stepDip(dt)
		w.drain((drainPerSecond + drainActive*w.intensity) * dt)
	}

	return map[string]any{
		"heart_rate": int(math.Round(clamp(w.heartRate+w.rng.NormFloat64()*hrNoise, MinHeartRate, MaxHeartRate))),
		"steps":      w.steps,
		"spo2":       w.spo2(),
		"battery":    round(w.battery, 1),
		"activity":   round(w.intensity, 2),
		FieldRSSI:    w.radio.rssi(w.rng),
	}
}

// stepActivity starts and ends activity bursts.
func (w *Wearable) stepActivity(dt float64) {
	if w.burstLeft > 0 {
		w.burstLeft -= dt
		if w.burstLeft <= 0 {
			w.burstLeft, w.intensity = 0, 0
		}
		return
	}
	if chance(w.rng, meanRest, dt) {
		w.burstLeft = minBurst + w.rng.Float64()*(maxBurst-minBurst)
		w.intensity = 0.3 + w.rng.Float64()*0.7
	}
}

func (w *Wearable) stepHeart(dt float64) {
	target := w.restingHR + w.intensity*hrReserve
	w.heartRate = clamp(approach(w.heartRate, target, hrTau, dt), MinHeartRate, MaxHeartRate)
}

func (w *Wearable) stepSteps(dt float64) {
	cadence := idleCadence
	if w.intensity > 0 {
		cadence = walkCadence + cadencePerLevel*w.intensity
	}
	w.stepFrac += max(0, cadence*dt*(1+0.1*w.rng.NormFloat64()))
	whole := math.Floor(w.stepFrac)
	w.steps += int64(whole)
	w.stepFrac -= whole
}

func (w *Wearable) stepDip(dt float64) {
	if w.dipLeft > 0 {
		w.dipLeft = max(0, w.dipLeft-dt)
		return
	}
	if chance(w.rng, meanDipInterval, dt) {
		w.dipLeft = 10 + w.rng.Float64()*50 // 10..60 s
		w.dipDepth = 3 + w.rng.Float64()*6  // 3..9 %
	}
}

// spo2 returns one oxygen saturation sample.
func (w *Wearable) spo2() int {
	v := w.spo2Base + w.rng.NormFloat64()*0.7
	if w.dipLeft > 0 {
		return int(math.Round(clamp(v-w.dipDepth, MinSpO2, MaxSpO2)))
	}
	return int(math.Round(clamp(v, 95, MaxSpO2)))
}

func (w *Wearable) drain(percent float64) {
	w.battery = max(0, w.battery-percent)
}

// HandleCommand applies vibrate ({"duration_ms": 1..10000}, default 500),
// which costs a little battery.
func (w *Wearable) HandleCommand(cmd Command) (map[string]any, error) {
	if cmd.Name != "vibrate" {
		return nil, fmt.Errorf("%w: %q", ErrUnknownCommand, cmd.Name)
	}
	ms := 500.0
	if _, ok := cmd.Params["duration_ms"]; ok {
		v, err := numberParam(cmd.Params, "duration_ms")
		if err != nil {
			return nil, fmt.Errorf("vibrate: %w", err)
		}
		if v < 1 || v > MaxVibrateMillis {
			return nil, fmt.Errorf("vibrate: %w: duration_ms %g outside [1, %d]",
				ErrInvalidParams, v, MaxVibrateMillis)
		}
		ms = v
	}
	w.vibrated++
	w.drain(ms * drainVibration)
	return map[string]any{"duration_ms": ms, "vibrations": w.vibrated}, nil
}

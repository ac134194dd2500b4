package rules

import (
	"errors"
	"time"
)

// Config tunes the alert lifecycle. The rules themselves come from the API
// and from the config file's top-level rules list.
type Config struct {
	// FlapThreshold is how many times an alert of one rule and device may
	// fire within FlapWindow before it is marked flapping; 0 turns flap
	// detection off.
	FlapThreshold int `yaml:"flap_threshold"`
	// FlapWindow is the span over which firings are counted.
	FlapWindow time.Duration `yaml:"flap_window"`
	// FlapHold is how long a flapping alert's condition must stay clear
	// before the alert resolves; until then re-firings are absorbed into
	// the one firing alert and notify nobody.
	FlapHold time.Duration `yaml:"flap_hold"`
	// Retention is how long resolved alerts stay in the history.
	Retention time.Duration `yaml:"retention"`
	// MaxResolved bounds the resolved alerts kept in the history; the
	// oldest go first.
	MaxResolved int `yaml:"max_resolved"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{FlapThreshold: 4, FlapWindow: 10 * time.Minute, FlapHold: 5 * time.Minute,
		Retention: 30 * 24 * time.Hour, MaxResolved: 10000}
}

// Validate checks the values.
func (c Config) Validate() error {
	var errs []error
	if c.FlapThreshold < 0 || c.FlapThreshold == 1 || c.FlapThreshold > 64 {
		errs = append(errs, errors.New("alerts.flap_threshold: 0 (off) or 2 to 64"))
	}
	if c.FlapThreshold > 0 && (c.FlapWindow <= 0 || c.FlapHold <= 0) {
		errs = append(errs, errors.New("alerts.flap_window and alerts.flap_hold must be positive when flap detection is on"))
	}
	if c.Retention <= 0 {
		errs = append(errs, errors.New("alerts.retention must be positive"))
	}
	if c.MaxResolved < 1 {
		errs = append(errs, errors.New("alerts.max_resolved must be at least 1"))
	}
	return errors.Join(errs...)
}

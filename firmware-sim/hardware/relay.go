package hardware

import (
	"fmt"
	"sync"

	"periph.io/x/conn/v3/gpio"
)

// Relay is a relay (or any on/off load) driven by a GPIO pin. Many relay
// boards switch on when their input is low: say so with activeLow. Safe for
// concurrent use.
type Relay struct {
	pin       gpio.PinOut
	activeLow bool

	mu sync.Mutex
	on bool
}

// NewRelay drives pin as an output and switches the relay off.
func NewRelay(pin gpio.PinOut, activeLow bool) (*Relay, error) {
	r := &Relay{pin: pin, activeLow: activeLow}
	if err := r.write(false); err != nil {
		return nil, err
	}
	return r, nil
}

// Set switches the relay on or off.
func (r *Relay) Set(on bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.write(on); err != nil {
		return err
	}
	r.on = on
	return nil
}

// On reports whether the relay was last switched on.
func (r *Relay) On() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.on
}

func (r *Relay) write(on bool) error {
	level := gpio.Level(on != r.activeLow)
	if err := r.pin.Out(level); err != nil {
		return fmt.Errorf("relay on %s: set %s: %w", r.pin, level, err)
	}
	return nil
}

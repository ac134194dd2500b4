package hardware

import (
	"errors"
	"fmt"

	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/host/v3"
)

// Wiring names where a thermostat's parts are on the board.
type Wiring struct {
	// I2CBus is the I²C bus of the BME280, e.g. "1" or "/dev/i2c-1"; empty
	// takes the first one.
	I2CBus string
	// BME280Addr is the sensor's address: BME280Addr (0x76) or
	// BME280AltAddr (0x77).
	BME280Addr uint16
	// RelayPin is the GPIO pin of the heater's relay, e.g. "GPIO17"
	// (header pin 11 of a Raspberry Pi).
	RelayPin string
	// RelayActiveLow says the relay switches on when its input is low.
	RelayActiveLow bool
	// Setpoint is the initial target temperature in °C.
	Setpoint float64
}

// OpenThermostat initialises the board's drivers (periph.io/x/host/v3),
// opens the BME280 and the relay that w names and returns a Thermostat on
// them. close switches the heater off and releases the bus; call it when
// done, so that the heater is not left running.
func OpenThermostat(w Wiring) (t *Thermostat, close func() error, err error) {
	if _, err := host.Init(); err != nil {
		return nil, nil, fmt.Errorf("initialise the board's drivers: %w", err)
	}
	bus, err := i2creg.Open(w.I2CBus)
	if err != nil {
		return nil, nil, fmt.Errorf("open I²C bus %q: %w", w.I2CBus, err)
	}
	sensor, err := NewBME280(bus, w.BME280Addr, nil)
	if err != nil {
		bus.Close()
		return nil, nil, err
	}
	pin := gpioreg.ByName(w.RelayPin)
	if pin == nil {
		bus.Close()
		return nil, nil, fmt.Errorf("no GPIO pin named %q", w.RelayPin)
	}
	relay, err := NewRelay(pin, w.RelayActiveLow)
	if err != nil {
		bus.Close()
		return nil, nil, err
	}
	t, err = NewThermostat(sensor, relay, w.Setpoint)
	if err != nil {
		bus.Close()
		return nil, nil, err
	}
	return t, func() error { return errors.Join(relay.Set(false), bus.Close()) }, nil
}

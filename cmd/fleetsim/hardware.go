package main

import (
	"flag"
	"fmt"
	"log/slog"

	firmwaresim "github.com/telehub/telehub/firmware-sim"
	"github.com/telehub/telehub/firmware-sim/hardware"
)

// hardwareFlags are the flags of --hardware: one thermostat on a real
// BME280 and heater relay, instead of the simulated fleet.
type hardwareFlags struct {
	on        bool
	bus       string
	addr      uint
	pin       string
	activeLow bool
	setpoint  float64
}

func addHardwareFlags(fs *flag.FlagSet) *hardwareFlags {
	h := &hardwareFlags{}
	fs.BoolVar(&h.on, "hardware", false, "run one thermostat on a real BME280 sensor and heater relay (on a Raspberry Pi) instead of simulated devices")
	fs.StringVar(&h.bus, "i2c-bus", "", "with --hardware: I²C `bus` of the BME280, e.g. 1; empty takes the first")
	fs.UintVar(&h.addr, "bme280-addr", hardware.BME280Addr, "with --hardware: I²C `address` of the BME280 (0x76 or 0x77)")
	fs.StringVar(&h.pin, "relay-pin", "GPIO17", "with --hardware: GPIO `pin` of the heater relay")
	fs.BoolVar(&h.activeLow, "relay-active-low", false, "with --hardware: the relay switches on when its input is low")
	fs.Float64Var(&h.setpoint, "setpoint", 20, "with --hardware: initial setpoint in °C")
	return h
}

// apply turns cfg into a fleet of one hardware thermostat. The returned
// function switches the heater off and releases the bus.
func (h *hardwareFlags) apply(cfg *firmwaresim.Config, prefixSet bool, log *slog.Logger) (func(), error) {
	if h.addr != hardware.BME280Addr && h.addr != hardware.BME280AltAddr {
		return nil, fmt.Errorf("--bme280-addr %#x: a BME280 is at 0x76 or 0x77", h.addr)
	}
	th, closeHW, err := hardware.OpenThermostat(hardware.Wiring{I2CBus: h.bus, BME280Addr: uint16(h.addr),
		RelayPin: h.pin, RelayActiveLow: h.activeLow, Setpoint: h.setpoint})
	if err != nil {
		return nil, err
	}
	cfg.Thermostats, cfg.Wearables = 1, 0
	cfg.ThermostatModel = func() firmwaresim.Device { return th }
	if !prefixSet {
		cfg.IDPrefix = "pi"
	}
	log.Info("hardware thermostat ready", "i2c_bus", h.bus, "bme280_addr", fmt.Sprintf("%#x", h.addr), "relay_pin", h.pin, "setpoint", h.setpoint)
	return func() {
		if err := closeHW(); err != nil {
			log.Error("switch the heater off", "err", err)
		}
	}, nil
}

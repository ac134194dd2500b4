// Package hardware drives real sensors and actuators for Telehub's device
// firmware, on periph.io/x/conn/v3: a Bosch BME280 temperature, humidity and
// pressure sensor on I²C, a relay on a GPIO pin, and a Thermostat that
// combines them into a firmwaresim.Device, so that the same fleet runner
// that publishes simulated thermostats publishes a real one. OpenThermostat
// brings them up on a board (a Raspberry Pi) through periph.io/x/host/v3.
package hardware

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"
)

// I²C addresses of a BME280.
const (
	// BME280Addr is the address with the SDO pin to ground, the default
	// of most breakout boards.
	BME280Addr = 0x76
	// BME280AltAddr is the address with SDO to VDDIO.
	BME280AltAddr = 0x77
)

// Registers and values of the BME280 (datasheet BST-BME280-DS002, section 5).
const (
	regCalib00  = 0x88 // calib00..calib25: dig_T1..dig_P9, (0xA0 unused), dig_H1
	regChipID   = 0xD0
	regReset    = 0xE0
	regCalib26  = 0xE1 // calib26..calib32: dig_H2..dig_H6
	regCtrlHum  = 0xF2
	regStatus   = 0xF3
	regCtrlMeas = 0xF4
	regConfig   = 0xF5
	regData     = 0xF7 // press_msb..hum_lsb, 8 bytes

	chipIDBME280 = 0x60
	chipIDBMP280 = 0x58
	resetWord    = 0xB6
	modeForced   = 0x01

	statusMeasuring = 0x08 // a conversion is running
	statusIMUpdate  = 0x01 // the calibration is being copied from NVM

	// skipped is what a data register holds when its measurement was
	// skipped or has not run yet.
	skipped20 = 0x80000
	skipped16 = 0x8000

	statusPolls = 20 // status reads before giving up on a conversion
)

// Oversampling is the number of samples averaged into one measurement.
type Oversampling uint8

// Oversampling settings (register values).
const (
	Oversample1x  Oversampling = 1
	Oversample2x  Oversampling = 2
	Oversample4x  Oversampling = 3
	Oversample8x  Oversampling = 4
	Oversample16x Oversampling = 5
)

// factor returns the number of samples.
func (o Oversampling) factor() int { return 1 << (o - 1) }

// Filter is the coefficient of the chip's IIR filter.
type Filter uint8

// IIR filter settings (register values).
const (
	FilterOff Filter = 0
	Filter2   Filter = 1
	Filter4   Filter = 2
	Filter8   Filter = 3
	Filter16  Filter = 4
)

// BME280Options configure the measurements.
type BME280Options struct {
	Temperature Oversampling
	Pressure    Oversampling
	Humidity    Oversampling
	Filter      Filter
}

// DefaultBME280Options are the datasheet's settings for weather monitoring
// (section 3.5.1): forced mode, 1x oversampling of each quantity, filter
// off. One measurement every few seconds or more draws microamps and keeps
// the chip from warming itself.
func DefaultBME280Options() BME280Options {
	return BME280Options{Temperature: Oversample1x, Pressure: Oversample1x, Humidity: Oversample1x, Filter: FilterOff}
}

func (o BME280Options) validate() error {
	for _, v := range []Oversampling{o.Temperature, o.Pressure, o.Humidity} {
		if v < Oversample1x || v > Oversample16x {
			return fmt.Errorf("bme280: oversampling %d: want Oversample1x to Oversample16x", v)
		}
	}
	if o.Filter > Filter16 {
		return fmt.Errorf("bme280: filter %d: want FilterOff to Filter16", o.Filter)
	}
	return nil
}

// measureTime is the longest a forced measurement takes (datasheet 9.1):
// 1.25 ms + 2.3 ms per temperature sample + 2.3 ms per pressure and per
// humidity sample plus 0.575 ms each.
func (o BME280Options) measureTime() time.Duration {
	us := 1250 + 2300*o.Temperature.factor() + 2300*o.Pressure.factor() + 575 + 2300*o.Humidity.factor() + 575
	return time.Duration(us) * time.Microsecond
}

// Measurement is one compensated reading of a BME280.
type Measurement struct {
	// Temperature in °C, resolution 0.01.
	Temperature float64
	// Pressure in Pa, resolution 1/256.
	Pressure float64
	// Humidity in %RH, resolution 1/1024.
	Humidity float64
}

// BME280 is a Bosch BME280 on an I²C bus, read in forced mode: each Sense
// starts one measurement, waits for it and reads it. The calibration is
// read from the chip's NVM when it is opened. Safe for concurrent use.
type BME280 struct {
	dev  i2c.Dev
	opts BME280Options
	cal  Calibration
	// sleep waits for the chip; tests replace it so that they never sleep.
	sleep func(time.Duration)

	mu sync.Mutex
}

// NewBME280 resets the chip at addr on bus, reads its calibration and
// configures it; nil opts uses DefaultBME280Options.
func NewBME280(bus i2c.Bus, addr uint16, opts *BME280Options) (*BME280, error) {
	return newBME280(bus, addr, opts, time.Sleep)
}

func newBME280(bus i2c.Bus, addr uint16, opts *BME280Options, sleep func(time.Duration)) (*BME280, error) {
	o := DefaultBME280Options()
	if opts != nil {
		o = *opts
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	d := &BME280{dev: i2c.Dev{Bus: bus, Addr: addr}, opts: o, sleep: sleep}
	var id [1]byte
	if err := d.dev.Tx([]byte{regChipID}, id[:]); err != nil {
		return nil, fmt.Errorf("bme280 at %#x: read chip id: %w", addr, err)
	}
	switch id[0] {
	case chipIDBME280:
	case chipIDBMP280:
		return nil, fmt.Errorf("bme280 at %#x: the chip is a BMP280, which has no humidity sensor", addr)
	default:
		return nil, fmt.Errorf("bme280 at %#x: chip id %#x is not a BME280's (%#x)", addr, id[0], chipIDBME280)
	}
	if err := d.dev.Tx([]byte{regReset, resetWord}, nil); err != nil {
		return nil, fmt.Errorf("bme280: soft reset: %w", err)
	}
	d.sleep(2 * time.Millisecond) // start-up time after reset (datasheet table 1)
	if err := d.waitStatus(statusIMUpdate); err != nil {
		return nil, fmt.Errorf("bme280: after reset: %w", err)
	}
	var c1 [26]byte
	var c2 [7]byte
	if err := d.dev.Tx([]byte{regCalib00}, c1[:]); err != nil {
		return nil, fmt.Errorf("bme280: read calibration: %w", err)
	}
	if err := d.dev.Tx([]byte{regCalib26}, c2[:]); err != nil {
		return nil, fmt.Errorf("bme280: read calibration: %w", err)
	}
	d.cal = parseCalibration(c1, c2)
	// In sleep mode after the reset, so the config register takes the
	// write; ctrl_hum takes effect with the next write of ctrl_meas.
	if err := d.dev.Tx([]byte{regConfig, byte(o.Filter) << 2}, nil); err != nil {
		return nil, fmt.Errorf("bme280: write config: %w", err)
	}
	if err := d.dev.Tx([]byte{regCtrlHum, byte(o.Humidity)}, nil); err != nil {
		return nil, fmt.Errorf("bme280: write ctrl_hum: %w", err)
	}
	return d, nil
}

// Calibration returns the trimming parameters read from the chip.
func (d *BME280) Calibration() Calibration { return d.cal }

// waitStatus polls the status register until the bits in mask are clear.
func (d *BME280) waitStatus(mask byte) error {
	var st [1]byte
	for range statusPolls {
		if err := d.dev.Tx([]byte{regStatus}, st[:]); err != nil {
			return fmt.Errorf("read status: %w", err)
		}
		if st[0]&mask == 0 {
			return nil
		}
		d.sleep(time.Millisecond)
	}
	return errors.New("the chip stays busy")
}

// Sense takes one measurement in forced mode and returns it compensated.
func (d *BME280) Sense() (Measurement, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ctrl := byte(d.opts.Temperature)<<5 | byte(d.opts.Pressure)<<2 | modeForced
	if err := d.dev.Tx([]byte{regCtrlMeas, ctrl}, nil); err != nil {
		return Measurement{}, fmt.Errorf("bme280: start measurement: %w", err)
	}
	d.sleep(d.opts.measureTime())
	if err := d.waitStatus(statusMeasuring); err != nil {
		return Measurement{}, fmt.Errorf("bme280: measurement: %w", err)
	}
	var b [8]byte
	if err := d.dev.Tx([]byte{regData}, b[:]); err != nil {
		return Measurement{}, fmt.Errorf("bme280: read measurement: %w", err)
	}
	adcP := int32(b[0])<<12 | int32(b[1])<<4 | int32(b[2])>>4
	adcT := int32(b[3])<<12 | int32(b[4])<<4 | int32(b[5])>>4
	adcH := int32(b[6])<<8 | int32(b[7])
	if adcT == skipped20 || adcP == skipped20 || adcH == skipped16 {
		return Measurement{}, errors.New("bme280: the chip returned no measurement (data registers at their reset value)")
	}
	return d.cal.Compensate(adcT, adcP, adcH), nil
}

// Calibration holds the chip's trimming parameters (datasheet table 16),
// named as in the datasheet.
type Calibration struct {
	T1                             uint16
	T2, T3                         int16
	P1                             uint16
	P2, P3, P4, P5, P6, P7, P8, P9 int16
	H1                             uint8
	H2                             int16
	H3                             uint8
	H4, H5                         int16
	H6                             int8
}

// parseCalibration decodes calib00..25 (0x88..0xA1) and calib26..32
// (0xE1..0xE7). Words are little endian; dig_H4 and dig_H5 are 12-bit
// signed values that share register 0xE5.
func parseCalibration(a [26]byte, b [7]byte) Calibration {
	u16 := func(lo, hi byte) uint16 { return uint16(lo) | uint16(hi)<<8 }
	s16 := func(lo, hi byte) int16 { return int16(u16(lo, hi)) }
	return Calibration{
		T1: u16(a[0], a[1]), T2: s16(a[2], a[3]), T3: s16(a[4], a[5]),
		P1: u16(a[6], a[7]), P2: s16(a[8], a[9]), P3: s16(a[10], a[11]), P4: s16(a[12], a[13]),
		P5: s16(a[14], a[15]), P6: s16(a[16], a[17]), P7: s16(a[18], a[19]), P8: s16(a[20], a[21]),
		P9: s16(a[22], a[23]),
		H1: a[25],
		H2: s16(b[0], b[1]),
		H3: b[2],
		H4: int16(int8(b[3]))<<4 | int16(b[4]&0x0F),
		H5: int16(int8(b[5]))<<4 | int16(b[4]>>4),
		H6: int8(b[6]),
	}
}

// Compensate turns raw ADC values into a measurement with the datasheet's
// fixed-point formulas (section 4.2.3, BME280_compensate_T_int32,
// BME280_compensate_P_int64 and bme280_compensate_H_int32), the ones
// Bosch's reference driver uses: exact integer arithmetic, no rounding that
// differs between platforms. Go's >> on signed integers is arithmetic, as
// the datasheet's code assumes.
func (c Calibration) Compensate(adcT, adcP, adcH int32) Measurement {
	t, tFine := c.temperature(adcT)
	return Measurement{
		Temperature: float64(t) / 100,
		Pressure:    float64(c.pressure(adcP, tFine)) / 256,
		Humidity:    float64(c.humidity(adcH, tFine)) / 1024,
	}
}

// temperature returns hundredths of a °C and t_fine.
func (c Calibration) temperature(adcT int32) (t, tFine int32) {
	var1 := (((adcT >> 3) - int32(c.T1)<<1) * int32(c.T2)) >> 11
	var2 := (((((adcT >> 4) - int32(c.T1)) * ((adcT >> 4) - int32(c.T1))) >> 12) * int32(c.T3)) >> 14
	tFine = var1 + var2
	return (tFine*5 + 128) >> 8, tFine
}

// pressure returns Pa in Q24.8.
func (c Calibration) pressure(adcP, tFine int32) uint32 {
	var1 := int64(tFine) - 128000
	var2 := var1 * var1 * int64(c.P6)
	var2 += (var1 * int64(c.P5)) << 17
	var2 += int64(c.P4) << 35
	var1 = (var1*var1*int64(c.P3))>>8 + (var1*int64(c.P2))<<12
	var1 = ((int64(1)<<47 + var1) * int64(c.P1)) >> 33
	if var1 == 0 {
		return 0 // avoid a division by zero
	}
	p := 1048576 - int64(adcP)
	p = ((p<<31 - var2) * 3125) / var1
	var1 = (int64(c.P9) * (p >> 13) * (p >> 13)) >> 25
	var2 = (int64(c.P8) * p) >> 19
	p = (p+var1+var2)>>8 + int64(c.P7)<<4
	return uint32(p)
}

// humidity returns %RH in Q22.10.
func (c Calibration) humidity(adcH, tFine int32) uint32 {
	v := tFine - 76800
	v = ((((adcH << 14) - int32(c.H4)<<20 - int32(c.H5)*v) + 16384) >> 15) *
		(((((((v*int32(c.H6))>>10)*(((v*int32(c.H3))>>11)+32768))>>10)+2097152)*int32(c.H2) + 8192) >> 14)
	v -= ((((v >> 15) * (v >> 15)) >> 7) * int32(c.H1)) >> 4
	v = max(v, 0)
	v = min(v, 419430400)
	return uint32(v >> 12)
}

package hardware

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/i2c/i2ctest"
)

// The datasheet's worked example (Bosch BMP280 datasheet, section 3.12; the
// BME280 uses the same temperature and pressure formulas and trimming
// registers): these trimming values and raw readings give t_fine = 128422,
// T = 25.08 °C and p = 100653.27 Pa. The humidity trimming values are
// typical of a real BME280; Bosch gives no worked example for humidity, so
// it is checked against the datasheet's floating-point formula instead.
var exampleCalibration = Calibration{
	T1: 27504, T2: 26435, T3: -1000,
	P1: 36477, P2: -10685, P3: 3024, P4: 2855, P5: 140, P6: -7, P7: 15500, P8: -14600, P9: 6000,
	H1: 75, H2: 370, H3: 0, H4: 313, H5: 50, H6: 30,
}

const (
	exampleADCT = 519888
	exampleADCP = 415148
	exampleADCH = 28000
)

// Register traffic of a BME280 at 0x76 opening and taking one measurement
// with the default options, written out in the form i2ctest.Record
// captures; the trimming and data registers hold the example's values
// rather than those of one physical chip.
var (
	opsOpen = []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x60}}, // chip id: BME280
		{Addr: 0x76, W: []byte{0xE0, 0xB6}},            // soft reset
		{Addr: 0x76, W: []byte{0xF3}, R: []byte{0x00}}, // status: NVM copied
		{Addr: 0x76, W: []byte{0x88}, R: []byte{ // calib00..25
			0x70, 0x6B, 0x43, 0x67, 0x18, 0xFC, 0x7D, 0x8E, 0x43, 0xD6, 0xD0, 0x0B, 0x27,
			0x0B, 0x8C, 0x00, 0xF9, 0xFF, 0x8C, 0x3C, 0xF8, 0xC6, 0x70, 0x17, 0x00, 0x4B}},
		{Addr: 0x76, W: []byte{0xE1}, R: []byte{0x72, 0x01, 0x00, 0x13, 0x29, 0x03, 0x1E}}, // calib26..32
		{Addr: 0x76, W: []byte{0xF5, 0x00}},                                                // config: filter off
		{Addr: 0x76, W: []byte{0xF2, 0x01}},                                                // ctrl_hum: humidity 1x
	}
	opsMeasure = []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xF4, 0x25}},                                                      // ctrl_meas: T 1x, P 1x, forced
		{Addr: 0x76, W: []byte{0xF3}, R: []byte{0x00}},                                           // status: done
		{Addr: 0x76, W: []byte{0xF7}, R: []byte{0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x6D, 0x60}}, // press, temp, hum
	}
)

func playback(ops ...[]i2ctest.IO) *i2ctest.Playback {
	var all []i2ctest.IO
	for _, o := range ops {
		all = append(all, o...)
	}
	return &i2ctest.Playback{Ops: all, DontPanic: true}
}

// noSleep records the waits the driver asks for instead of sleeping.
type noSleep struct{ waits []time.Duration }

func (n *noSleep) sleep(d time.Duration) { n.waits = append(n.waits, d) }

func TestBME280ReadsCalibrationAndMeasuresInForcedMode(t *testing.T) {
	bus := playback(opsOpen, opsMeasure)
	ns := &noSleep{}
	d, err := newBME280(bus, BME280Addr, nil, ns.sleep)
	require.NoError(t, err)
	require.Equal(t, exampleCalibration, d.Calibration(), "trimming parameters decoded from the registers")

	m, err := d.Sense()
	require.NoError(t, err)
	require.NoError(t, bus.Close(), "every recorded transaction happened, in order")
	require.Equal(t, 25.08, m.Temperature)
	require.InDelta(t, 100653.27, m.Pressure, 0.05)
	require.InDelta(t, 44.82, m.Humidity, 0.01)
	// 2 ms after the reset; then the longest 1x/1x/1x conversion, 9.3 ms.
	require.Equal(t, []time.Duration{2 * time.Millisecond, 9300 * time.Microsecond}, ns.waits)
}

// TestBME280CompensationKnownAnswers checks the fixed-point formulas
// against the datasheet's worked example, and against the datasheet's
// floating-point formulas (section 4.2.3 / appendix 8.1) computed here.
func TestBME280CompensationKnownAnswers(t *testing.T) {
	c := exampleCalibration
	temp, tFine := c.temperature(exampleADCT)
	require.Equal(t, int32(2508), temp, "T = 25.08 °C")
	require.Equal(t, int32(128422), tFine)

	p := c.pressure(exampleADCP, tFine)
	require.Equal(t, uint32(25767233), p, "Q24.8 Pa")
	require.InDelta(t, 100653.27, float64(p)/256, 0.05, "the datasheet's p = 100653.27 Pa")

	fT, fTFine := doubleTemperature(c, exampleADCT)
	require.InDelta(t, 25.08, fT, 0.005)
	require.InDelta(t, float64(p)/256, doublePressure(c, exampleADCP, fTFine), 1.0/256*2)

	tests := []struct {
		name string
		adcH int32
	}{
		{"dry", 18000}, {"example", exampleADCH}, {"humid", 36000}, {"saturated", 65535}, {"zero", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := float64(c.humidity(tc.adcH, tFine)) / 1024
			require.InDelta(t, doubleHumidity(c, tc.adcH, fTFine), h, 0.01)
			require.GreaterOrEqual(t, h, 0.0)
			require.LessOrEqual(t, h, 100.0)
		})
	}
}

// The datasheet's floating-point compensation, for cross-checking.
func doubleTemperature(c Calibration, adcT int32) (float64, int32) {
	var1 := (float64(adcT)/16384 - float64(c.T1)/1024) * float64(c.T2)
	d := float64(adcT)/131072 - float64(c.T1)/8192
	var2 := d * d * float64(c.T3)
	return (var1 + var2) / 5120, int32(var1 + var2)
}

func doublePressure(c Calibration, adcP, tFine int32) float64 {
	var1 := float64(tFine)/2 - 64000
	var2 := var1 * var1 * float64(c.P6) / 32768
	var2 += var1 * float64(c.P5) * 2
	var2 = var2/4 + float64(c.P4)*65536
	var1 = (float64(c.P3)*var1*var1/524288 + float64(c.P2)*var1) / 524288
	var1 = (1 + var1/32768) * float64(c.P1)
	p := 1048576 - float64(adcP)
	p = (p - var2/4096) * 6250 / var1
	var1 = float64(c.P9) * p * p / 2147483648
	var2 = p * float64(c.P8) / 32768
	return p + (var1+var2+float64(c.P7))/16
}

func doubleHumidity(c Calibration, adcH, tFine int32) float64 {
	h := float64(tFine) - 76800
	h = (float64(adcH) - (float64(c.H4)*64 + float64(c.H5)/16384*h)) *
		(float64(c.H2) / 65536 * (1 + float64(c.H6)/67108864*h*(1+float64(c.H3)/67108864*h)))
	h *= 1 - float64(c.H1)*h/524288
	return min(max(h, 0), 100)
}

func TestParseCalibrationSignExtendsTheTwelveBitHumidityWords(t *testing.T) {
	var a [26]byte
	// dig_H4 = -5 (0xE4 = 0xFF, 0xE5 low nibble 0xB), dig_H5 = -20 (0xE6 =
	// 0xFE, 0xE5 high nibble 0xC), dig_H6 = -3.
	b := [7]byte{0x00, 0x80, 0x00, 0xFF, 0xCB, 0xFE, 0xFD}
	c := parseCalibration(a, b)
	require.Equal(t, int16(-5), c.H4)
	require.Equal(t, int16(-20), c.H5)
	require.Equal(t, int8(-3), c.H6)
	require.Equal(t, int16(-32768), c.H2)
}

func TestBME280Refusals(t *testing.T) {
	tests := []struct {
		name string
		ops  []i2ctest.IO
		want string
	}{
		{"a BMP280", []i2ctest.IO{{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x58}}}, "no humidity sensor"},
		{"another chip", []i2ctest.IO{{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x42}}}, "not a BME280"},
		{"nothing on the bus", nil, "read chip id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newBME280(playback(tc.ops), BME280Addr, nil, (&noSleep{}).sleep)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestBME280WaitsWhileTheChipIsMeasuring(t *testing.T) {
	busy := []i2ctest.IO{
		opsMeasure[0],
		{Addr: 0x76, W: []byte{0xF3}, R: []byte{0x08}}, // still measuring
		{Addr: 0x76, W: []byte{0xF3}, R: []byte{0x08}},
		opsMeasure[1], opsMeasure[2],
	}
	bus := playback(opsOpen, busy)
	ns := &noSleep{}
	d, err := newBME280(bus, BME280Addr, nil, ns.sleep)
	require.NoError(t, err)
	m, err := d.Sense()
	require.NoError(t, err)
	require.Equal(t, 25.08, m.Temperature)
	require.NoError(t, bus.Close())
	require.Equal(t, []time.Duration{2 * time.Millisecond, 9300 * time.Microsecond, time.Millisecond, time.Millisecond}, ns.waits)
}

func TestBME280RefusesRegistersAtTheirResetValue(t *testing.T) {
	unmeasured := []i2ctest.IO{
		opsMeasure[0], opsMeasure[1],
		{Addr: 0x76, W: []byte{0xF7}, R: []byte{0x80, 0x00, 0x00, 0x80, 0x00, 0x00, 0x80, 0x00}},
	}
	d, err := newBME280(playback(opsOpen, unmeasured), BME280Addr, nil, (&noSleep{}).sleep)
	require.NoError(t, err)
	_, err = d.Sense()
	require.ErrorContains(t, err, "no measurement")
}

func TestBME280OptionsSetTheControlRegisters(t *testing.T) {
	opts := BME280Options{Temperature: Oversample2x, Pressure: Oversample16x, Humidity: Oversample4x, Filter: Filter4}
	ops := append([]i2ctest.IO{}, opsOpen[:5]...)
	ops = append(ops,
		i2ctest.IO{Addr: 0x77, W: []byte{0xF5, 0x08}}, // filter 4
		i2ctest.IO{Addr: 0x77, W: []byte{0xF2, 0x03}}, // humidity 4x
		i2ctest.IO{Addr: 0x77, W: []byte{0xF4, 0x55}}, // T 2x (010), P 16x (101), forced (01)
		opsMeasure[1], opsMeasure[2])
	for i := range ops {
		ops[i].Addr = 0x77
	}
	bus := playback(ops)
	ns := &noSleep{}
	d, err := newBME280(bus, BME280AltAddr, &opts, ns.sleep)
	require.NoError(t, err)
	_, err = d.Sense()
	require.NoError(t, err)
	require.NoError(t, bus.Close())
	// 1.25 + 2.3*2 + 2.3*16 + 0.575 + 2.3*4 + 0.575 ms
	require.Equal(t, 53*time.Millisecond, ns.waits[1])

	bad := opts
	bad.Humidity = 0
	_, err = NewBME280(playback(nil), BME280Addr, &bad)
	require.ErrorContains(t, err, "oversampling")
}

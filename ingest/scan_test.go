package ingest

import (
	"math"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDecodeScaled(t *testing.T) {
	cases := []struct {
		lit   string
		scale int
		want  int64
		ok    bool
	}{
		{"0", 6, 0, true},
		{"-0", 6, 0, true},
		{"0.0e5", 9, 0, true},
		{"1", 6, 1000000, true},
		{"-1", 6, -1000000, true},
		{"1700000000000", 6, 1700000000000000000, true},
		{"1700000000000.123", 6, 1700000000000123000, true},
		{"1700000000000.1234567", 6, 1700000000000123456, true},
		{"1.7e12", 6, 1700000000000000000, true},
		{"1.7E+12", 6, 1700000000000000000, true},
		{"17000000000000000000000e-10", 6, 1700000000000000000, true},
		{"0.000000000000000000000017e30", 6, 17000000000000, true},
		{"1e-7", 6, 0, true},
		{"-1.5e-6", 9, -1500, true},
		{"9223372036854775807", 0, math.MaxInt64, true},
		{"9223372036854775808", 0, 0, false},
		{"-9223372036854775807", 0, -math.MaxInt64, true},
		{"1e19", 0, 0, false},
		{"1e99999999999999999999", 0, 0, false},
		{"1e-99999999999999999999", 0, 0, true},
		{"123456789012345678901234567890e-20", 9, 1234567890123456789, true},
	}
	for _, tc := range cases {
		t.Run(tc.lit, func(t *testing.T) {
			got, ok := scaled([]byte(tc.lit), tc.scale)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.want, got)
			if ok && tc.want != 0 {
				// Agree with float64 arithmetic within its precision.
				f, err := strconv.ParseFloat(tc.lit, 64)
				require.NoError(t, err)
				require.InEpsilon(t, f*math.Pow10(tc.scale), float64(got), 1e-12)
			}
		})
	}
}

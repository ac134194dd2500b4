package load

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHistogramPercentiles(t *testing.T) {
	for _, tc := range []struct {
		name          string
		values        func(i int) time.Duration
		n             int
		p50, p99, max time.Duration
	}{
		{"uniform 1..1000 µs", func(i int) time.Duration { return time.Duration(i+1) * time.Microsecond }, 1000,
			500 * time.Microsecond, 990 * time.Microsecond, 1000 * time.Microsecond},
		{"uniform 1..10000 ms", func(i int) time.Duration { return time.Duration(i+1) * time.Millisecond }, 10000,
			5 * time.Second, 9900 * time.Millisecond, 10 * time.Second},
		{"constant", func(int) time.Duration { return 3 * time.Millisecond }, 100,
			3 * time.Millisecond, 3 * time.Millisecond, 3 * time.Millisecond},
		{"one outlier in a hundred", func(i int) time.Duration {
			if i == 99 {
				return time.Second
			}
			return time.Millisecond
		}, 100, time.Millisecond, time.Millisecond, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Histogram
			perm := rand.Perm(tc.n)
			for _, i := range perm {
				h.Record(tc.values(i))
			}
			s := h.Summary()
			require.Equal(t, int64(tc.n), s.Count)
			require.InEpsilon(t, float64(tc.p50), float64(s.P50), 0.01, "p50 %v", s.P50)
			require.InEpsilon(t, float64(tc.p99), float64(s.P99), 0.01, "p99 %v", s.P99)
			require.Equal(t, tc.max, s.Max)
			require.LessOrEqual(t, s.P50, s.P90)
			require.LessOrEqual(t, s.P90, s.P99)
			require.LessOrEqual(t, s.P99, s.Max)
		})
	}
}

func TestHistogramBucketsAreContinuousAndPrecise(t *testing.T) {
	prev := -1
	for us := int64(0); us < 1<<22; us += 1 + us/1000 {
		b := bucketOf(us)
		require.GreaterOrEqual(t, b, prev, "buckets must not go back at %d µs", us)
		require.LessOrEqual(t, b, prev+1, "buckets must not skip at %d µs", us)
		prev = b
		v := bucketValue(b)
		require.InDelta(t, float64(us), float64(v), float64(us)/128+1, "value of the bucket of %d µs", us)
	}
	require.Less(t, bucketOf(1<<62), numBuckets)
}

func TestHistogramResetAndEmpty(t *testing.T) {
	var h Histogram
	require.Equal(t, "no samples", h.Summary().String())
	h.Record(-time.Second)
	require.Equal(t, time.Duration(0), h.Summary().Max, "a negative duration counts as zero")
	h.Reset()
	require.Zero(t, h.Count())
	require.Zero(t, h.Summary().Count)
}

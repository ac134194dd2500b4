package load

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

func TestScheduleDue(t *testing.T) {
	start := time.Unix(1000, 0)
	s := Schedule{Start: start, Rate: 100, Total: 50}
	for _, tc := range []struct {
		at   time.Duration
		want int64
	}{
		{-time.Second, 0},
		{0, 1},
		{9 * time.Millisecond, 1},
		{10 * time.Millisecond, 2},
		{105 * time.Millisecond, 11},
		{time.Hour, 50},
	} {
		require.Equal(t, tc.want, s.Due(start.Add(tc.at)), "due at %v", tc.at)
	}
	require.Equal(t, start.Add(250*time.Millisecond), s.At(25))
}

// Pace sends every event at its time, in order, and on a fake clock none
// is late.
func TestPaceSendsOnSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now().Add(time.Second)
		s := Schedule{Start: start, Rate: 1000, Total: 2500}
		var got []int64
		n := Pace(context.Background(), s, func(k int64, late time.Duration) {
			require.Equal(t, s.At(k), time.Now(), "event %d sent at its time", k)
			require.Zero(t, late)
			got = append(got, k)
		})
		require.Equal(t, int64(2500), n)
		require.Len(t, got, 2500)
		for i, k := range got {
			require.Equal(t, int64(i), k)
		}
		require.Equal(t, start.Add(2499*time.Millisecond), time.Now())
	})
}

// A sender that blocks does not slow the schedule: the events that fell due
// meanwhile are sent at once, and their lateness says by how much.
func TestPaceIsOpenLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := Schedule{Start: time.Now(), Rate: 100, Total: 20}
		lates := map[int64]time.Duration{}
		Pace(context.Background(), s, func(k int64, late time.Duration) {
			lates[k] = late
			if k == 5 {
				time.Sleep(100 * time.Millisecond) // a stall of 10 events
			}
		})
		require.Len(t, lates, 20)
		require.Zero(t, lates[5])
		require.Equal(t, 90*time.Millisecond, lates[6], "event 6 was due 10 ms after 5")
		require.Equal(t, 10*time.Millisecond, lates[14])
		require.Zero(t, lates[15], "back on schedule")
		require.Equal(t, s.At(19), time.Now())
	})
}

func TestPaceStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 55*time.Millisecond)
		defer cancel()
		n := Pace(ctx, Schedule{Start: time.Now(), Rate: 100, Total: 1000}, func(int64, time.Duration) {})
		require.Equal(t, int64(6), n, "events at 0, 10, ..., 50 ms")
	})
}

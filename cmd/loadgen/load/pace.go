package load

import (
	"context"
	"time"
)

// Schedule spaces Total events evenly at Rate per second from Start: event
// k (from 0) is due at Start + k/Rate. It is open-loop: when a sender falls
// behind, the events still fall due at their times, and the sender's
// lateness is measured rather than hidden by sending later ones later too.
type Schedule struct {
	Start time.Time
	Rate  float64 // events per second, > 0
	Total int64
}

// At returns when event k is due.
func (s Schedule) At(k int64) time.Time {
	return s.Start.Add(time.Duration(float64(k) / s.Rate * float64(time.Second)))
}

// Due returns how many events are due by now (those whose At is not after
// now), at most Total. It agrees with At exactly, whatever the rounding.
func (s Schedule) Due(now time.Time) int64 {
	el := now.Sub(s.Start)
	if el < 0 {
		return 0
	}
	k := min(int64(el.Seconds()*s.Rate), s.Total) // an estimate of the last due event
	for k+1 < s.Total && !s.At(k+1).After(now) {
		k++
	}
	for k >= 0 && s.At(k).After(now) {
		k--
	}
	return min(k+1, s.Total)
}

// Pace calls send for every event of s in order, each as soon as it is due,
// with how late it is; between bursts it sleeps until the next event. It
// returns how many events it sent: Total, or fewer when ctx ended first.
// A send that blocks delays the following events; their lateness shows it.
func Pace(ctx context.Context, s Schedule, send func(k int64, late time.Duration)) int64 {
	var k int64
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for k < s.Total {
		now := time.Now()
		for due := s.Due(now); k < due; k++ {
			send(k, time.Since(s.At(k)))
		}
		if k >= s.Total {
			break
		}
		if wait := time.Until(s.At(k)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return k
			}
		} else if ctx.Err() != nil {
			return k
		}
	}
	return k
}

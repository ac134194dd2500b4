package rules

import (
	"container/heap"
	"time"
)

// timers is a min-heap of states by deadline. Each state is in it at most
// once (state.hidx), so a device that keeps reporting does not grow it.
// Guarded by shard.mu.
type timers []*state

var _ heap.Interface = (*timers)(nil)

func (t timers) Len() int           { return len(t) }
func (t timers) Less(i, j int) bool { return t[i].deadline.Before(t[j].deadline) }
func (t timers) Swap(i, j int) {
	t[i], t[j] = t[j], t[i]
	t[i].hidx, t[j].hidx = i, j
}

func (t *timers) Push(x any) {
	s := x.(*state)
	s.hidx = len(*t)
	*t = append(*t, s)
}

func (t *timers) Pop() any {
	old := *t
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*t = old[:len(old)-1]
	s.hidx = -1
	return s
}

// schedule makes the state's timer fire at d, or not at all when d is zero.
// A deadline is only ever moved earlier: a timer that fires before it is
// due costs one reconcile, which works out the real deadline and schedules
// it again. That keeps a reading that pushes an absence deadline later to
// a field update instead of a heap operation. It reports whether the
// earliest deadline changed, so the timer goroutine must be woken.
func (t *timers) schedule(s *state, d time.Time) (wake bool) {
	switch {
	case d.IsZero():
		if s.hidx >= 0 {
			heap.Remove(t, s.hidx)
		}
		return false
	case s.hidx < 0:
		s.deadline = d
		heap.Push(t, s)
	case d.Before(s.deadline):
		s.deadline = d
		heap.Fix(t, s.hidx)
	default:
		return false
	}
	return s.hidx == 0
}

// unschedule takes the state out of the heap.
func (t *timers) unschedule(s *state) {
	if s.hidx >= 0 {
		heap.Remove(t, s.hidx)
	}
}

// next returns the earliest deadline.
func (t timers) next() (time.Time, bool) {
	if len(t) == 0 {
		return time.Time{}, false
	}
	return t[0].deadline, true
}

// popDue removes and returns the first state due at now, if any.
func (t *timers) popDue(now time.Time) *state {
	if len(*t) == 0 || (*t)[0].deadline.After(now) {
		return nil
	}
	return heap.Pop(t).(*state)
}

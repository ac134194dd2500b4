package load

import (
	"fmt"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram buckets of microseconds: exact below 256 µs, then 128 buckets
// per power of two (under 0.8% error), up to the largest int64.
const (
	subBits    = 7
	subBuckets = 1 << subBits // per power of two
	exactBelow = 2 * subBuckets
	numBuckets = (64-subBits)*subBuckets + subBuckets
)

// Histogram records durations with fixed relative precision in constant
// memory. Safe for concurrent use: recording is a few atomic adds.
type Histogram struct {
	counts [numBuckets]atomic.Int64
	n      atomic.Int64
	sum    atomic.Int64 // µs
	max    atomic.Int64 // µs
}

func bucketOf(us int64) int {
	if us < exactBelow {
		return int(max(us, 0))
	}
	shift := bits.Len64(uint64(us)) - subBits - 1 // us>>shift is in [128, 255]
	return shift*subBuckets + int(us>>shift)
}

// bucketValue is the middle of a bucket's range, in µs.
func bucketValue(i int) int64 {
	if i < exactBelow {
		return int64(i)
	}
	shift := i/subBuckets - 1
	lo := int64(i%subBuckets+subBuckets) << shift
	return lo + (int64(1)<<shift)/2
}

// Record adds one duration; negative ones count as zero.
func (h *Histogram) Record(d time.Duration) {
	us := max(d.Microseconds(), 0)
	h.counts[bucketOf(us)].Add(1)
	h.n.Add(1)
	h.sum.Add(us)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

// Count returns how many durations were recorded.
func (h *Histogram) Count() int64 { return h.n.Load() }

// Reset forgets everything recorded. Recording while it runs may leave the
// next summary off by the few records in between.
func (h *Histogram) Reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.n.Store(0)
	h.sum.Store(0)
	h.max.Store(0)
}

// Summary is the distribution of a set of durations.
type Summary struct {
	Count int64         `json:"count"`
	Mean  time.Duration `json:"mean"`
	P50   time.Duration `json:"p50"`
	P90   time.Duration `json:"p90"`
	P99   time.Duration `json:"p99"`
	Max   time.Duration `json:"max"`
}

// Summary returns the percentiles of what was recorded.
func (h *Histogram) Summary() Summary {
	var counts [numBuckets]int64
	var n int64
	for i := range counts {
		counts[i] = h.counts[i].Load()
		n += counts[i]
	}
	s := Summary{Count: n, Max: time.Duration(h.max.Load()) * time.Microsecond}
	if n == 0 {
		return s
	}
	s.Mean = time.Duration(h.sum.Load()/max(h.n.Load(), 1)) * time.Microsecond
	pct := func(p float64) time.Duration {
		rank := int64(p*float64(n) + 0.5)
		rank = min(max(rank, 1), n)
		var seen int64
		for i, c := range counts {
			seen += c
			if seen >= rank {
				return min(time.Duration(bucketValue(i))*time.Microsecond, s.Max)
			}
		}
		return s.Max
	}
	s.P50, s.P90, s.P99 = pct(0.50), pct(0.90), pct(0.99)
	return s
}

// String formats the summary for a terminal.
func (s Summary) String() string {
	if s.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("n=%d p50=%v p90=%v p99=%v max=%v", s.Count, Round(s.P50), Round(s.P90), Round(s.P99), Round(s.Max))
}

// Round shortens a duration for reports: µs below 1 ms, then 0.1 ms below
// 100 ms, then ms.
func Round(d time.Duration) time.Duration {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond)
	case d < 100*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	default:
		return d.Round(time.Millisecond)
	}
}

package firmwaresim

import "time"

// tsClock issues reading timestamps in Unix milliseconds that strictly
// increase for one device: the hub stores readings by series and timestamp,
// so two readings in the same millisecond would overwrite each other. A
// timestamp that would repeat or go backwards becomes the previous one plus
// 1 ms. Not safe for concurrent use: each device owns one.
type tsClock struct {
	last int64
}

// next returns the timestamp for a reading taken at now.
func (c *tsClock) next(now time.Time) int64 {
	ts := now.UnixMilli()
	if ts <= c.last {
		ts = c.last + 1
	}
	c.last = ts
	return ts
}

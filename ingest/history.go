package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Aggregates a history query may ask for.
const (
	AggMean = "mean"
	AggMin  = "min"
	AggMax  = "max"
	AggLast = "last"
)

// Bounds of history queries.
const (
	MaxRawPoints = 10000  // points per series without downsampling; the latest are kept
	MaxWindows   = 100000 // windows per series with downsampling
	// MaxFields is the most fields a query names; a query that names none
	// gets the first MaxFields of the device's fields by name.
	MaxFields = 64
)

// HistoryQuery asks for the history of some fields of one device.
type HistoryQuery struct {
	DeviceID string
	Fields   []string // empty: every field, up to MaxFields (the first by name)
	From, To time.Time
	// Every is the window of downsampling; 0 returns raw points.
	Every time.Duration
	// Agg combines a window's values: mean, min, max (numeric fields only)
	// or last (any field).
	Agg string
}

// Series is the history of one field, in columns for charts: Times are Unix
// milliseconds; for downsampled series, the start of each window, clipped to
// From.
type Series struct {
	Field     string  `json:"field"`
	Times     []int64 `json:"times"`
	Values    []any   `json:"values"`
	Truncated bool    `json:"truncated,omitempty"`
}

// History answers history queries. Both stores implement it and give the
// same answers.
type History interface {
	History(ctx context.Context, q HistoryQuery) ([]Series, error)
}

// QueryError is a history query that cannot be answered as asked.
type QueryError struct{ Msg string }

func (e *QueryError) Error() string { return e.Msg }

// ParseHistoryQuery reads fields, from, to, every and agg from URL values.
// from and to are RFC 3339, Unix milliseconds, "now", or a negative duration
// relative to now ("-1h"); the defaults are -1h and now.
func ParseHistoryQuery(deviceID string, v url.Values, now time.Time) (HistoryQuery, error) {
	q := HistoryQuery{DeviceID: deviceID, Agg: AggMean}
	var err error
	if q.From, err = parseTime(v.Get("from"), now, now.Add(-time.Hour)); err != nil {
		return q, &QueryError{"from: " + err.Error()}
	}
	if q.To, err = parseTime(v.Get("to"), now, now); err != nil {
		return q, &QueryError{"to: " + err.Error()}
	}
	if !q.From.Before(q.To) {
		return q, &QueryError{"from must be before to"}
	}
	if f := v.Get("fields"); f != "" {
		for name := range strings.SplitSeq(f, ",") {
			if name = strings.TrimSpace(name); name != "" && !slices.Contains(q.Fields, name) {
				q.Fields = append(q.Fields, name)
			}
		}
		if len(q.Fields) > MaxFields {
			return q, &QueryError{fmt.Sprintf("fields: at most %d", MaxFields)}
		}
	}
	if e := v.Get("every"); e != "" {
		if q.Every, err = time.ParseDuration(e); err != nil || q.Every < time.Millisecond {
			return q, &QueryError{"every: a duration of at least 1ms, such as 10s, 1m or 1h"}
		}
		if q.To.Sub(q.From)/q.Every > MaxWindows {
			return q, &QueryError{fmt.Sprintf("every: at most %d windows per query; use a longer window", MaxWindows)}
		}
	}
	if a := v.Get("agg"); a != "" {
		switch a {
		case AggMean, AggMin, AggMax, AggLast:
			q.Agg = a
		default:
			return q, &QueryError{"agg: one of mean, min, max, last"}
		}
	}
	return q, nil
}

func parseTime(s string, now, def time.Time) (time.Time, error) {
	switch {
	case s == "":
		return def, nil
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "-"):
		d, err := time.ParseDuration(s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not a duration such as -1h", s)
		}
		return now.Add(d), nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not RFC 3339, Unix milliseconds, now or -duration", s)
	}
	return t, nil
}

// Downsampler folds time-ordered samples of one field into windows aligned
// to the Unix epoch, the way InfluxDB's aggregateWindow does, so the
// embedded store answers like Flux. Non-numeric values are skipped by mean,
// min and max.
type Downsampler struct {
	q      HistoryQuery
	out    *Series
	open   bool
	start  time.Time // window start (aligned)
	sum    float64
	n      int
	acc    Value
	hasAcc bool
}

// NewDownsampler returns a downsampler that appends windows to out.
func NewDownsampler(q HistoryQuery, out *Series) *Downsampler { return &Downsampler{q: q, out: out} }

// Add folds in one sample; samples must come in time order.
func (d *Downsampler) Add(t time.Time, v Value) {
	ws := alignEpoch(t, d.q.Every)
	if d.open && !ws.Equal(d.start) {
		d.flush()
	}
	if !d.open {
		d.open, d.start, d.sum, d.n, d.hasAcc = true, ws, 0, 0, false
	}
	if d.q.Agg == AggLast {
		d.acc, d.hasAcc = v, true
		return
	}
	if v.Kind != KindNumber {
		return
	}
	switch d.q.Agg {
	case AggMean:
		d.sum += v.Num
		d.n++
	case AggMin:
		if !d.hasAcc || v.Num < d.acc.Num {
			d.acc, d.hasAcc = v, true
		}
	case AggMax:
		if !d.hasAcc || v.Num > d.acc.Num {
			d.acc, d.hasAcc = v, true
		}
	}
}

// Close emits the last window.
func (d *Downsampler) Close() {
	if d.open {
		d.flush()
	}
}

func (d *Downsampler) flush() {
	d.open = false
	var v Value
	switch {
	case d.q.Agg == AggMean && d.n > 0:
		v = Number(d.sum / float64(d.n))
	case d.q.Agg != AggMean && d.hasAcc:
		v = d.acc
	default:
		return
	}
	t := d.start
	if t.Before(d.q.From) {
		t = d.q.From
	}
	d.out.Times = append(d.out.Times, t.UnixMilli())
	d.out.Values = append(d.out.Values, v.Any())
}

func alignEpoch(t time.Time, every time.Duration) time.Time {
	ns := t.UnixNano()
	e := every.Nanoseconds()
	r := ns % e
	if r < 0 {
		r += e
	}
	return time.Unix(0, ns-r).UTC()
}

// FallbackHistory answers from Primary (InfluxDB) and, when it fails, from
// Local (the embedded store's recent window) for queries that lie within the
// window, so that charts keep working while the uplink is down.
type FallbackHistory struct {
	Primary, Local History
	Window         time.Duration
	Logger         *slog.Logger
}

// History implements History.
func (f FallbackHistory) History(ctx context.Context, q HistoryQuery) ([]Series, error) {
	s, err := f.Primary.History(ctx, q)
	if err == nil {
		return s, nil
	}
	var qe *QueryError
	if errors.As(err, &qe) || q.From.Before(time.Now().Add(-f.Window)) && q.To.Before(time.Now().Add(-f.Window)) {
		return nil, err
	}
	f.Logger.Warn("history from InfluxDB failed, answering from the local window", "device_id", q.DeviceID, "err", err)
	return f.Local.History(ctx, q)
}

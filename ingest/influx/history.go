package influx

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/telehub/telehub/ingest"
)

var _ ingest.History = (*DB)(nil)

// History answers a history query with Flux. A first query finds the
// device's fields in the range and their types (last value of each); a
// second fetches raw points (the latest MaxRawPoints) or windows aggregated
// with aggregateWindow, numeric fields only for mean, min and max.
func (s *DB) History(ctx context.Context, q ingest.HistoryQuery) ([]ingest.Series, error) {
	// InfluxDB 1.8's storage includes points at the stop time, which Flux
	// documents as exclusive: stop 1 ns early so both stores agree.
	base := fmt.Sprintf("from(bucket: %s)\n  |> range(start: %s, stop: %s)\n  |> filter(fn: (r) => r._measurement == %s and r.device_id == %s)",
		fluxString(s.bucket), q.From.UTC().Format(time.RFC3339Nano), q.To.Add(-time.Nanosecond).UTC().Format(time.RFC3339Nano),
		fluxString(s.meas), fluxString(q.DeviceID))
	kinds := map[string]ingest.Kind{}
	err := s.flux(ctx, base+"\n  |> last()", func(field string, _ time.Time, v ingest.Value) { kinds[field] = v.Kind })
	if err != nil {
		return nil, err
	}
	fields := q.Fields
	if len(fields) == 0 {
		for f := range kinds {
			fields = append(fields, f)
		}
	}
	slices.Sort(fields)
	if len(q.Fields) == 0 && len(fields) > ingest.MaxFields {
		fields = fields[:ingest.MaxFields] // the answer stays bounded however many fields a device has
	}
	out := make([]ingest.Series, len(fields))
	index := map[string]*ingest.Series{}
	var want []string
	for i, f := range fields {
		out[i] = ingest.Series{Field: f, Times: []int64{}, Values: []any{}}
		k, ok := kinds[f]
		if !ok || (q.Every > 0 && q.Agg != ingest.AggLast && k != ingest.KindNumber) {
			continue
		}
		index[f] = &out[i]
		want = append(want, "r._field == "+fluxString(f))
	}
	if len(want) == 0 {
		return out, nil
	}
	query := base + "\n  |> filter(fn: (r) => " + strings.Join(want, " or ") + ")"
	if q.Every > 0 {
		query += fmt.Sprintf("\n  |> aggregateWindow(every: %dns, fn: %s, createEmpty: false, timeSrc: \"_start\")", q.Every.Nanoseconds(), q.Agg)
	} else {
		query += fmt.Sprintf("\n  |> tail(n: %d)", ingest.MaxRawPoints+1)
	}
	err = s.flux(ctx, query, func(field string, t time.Time, v ingest.Value) {
		sr := index[field]
		if sr == nil {
			return
		}
		sr.Times = append(sr.Times, t.UnixMilli())
		sr.Values = append(sr.Values, v.Any())
	})
	if err != nil {
		return nil, err
	}
	for i := range out {
		if sr := &out[i]; len(sr.Times) > ingest.MaxRawPoints {
			n := len(sr.Times) - ingest.MaxRawPoints
			sr.Times, sr.Values, sr.Truncated = sr.Times[n:], sr.Values[n:], true
		}
	}
	return out, nil
}

// flux runs a query and calls fn for every row.
func (s *DB) flux(ctx context.Context, query string, fn func(field string, t time.Time, v ingest.Value)) error {
	res, err := s.client.QueryAPI(s.org).Query(ctx, query)
	if err != nil {
		return fmt.Errorf("influx query: %w", err)
	}
	defer res.Close()
	for res.Next() {
		r := res.Record()
		var v ingest.Value
		switch x := r.Value().(type) {
		case float64:
			v = ingest.Number(x)
		case int64:
			v = ingest.Number(float64(x))
		case uint64:
			v = ingest.Number(float64(x))
		case bool:
			v = ingest.Bool(x)
		case string:
			v = ingest.String(x)
		default:
			continue
		}
		fn(r.Field(), r.Time(), v)
	}
	if err := res.Err(); err != nil {
		return fmt.Errorf("influx query: %w", err)
	}
	return nil
}

// fluxString quotes s as a Flux string literal.
func fluxString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `${`, `\${`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/ingest"
)

var _ ingest.History = (*DB)(nil)

// History answers a history query from the embedded store with the same
// semantics as the InfluxDB backend: raw points (the latest MaxRawPoints) or
// epoch-aligned windows.
func (s *DB) History(_ context.Context, q ingest.HistoryQuery) ([]ingest.Series, error) {
	fields := slices.Clone(q.Fields)
	if len(fields) == 0 {
		if err := s.db.View(func(tx *bolt.Tx) error {
			fields = s.fieldNames(tx, q.DeviceID)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("embedded store history: %w", err)
		}
	}
	slices.Sort(fields)
	if len(q.Fields) == 0 && len(fields) > ingest.MaxFields {
		fields = fields[:ingest.MaxFields] // the answer stays bounded however many fields a device has
	}
	out := make([]ingest.Series, len(fields))
	for i, f := range fields {
		out[i] = ingest.Series{Field: f, Times: []int64{}, Values: []any{}}
		if err := s.scanSeries(q, &out[i]); err != nil {
			return nil, fmt.Errorf("embedded store history: %w", err)
		}
	}
	return out, nil
}

func (s *DB) scanSeries(q ingest.HistoryQuery, sr *ingest.Series) error {
	var ds *ingest.Downsampler
	if q.Every > 0 {
		ds = ingest.NewDownsampler(q, sr)
	}
	err := s.scan(q.DeviceID, sr.Field, q.From.UnixNano(), q.To.UnixNano(), func(x sample) {
		if ds != nil {
			ds.Add(time.Unix(0, x.t).UTC(), x.v)
			return
		}
		sr.Times = append(sr.Times, time.Unix(0, x.t).UnixMilli())
		sr.Values = append(sr.Values, x.v.Any())
		if len(sr.Times) > 2*ingest.MaxRawPoints {
			sr.Times, sr.Values = sr.Times[len(sr.Times)-ingest.MaxRawPoints:], sr.Values[len(sr.Values)-ingest.MaxRawPoints:]
			sr.Truncated = true
		}
	})
	if err != nil {
		return err
	}
	if ds != nil {
		ds.Close()
		return nil
	}
	if n := len(sr.Times) - ingest.MaxRawPoints; n > 0 {
		sr.Times, sr.Values, sr.Truncated = sr.Times[n:], sr.Values[n:], true
	}
	return nil
}

package store

import (
	"bytes"
	"context"
	"encoding/binary"
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
	var out []ingest.Series
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(seriesBucket).Bucket([]byte(q.DeviceID))
		fields := q.Fields
		if len(fields) == 0 && b != nil {
			fields = fieldNames(b)
		}
		fields = slices.Clone(fields)
		slices.Sort(fields)
		out = make([]ingest.Series, len(fields))
		for i, f := range fields {
			out[i] = ingest.Series{Field: f, Times: []int64{}, Values: []any{}}
			if b != nil {
				scanField(b, q, &out[i])
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("embedded store history: %w", err)
	}
	return out, nil
}

// fieldNames lists the fields of a device bucket, jumping from one field's
// keys to the next.
func fieldNames(b *bolt.Bucket) []string {
	var names []string
	c := b.Cursor()
	for k, _ := c.First(); k != nil; {
		i := bytes.IndexByte(k, 0)
		if i < 0 {
			k, _ = c.Next()
			continue
		}
		name := string(k[:i])
		names = append(names, name)
		k, _ = c.Seek(append([]byte(name), 1))
	}
	return names
}

func scanField(b *bolt.Bucket, q ingest.HistoryQuery, sr *ingest.Series) {
	lo, hi := appendKey(nil, sr.Field, q.From), appendKey(nil, sr.Field, q.To)
	c := b.Cursor()
	var ds *ingest.Downsampler
	if q.Every > 0 {
		ds = ingest.NewDownsampler(q, sr)
	}
	for k, v := c.Seek(lo); k != nil && bytes.Compare(k, hi) < 0; k, v = c.Next() {
		val, ok := decodeValue(v)
		if !ok {
			continue
		}
		t := time.Unix(0, int64(binary.BigEndian.Uint64(k[len(k)-8:])^(1<<63))).UTC()
		if ds != nil {
			ds.Add(t, val)
			continue
		}
		sr.Times = append(sr.Times, t.UnixMilli())
		sr.Values = append(sr.Values, val.Any())
		if len(sr.Times) > 2*ingest.MaxRawPoints {
			sr.Times, sr.Values = sr.Times[len(sr.Times)-ingest.MaxRawPoints:], sr.Values[len(sr.Values)-ingest.MaxRawPoints:]
			sr.Truncated = true
		}
	}
	if ds != nil {
		ds.Close()
		return
	}
	if n := len(sr.Times) - ingest.MaxRawPoints; n > 0 {
		sr.Times, sr.Values, sr.Truncated = sr.Times[n:], sr.Values[n:], true
	}
}

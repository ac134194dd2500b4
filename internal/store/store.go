// Package store is the embedded time-series store: readings kept in a bbolt
// file in the data directory when no InfluxDB is configured. bbolt is pure Go
// (the edge build has no cgo), crash-safe through copy-on-write pages, and
// well kept; one write transaction per batch keeps it fast enough for the
// writer.
//
// Layout: one bucket per device under "series"; keys are the field name, a
// zero byte and the big-endian timestamp, so a field's history is one ordered
// range scan. Writing the same device, field and time again overwrites it,
// which makes replays from the durable log idempotent.
package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/ingest"
)

var seriesBucket = []byte("series")

// DB is the embedded store. Safe for concurrent use.
type DB struct {
	db *bolt.DB
}

var _ ingest.Sink = (*DB)(nil)

// Open opens or creates the store file at path.
func Open(path string) (*DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true,
		FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("open embedded store: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(seriesBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("init embedded store: %w", err)
	}
	return &DB{db: db}, nil
}

// Close closes the file.
func (s *DB) Close() error { return s.db.Close() }

// Write stores a batch of readings in one transaction.
func (s *DB) Write(_ context.Context, rs []ingest.Reading) error {
	// bbolt keeps references to keys and values until the commit, so they
	// are carved out of one growing arena rather than reused buffers.
	var arena []byte
	err := s.db.Update(func(tx *bolt.Tx) error {
		arena = make([]byte, 0, 64*len(rs))
		root := tx.Bucket(seriesBucket)
		var b *bolt.Bucket
		last := ""
		for _, r := range rs {
			if b == nil || r.DeviceID != last {
				var err error
				if b, err = root.CreateBucketIfNotExists([]byte(r.DeviceID)); err != nil {
					return err
				}
				last = r.DeviceID
			}
			for _, f := range r.Fields {
				k0 := len(arena)
				arena = appendKey(arena, f.Name, r.Time)
				v0 := len(arena)
				arena = appendValue(arena, f.Value)
				if err := b.Put(arena[k0:v0:v0], arena[v0:]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("embedded store write: %w", err)
	}
	return nil
}

func appendKey(b []byte, field string, t time.Time) []byte {
	b = append(b, field...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, uint64(t.UnixNano())^(1<<63))
}

func appendValue(b []byte, v ingest.Value) []byte {
	b = append(b, byte(v.Kind))
	switch v.Kind {
	case ingest.KindNumber:
		return binary.BigEndian.AppendUint64(b, math.Float64bits(v.Num))
	case ingest.KindBool:
		if v.Bool {
			return append(b, 1)
		}
		return append(b, 0)
	default:
		return append(b, v.Str...)
	}
}

func decodeValue(b []byte) (ingest.Value, bool) {
	if len(b) < 1 {
		return ingest.Value{}, false
	}
	switch ingest.Kind(b[0]) {
	case ingest.KindNumber:
		if len(b) != 9 {
			return ingest.Value{}, false
		}
		return ingest.Number(math.Float64frombits(binary.BigEndian.Uint64(b[1:]))), true
	case ingest.KindBool:
		return ingest.Bool(len(b) > 1 && b[1] == 1), true
	case ingest.KindString:
		return ingest.String(string(b[1:])), true
	}
	return ingest.Value{}, false
}

// Sample is one stored value of a field.
type Sample struct {
	Time  time.Time
	Value ingest.Value
}

// Query returns the samples of a device's field with from <= time < to, in
// time order.
func (s *DB) Query(deviceID, field string, from, to time.Time) ([]Sample, error) {
	var out []Sample
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(seriesBucket).Bucket([]byte(deviceID))
		if b == nil {
			return nil
		}
		lo, hi := appendKey(nil, field, from), appendKey(nil, field, to)
		c := b.Cursor()
		for k, v := c.Seek(lo); k != nil && string(k) < string(hi); k, v = c.Next() {
			val, ok := decodeValue(v)
			if !ok {
				continue
			}
			ts := int64(binary.BigEndian.Uint64(k[len(k)-8:]) ^ (1 << 63))
			out = append(out, Sample{Time: time.Unix(0, ts).UTC(), Value: val})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("embedded store query: %w", err)
	}
	return out, nil
}

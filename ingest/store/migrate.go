package store

import (
	"context"
	"encoding/binary"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/ingest"
)

// legacyBucket is the first layout: a bucket per device under "series",
// keys field, 0, big-endian time with the sign bit flipped; values a kind
// byte and the number (8 bytes), the bool (1) or the string's bytes.
var legacyBucket = []byte("series")

// migrate moves a file of the first layout into flushes, a device at a
// time through the head, then drops the old bucket. Stopped half-way, it
// starts over on the next open; the copies it made twice merge away as
// replays do.
func (s *DB) migrate() error {
	var devices []string
	if err := s.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(legacyBucket)
		if root == nil {
			return nil
		}
		return root.ForEachBucket(func(k []byte) error {
			devices = append(devices, string(k))
			return nil
		})
	}); err != nil || len(devices) == 0 {
		return s.dropLegacy(err)
	}
	for _, dev := range devices {
		var rs []ingest.Reading
		if err := s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(legacyBucket).Bucket([]byte(dev)).ForEach(func(k, v []byte) error {
				if r, ok := legacyReading(dev, k, v); ok {
					rs = append(rs, r)
				}
				return nil
			})
		}); err != nil {
			return err
		}
		if err := s.Write(context.Background(), rs); err != nil {
			return err
		}
		if s.HeadBytes() >= s.opts.FlushBytes {
			if err := s.Flush(context.Background()); err != nil {
				return err
			}
		}
	}
	if err := s.Flush(context.Background()); err != nil {
		return err
	}
	return s.dropLegacy(nil)
}

func (s *DB) dropLegacy(err error) error {
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(legacyBucket) == nil {
			return nil
		}
		return tx.DeleteBucket(legacyBucket)
	})
}

func legacyReading(dev string, k, v []byte) (ingest.Reading, bool) {
	if len(k) < 10 || k[len(k)-9] != 0 || len(v) < 1 {
		return ingest.Reading{}, false
	}
	var val ingest.Value
	switch ingest.Kind(v[0]) {
	case ingest.KindNumber:
		if len(v) != 9 {
			return ingest.Reading{}, false
		}
		val = ingest.Number(math.Float64frombits(binary.BigEndian.Uint64(v[1:])))
	case ingest.KindBool:
		val = ingest.Bool(len(v) > 1 && v[1] == 1)
	case ingest.KindString:
		val = ingest.String(string(v[1:]))
	default:
		return ingest.Reading{}, false
	}
	ts := int64(binary.BigEndian.Uint64(k[len(k)-8:]) ^ (1 << 63))
	return ingest.Reading{DeviceID: dev, Time: time.Unix(0, ts).UTC(),
		Fields: []ingest.Field{{Name: string(k[:len(k)-9]), Value: val}}}, true
}

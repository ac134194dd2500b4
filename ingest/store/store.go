// Package store is the embedded time-series store: readings kept in a bbolt
// file in the data directory when no InfluxDB is configured. It implements
// ingest.Sink and ingest.History, beside ingest/influx. bbolt is pure Go
// (the edge build has no cgo), crash-safe through copy-on-write pages, and
// well kept.
//
// Writes go to an in-memory head, one chunk per series (a device's field).
// Flush writes the whole head in one transaction as one "flush": a chunk per
// series under keys that begin with the flush's sequence number, so every
// flush appends at the end of the B-tree and touches only the pages it
// fills. (Writing each reading under its series, as the first layout did,
// copied one page per series per transaction: with 1,000 devices, about
// 400 bytes written and 40 bytes of heap per byte of data.) The head is not
// durable: the writer (ingest.BufferingSink) moves the durable log's
// checkpoint past readings only after a Flush, so a crash replays them.
//
// Buckets:
//
//	flushes  seq (8 bytes)                         -> first and last time of its samples (2x8 bytes, Unix ns), level (1 byte, compact.go)
//	chunks   seq (8 bytes), device, 0, field       -> chunk (chunk.go)
//	fields   device, 0, field                      -> (empty): the fields a device ever had
//
// Writing the same device, field and time again overwrites it (the later
// flush wins when a query merges chunks), which makes replays from the
// durable log idempotent. Flushes are merged in the background
// (compact.go) and dropped whole by retention (retention.go).
package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/ingest"
)

var (
	flushesBucket = []byte("flushes")
	chunksBucket  = []byte("chunks")
	fieldsBucket  = []byte("fields")
)

// Options tune the head.
type Options struct {
	// FlushBytes is the head size (encoded samples) at which FlushDue turns
	// true; 0 means 8 MiB.
	FlushBytes int
	// FlushEvery is the age of the oldest sample in the head at which
	// FlushDue turns true; 0 means 5 minutes.
	FlushEvery time.Duration
	// MergeSpan is the longest time range a merge of flushes may make
	// (compact.go); 0 means a day. Retention deletes whole flushes, so it
	// is about how long past the retention period samples may stay.
	MergeSpan time.Duration
	// Logger receives the errors of background compaction; nil discards
	// them.
	Logger *slog.Logger

	fanIn int // flushes of one level merged at once; 0 means defaultFanIn (tests set it)
}

// DB is the embedded store. Safe for concurrent use.
type DB struct {
	db   *bolt.DB
	opts Options

	flushMu sync.Mutex // one Flush at a time

	mu       sync.Mutex
	head     map[string]map[string]*series // device -> field -> series
	bytes    int                           // encoded size of the head
	since    time.Time                     // when the head got its first sample
	flushing map[string]map[string]*series // the head being flushed, still visible to queries
	known    map[string]bool               // device+"\x00"+field already in the fields bucket
	flushes  atomic.Uint64                 // successful flushes since Open

	fanIn     int        // flushes of one level merged at once (compact.go)
	compactMu sync.Mutex // one compaction or retention pass at a time
	merges    atomic.Uint64
	kick      chan struct{} // wakes the compactor
	closing   chan struct{}
	bg        sync.WaitGroup
	closeOnce sync.Once
}

var (
	_ ingest.Sink          = (*DB)(nil)
	_ ingest.BufferingSink = (*DB)(nil)
)

// Open opens or creates the store file at path. A file of the first layout
// (one bucket per device) is converted on the first open.
func Open(path string, opts Options) (*DB, error) {
	if opts.FlushBytes <= 0 {
		opts.FlushBytes = 8 << 20
	}
	if opts.FlushEvery <= 0 {
		opts.FlushEvery = 5 * time.Minute
	}
	if opts.MergeSpan <= 0 {
		opts.MergeSpan = 24 * time.Hour
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true,
		FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("open embedded store: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &DB{db: db, opts: opts, head: map[string]map[string]*series{}, known: map[string]bool{},
		fanIn: cmp.Or(opts.fanIn, defaultFanIn), kick: make(chan struct{}, 1), closing: make(chan struct{})}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{flushesBucket, chunksBucket, fieldsBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return tx.Bucket(fieldsBucket).ForEach(func(k, _ []byte) error {
			s.known[string(k)] = true
			return nil
		})
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("init embedded store: %w", err)
	}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, fmt.Errorf("convert embedded store: %w", err)
	}
	s.bg.Go(s.compactor)
	s.startCompaction()
	return s, nil
}

// compactor merges flushes in the background after each flush, until
// Close.
func (s *DB) compactor() {
	for {
		select {
		case <-s.kick:
			if err := s.compact(); err != nil && !errors.Is(err, errClosing) {
				s.opts.Logger.Error("embedded store compaction", "err", err)
			}
			s.release()
		case <-s.closing:
			return
		}
	}
}

// release drops the file's pages from the hub's memory after flushes,
// merges and retention (release_linux.go).
func (s *DB) release() {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	s.releaseDuringCompaction()
}

// releaseDuringCompaction is release for a caller holding compactMu (the
// lock order is compactMu, then flushMu).
func (s *DB) releaseDuringCompaction() {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.releasePages()
}

func (s *DB) startCompaction() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Close stops compaction, flushes the head and closes the file.
func (s *DB) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closing)
		s.bg.Wait()
		err = s.Flush(context.Background())
		if cerr := s.db.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// Write adds a batch of readings to the head. They are durable after the
// next Flush.
func (s *DB) Write(_ context.Context, rs []ingest.Reading) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(rs) > 0 && s.bytes == 0 {
		s.since = time.Now()
	}
	for _, r := range rs {
		dev := s.head[r.DeviceID]
		if dev == nil {
			dev = map[string]*series{}
			s.head[r.DeviceID] = dev
		}
		t := r.Time.UnixNano()
		for _, f := range r.Fields {
			sr := dev[f.Name]
			if sr == nil {
				sr = &series{}
				dev[f.Name] = sr
			}
			n := len(sr.body)
			sr.add(t, f.Value)
			s.bytes += len(sr.body) - n
		}
	}
	return nil
}

// FlushDue reports whether the head is big or old enough to be flushed.
func (s *DB) FlushDue() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes >= s.opts.FlushBytes || (s.bytes > 0 && time.Since(s.since) >= s.opts.FlushEvery)
}

// HeadBytes is the encoded size of the samples in the head.
func (s *DB) HeadBytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// Flush writes the head in one transaction. Every reading Write accepted
// before Flush was called is durable when it returns nil. On an error the
// head keeps its samples for the next Flush.
func (s *DB) Flush(context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	h, n, since := s.head, s.bytes, s.since
	if n == 0 {
		s.mu.Unlock()
		return nil
	}
	s.flushing, s.head, s.bytes = h, map[string]map[string]*series{}, 0
	s.mu.Unlock()

	var added []string
	err := s.db.Update(func(tx *bolt.Tx) error { return s.writeFlush(tx, h, &added) })
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushing = nil
	if err != nil {
		// Back into the head, before what came since (same times: later wins).
		for dev, fields := range s.head {
			for f, sr := range fields {
				merged := h[dev][f]
				if merged == nil {
					if h[dev] == nil {
						h[dev] = map[string]*series{}
					}
					h[dev][f] = sr
					continue
				}
				for _, x := range sr.samples() {
					merged.add(x.t, x.v)
				}
			}
		}
		s.head, s.bytes, s.since = h, s.bytes+n, since
		return fmt.Errorf("embedded store flush: %w", err)
	}
	for _, k := range added {
		s.known[k] = true
	}
	s.flushes.Add(1)
	s.startCompaction()
	return nil
}

// Merges counts the merges of flushes since Open (compact.go).
func (s *DB) Merges() uint64 { return s.merges.Load() }

// Flushes counts the flushes since Open.
func (s *DB) Flushes() uint64 { return s.flushes.Load() }

// writeFlush writes one flush: a chunk per series, in key order so that the
// B-tree only grows at its end.
func (s *DB) writeFlush(tx *bolt.Tx, h map[string]map[string]*series, added *[]string) error {
	flushes, chunks, fields := tx.Bucket(flushesBucket), tx.Bucket(chunksBucket), tx.Bucket(fieldsBucket)
	seq, err := flushes.NextSequence()
	if err != nil {
		return err
	}
	chunks.FillPercent = 1 // appended only
	first, last := int64(1<<63-1), int64(-1<<63)
	for _, dev := range sortedKeys(h) {
		for _, f := range sortedKeys(h[dev]) {
			sr := h[dev][f]
			first, last = min(first, sr.first), max(last, sr.last)
			if err := chunks.Put(chunkKey(seq, dev, f), sr.chunk()); err != nil {
				return err
			}
			fk := dev + "\x00" + f
			if !s.known[fk] {
				if err := fields.Put([]byte(fk), nil); err != nil {
					return err
				}
				*added = append(*added, fk)
			}
		}
	}
	return flushes.Put(seqKey(seq), flushRecord(first, last, 0))
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func chunkKey(seq uint64, dev, field string) []byte {
	k := make([]byte, 0, 8+len(dev)+1+len(field))
	k = binary.BigEndian.AppendUint64(k, seq)
	k = append(k, dev...)
	k = append(k, 0)
	return append(k, field...)
}

// flushRecord is a flush's entry in the flushes bucket: the first and last
// time of its samples and its level (compact.go).
func flushRecord(first, last int64, level byte) []byte {
	b := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(first)), uint64(last))
	return append(b, level)
}

func readRange(v []byte) (first, last int64, ok bool) {
	if len(v) != 16 && len(v) != 17 {
		return 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:])), true
}

func flushLevel(v []byte) byte {
	if len(v) == 17 {
		return v[16]
	}
	return 0
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
	err := s.scan(deviceID, field, from.UnixNano(), to.UnixNano(), func(x sample) {
		out = append(out, Sample{Time: time.Unix(0, x.t).UTC(), Value: x.v})
	})
	if err != nil {
		return nil, fmt.Errorf("embedded store query: %w", err)
	}
	return out, nil
}

// scan merges a series' chunks from every flush that overlaps [from, to)
// and from the head.
func (s *DB) scan(dev, field string, from, to int64, emit func(sample)) error {
	head := s.headChunks(dev, field)
	return s.db.View(func(tx *bolt.Tx) error {
		var refs []chunkRef
		chunks := tx.Bucket(chunksBucket)
		c := tx.Bucket(flushesBucket).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			first, last, ok := readRange(v)
			if !ok || last < from || first >= to {
				continue
			}
			seq := binary.BigEndian.Uint64(k)
			if ch := chunks.Get(chunkKey(seq, dev, field)); ch != nil {
				ref, err := newChunkRef(seq, ch)
				if err != nil {
					return fmt.Errorf("flush %d, %s %s: %w", seq, dev, field, err)
				}
				refs = append(refs, ref)
			}
		}
		for i, ch := range head { // after every flush
			ref, err := newChunkRef(1<<63+uint64(i), ch)
			if err != nil {
				return err
			}
			refs = append(refs, ref)
		}
		merge(refs, from, to, emit)
		return nil
	})
}

// headChunks returns the series as chunks from the head being flushed and
// the head, in that order.
func (s *DB) headChunks(dev, field string) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][]byte
	for _, h := range []map[string]map[string]*series{s.flushing, s.head} {
		if sr := h[dev][field]; sr != nil {
			out = append(out, sr.chunk())
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// fieldNames lists the fields a device has or had, sorted.
func (s *DB) fieldNames(tx *bolt.Tx, dev string) []string {
	set := map[string]bool{}
	prefix := append([]byte(dev), 0)
	c := tx.Bucket(fieldsBucket).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		set[string(k[len(prefix):])] = true
	}
	s.mu.Lock()
	for _, h := range []map[string]map[string]*series{s.flushing, s.head} {
		for f := range h[dev] {
			set[f] = true
		}
	}
	s.mu.Unlock()
	return sortedKeys(set)
}

// DeviceFields returns the fields each device has or had in history.db (its
// fields bucket), for seeding the hub's field index (ingest.Fields).
func (s *DB) DeviceFields() (map[string][]string, error) {
	out := map[string][]string{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(fieldsBucket).ForEach(func(k, _ []byte) error {
			dev, field, ok := bytes.Cut(k, []byte{0})
			if ok {
				out[string(dev)] = append(out[string(dev)], string(field))
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("embedded store fields: %w", err)
	}
	return out, nil
}

// ForgetFields drops the field names of a deleted device, so that they
// neither seed the field index nor stay in memory; its samples stay until
// retention removes them.
func (s *DB) ForgetFields(dev string) error {
	s.flushMu.Lock() // known is read and written by flushes
	defer s.flushMu.Unlock()
	prefix := append([]byte(dev), 0)
	err := s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(fieldsBucket).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
			delete(s.known, string(k))
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("embedded store forget fields: %w", err)
	}
	return nil
}

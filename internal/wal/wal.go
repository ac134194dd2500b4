// Package wal is the hub's durable local log, the write-ahead log (WAL): an
// append-only sequence of records in segment files, read in order by named
// consumers (the store writer, the local history window, the forwarder),
// each of which records how far it got in its own checkpoint.
//
// The words, as docs/architecture.md's glossary uses them: an append hands
// records to the log; its Commit (Submit) completes once the records are
// durable (on disk, fsynced), and Append waits for it. A sync writes the
// open group of appends with one write and one fsync, so concurrent
// appends share it (group commit); SyncInterval spaces syncs. A consumer's
// checkpoint is the offset of the first record it has not consumed.
//
// Records are numbered from 1 by their offset. Segments wholly below every
// consumer's checkpoint are deleted. The log is bounded in bytes: when the
// part the slowest consumer has not consumed is full, appends fail fast
// with ErrFull so that the caller can push back on its producers instead
// of dropping data. When a sync fails (a full disk), the log refuses
// appends at once with ErrFailing, and says so (Failing), until a probe of
// the disk succeeds.
package wal

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrFull is returned by Append when the unconsumed part of the log has reached
// its byte bound.
var ErrFull = errors.New("wal: log is full")

// ErrFailing is returned by Append, Submit and Enqueue while the log cannot
// sync (a full disk, an I/O error): the records are refused at once
// instead of queueing behind syncs that fail. The log probes the disk
// every FailingProbe and takes records again once a write succeeds.
var ErrFailing = errors.New("wal: log cannot write to disk")

// FailingProbe is how often a failing log tries the disk again, and
// failingLogEvery how often it says again that it is failing.
const (
	FailingProbe    = time.Second
	failingLogEvery = 10 * time.Second
	probeFile       = "probe"
	probeBytes      = 64 << 10
)

// ErrClosed is returned by operations on a closed log.
var ErrClosed = errors.New("wal: log is closed")

// MaxRecordBytes is the largest record the log accepts.
const MaxRecordBytes = 16 << 20

const (
	headerLen      = 8 // length u32 + crc32c u32
	segSuffix      = ".wal"
	checkpointName = "checkpoint"
	maxGroupLen    = 8 << 20 // bytes gathered into one sync at most
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Options configure a log.
type Options struct {
	// SegmentBytes is the size at which a segment is closed and a new one begun.
	SegmentBytes int64
	// MaxBytes bounds the bytes held in segments not yet consumed.
	MaxBytes int64
	// NoSync skips fsync. Only for benchmarks of the layers above.
	NoSync bool
	// SyncInterval, when positive, spaces syncs at least this far apart: appends arriving sooner wait and share the next fsync. Append
	// still returns only once its records are fsynced, so an acknowledged
	// record is still on disk; what it trades is latency for fewer fsyncs
	// (an SD card wears with each).
	SyncInterval time.Duration
	// Consumers names every consumer of the log (default: just "store").
	// Their checkpoints protect segments from the moment the log opens;
	// checkpoints of consumers no longer named are removed, so a consumer
	// that was turned off cannot pin the log.
	Consumers []string
}

type segment struct {
	first uint64 // offset of its first record
	path  string
	size  int64
}

// group is the appends that share one sync: one write and one fsync.
// Appenders add records to the open group; the syncer takes it whole,
// writes it and closes done, which completes the Commit of every append of
// the group.
type group struct {
	recs  [][]byte
	bytes int
	done  chan struct{} // closed once synced or failed
	first uint64        // offset of recs[0], once synced
	err   error         // set before done is closed
}

// newGroup returns an empty group with room for n records.
func newGroup(n int) *group { return &group{recs: make([][]byte, 0, n), done: make(chan struct{})} }

// Log is a durable, bounded, append-only log. Append is safe for concurrent
// use; each named consumer reads it with one Reader at a time.
type Log struct {
	dir    string
	opts   Options
	logger *slog.Logger

	// The open group, guarded by qmu. kick (capacity 1) tells the syncer
	// it has records; room is closed when the syncer takes it, for
	// appenders waiting because it is at its bound.
	qmu  sync.Mutex
	open *group
	kick chan struct{}
	room chan struct{}

	stop    chan struct{}
	exited  chan struct{} // closed when the sync goroutine has returned
	wg      sync.WaitGroup
	closeMu sync.Once

	mu        sync.Mutex
	segs      []segment         // ordered by first; the last is active
	size      int64             // bytes in segs
	notify    chan struct{}     // closed and replaced when committed advances
	consumed  uint64            // records before this offset are consumed by every consumer
	consumers map[string]uint64 // each consumer's position

	committed atomic.Uint64 // next offset to be committed (records < committed are durable)
	syncs     atomic.Uint64 // syncs done
	closed    atomic.Bool

	// failing is set when a sync fails and cleared when a sync or a
	// probe of the disk succeeds; failMu guards failErr and failSince.
	failing   atomic.Bool
	failed    atomic.Uint64 // syncs (and probes) that failed since Open
	failMu    sync.Mutex
	failErr   error
	failSince time.Time

	// owned by the sync goroutine
	f           *os.File // nil after a failed rotation
	bw          *bufio.Writer
	next        uint64
	lastFailLog time.Time
}

// Open opens or creates the log in dir, recovering from a torn tail left by a
// crash. It starts the sync goroutine; Close stops it.
func Open(dir string, opts Options, logger *slog.Logger) (*Log, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 1 << 30
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 64 << 20
	}
	opts.SegmentBytes = max(min(opts.SegmentBytes, opts.MaxBytes/4), 4096)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("wal: create dir: %w", err)
	}
	l := &Log{dir: dir, opts: opts, logger: logger, open: newGroup(64), kick: make(chan struct{}, 1), room: make(chan struct{}),
		stop: make(chan struct{}), exited: make(chan struct{}), notify: make(chan struct{}),
		consumers: map[string]uint64{}}
	if err := l.recover(); err != nil {
		return nil, err
	}
	l.wg.Go(func() {
		defer close(l.exited)
		l.syncLoop()
	})
	return l, nil
}

// recover scans the segments, truncates a torn tail and opens the active one.
func (l *Log) recover() error {
	names, err := filepath.Glob(filepath.Join(l.dir, "*"+segSuffix))
	if err != nil {
		return fmt.Errorf("wal: list segments: %w", err)
	}
	for _, p := range names {
		first, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(p), segSuffix), 10, 64)
		if err != nil || first == 0 {
			return fmt.Errorf("wal: unexpected file %s in log dir", p)
		}
		l.segs = append(l.segs, segment{first: first, path: p})
	}
	slices.SortFunc(l.segs, func(a, b segment) int { return cmp.Compare(a.first, b.first) })

	os.Remove(filepath.Join(l.dir, probeFile)) // left by a crash during a probe
	l.next = 1
	if len(l.segs) > 0 {
		l.next = l.segs[0].first
	}
	for i := range l.segs {
		s := &l.segs[i]
		if s.first != l.next {
			l.logger.Warn("wal: gap between segments, records lost from disk", "expected", l.next, "segment_first", s.first)
			l.next = s.first
		}
		n, good, err := scanSegment(s.path)
		if err != nil {
			return err
		}
		if st, err := os.Stat(s.path); err == nil && st.Size() != good {
			l.logger.Warn("wal: truncating torn or corrupt tail", "segment", s.path, "valid_bytes", good, "file_bytes", st.Size())
			if err := os.Truncate(s.path, good); err != nil {
				return fmt.Errorf("wal: truncate torn tail: %w", err)
			}
		}
		s.size = good
		l.size += good
		l.next += n
	}
	l.loadConsumers()
	l.committed.Store(l.next)
	if len(l.segs) == 0 {
		return l.newSegment()
	}
	f, err := os.OpenFile(l.segs[len(l.segs)-1].path, os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("wal: open active segment: %w", err)
	}
	l.f, l.bw = f, bufio.NewWriterSize(f, 256<<10)
	return nil
}

// scanSegment counts the valid records of a segment and the bytes they span.
func scanSegment(path string) (n uint64, good int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("wal: open segment: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 256<<10)
	var buf []byte
	for {
		var rec []byte
		rec, buf, err = readRecord(br, buf)
		if err != nil {
			return n, good, nil // io.EOF, a torn or a corrupt record all end the segment
		}
		n++
		good += int64(headerLen + len(rec))
	}
}

// readRecord reads one framed record, reusing buf.
func readRecord(br *bufio.Reader, buf []byte) (rec, nbuf []byte, err error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return nil, buf, err
	}
	n := binary.LittleEndian.Uint32(h[0:4])
	if n > MaxRecordBytes {
		return nil, buf, errors.New("wal: corrupt record length")
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(br, buf); err != nil {
		return nil, buf, err
	}
	if crc32.Checksum(buf, crcTable) != binary.LittleEndian.Uint32(h[4:8]) {
		return nil, buf, errors.New("wal: record checksum mismatch")
	}
	return buf, buf, nil
}

func (l *Log) newSegment() error {
	p := filepath.Join(l.dir, fmt.Sprintf("%020d%s", l.next, segSuffix))
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("wal: create segment: %w", err)
	}
	if !l.opts.NoSync {
		if err := syncDir(l.dir); err != nil {
			f.Close()
			return err
		}
	}
	l.mu.Lock()
	l.segs = append(l.segs, segment{first: l.next, path: p})
	l.mu.Unlock()
	l.f, l.bw = f, bufio.NewWriterSize(f, 256<<10)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("wal: open dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("wal: sync dir: %w", err)
	}
	return nil
}

// Append writes the records and returns once they are durable, with the offset
// of the last one. It fails fast with ErrFull when the log is at its bound.
// Safe for concurrent use; concurrent appends share one fsync.
func (l *Log) Append(ctx context.Context, recs ...[]byte) (uint64, error) {
	c, err := l.Submit(ctx, recs...)
	if err != nil {
		return 0, err
	}
	return c.Wait()
}

// Commit is an append on its way to disk (Submit): Wait tells when it is
// durable. Once submitted, an append completes even if the caller stops
// waiting. The zero Commit is complete (for callers' fakes). Commits of
// appends that share a sync are Same.
type Commit struct {
	g      *group
	i      int // of the append's last record in g.recs
	exited <-chan struct{}
}

// Wait returns once the append is durable, with the offset of its last
// record, or with the error that kept it from disk.
func (c Commit) Wait() (uint64, error) {
	if c.g == nil {
		return 0, nil
	}
	select {
	case <-c.g.done:
	case <-c.exited:
		select {
		case <-c.g.done:
		default:
			return 0, ErrClosed
		}
	}
	return c.g.first + uint64(c.i), c.g.err
}

// TryWait is Wait that does not block: done is false while the append is
// not yet durable, else err is Wait's.
func (c Commit) TryWait() (done bool, err error) {
	if c.g == nil {
		return true, nil
	}
	select {
	case <-c.g.done:
		return true, c.g.err
	default:
		return false, nil
	}
}

// Same reports whether c and d share one sync: they complete together.
func (c Commit) Same(d Commit) bool { return c.g == d.g }

// NewCommit returns a Commit that is complete once complete is called,
// with err as its outcome: for writes made durable elsewhere (devices'
// state database transactions, which the broker holds acknowledgements
// for as it does for the log's) and for tests of code that waits on
// commits. Call complete exactly once.
func NewCommit() (c Commit, complete func(err error)) {
	g := newGroup(0)
	return Commit{g: g, exited: make(chan struct{})}, func(err error) { g.err = err; close(g.done) }
}

// Submit hands the records to the next sync and returns without
// waiting for it: the caller does other work (the broker reads the client's
// next publish) and waits on the Commit when it must know. The caller must
// not modify the records afterwards. Like Append it fails fast with ErrFull
// or ErrClosed, and it waits only while the next sync is at its bound.
func (l *Log) Submit(ctx context.Context, recs ...[]byte) (Commit, error) {
	if err := l.admit(recs); err != nil {
		return Commit{}, err
	}
	g, i, err := l.enqueue(ctx, recs)
	if err != nil {
		return Commit{}, err
	}
	return Commit{g: g, i: i, exited: l.exited}, nil
}

// enqueue adds recs to the open group, waiting while it is at its bound.
// It returns the group and the index of the last record.
func (l *Log) enqueue(ctx context.Context, recs [][]byte) (*group, int, error) {
	n := 0
	for _, r := range recs {
		n += len(r)
	}
	l.qmu.Lock()
	for l.open.bytes > 0 && l.open.bytes+n > maxGroupLen {
		room := l.room
		l.qmu.Unlock()
		select {
		case <-room:
		case <-l.stop:
			return nil, 0, ErrClosed
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		l.qmu.Lock()
	}
	if l.closed.Load() {
		l.qmu.Unlock()
		return nil, 0, ErrClosed
	}
	g := l.open
	g.recs = append(g.recs, recs...)
	g.bytes += n
	i := len(g.recs) - 1
	l.qmu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default: // already kicked
	}
	return g, i, nil
}

// admit refuses records the log cannot take now.
func (l *Log) admit(recs [][]byte) error {
	if l.closed.Load() {
		return ErrClosed
	}
	if l.Full() {
		return ErrFull
	}
	if l.failing.Load() {
		return ErrFailing
	}
	for _, r := range recs {
		if len(r) > MaxRecordBytes {
			return fmt.Errorf("wal: record of %d bytes exceeds %d", len(r), MaxRecordBytes)
		}
	}
	return nil
}

// Enqueue hands records to the next sync without waiting for it:
// for data whose sender expects no acknowledgement (MQTT QoS 0), so that it
// does not pay the fsync's latency. The records are durable only once that
// sync is done; a crash before it loses them. The caller must not modify
// them afterwards. Like Append it fails fast with ErrFull or ErrClosed, and
// it waits only while the next sync is at its bound.
func (l *Log) Enqueue(ctx context.Context, recs ...[]byte) error {
	if err := l.admit(recs); err != nil {
		return err
	}
	_, _, err := l.enqueue(ctx, recs)
	return err
}

// Full reports whether the unconsumed log has reached its byte bound.
func (l *Log) Full() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size >= l.opts.MaxBytes
}

// Stats describe the log for metrics.
type Stats struct {
	Bytes     int64  // bytes in segments on disk
	MaxBytes  int64  // the bound
	Committed uint64 // records before this offset are committed (durable)
	Consumed  uint64 // records before this offset are consumed
	Segments  int
	Syncs     uint64 // syncs (one write and fsync each) since Open
	// Failed counts the syncs and disk probes that failed since Open.
	Failed uint64
}

// Stats returns the current size and positions. Safe for concurrent use.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Bytes: l.size, MaxBytes: l.opts.MaxBytes, Committed: l.committed.Load(),
		Consumed: l.consumed, Segments: len(l.segs), Syncs: l.syncs.Load(), Failed: l.failed.Load()}
}

// Failing returns, while the log cannot sync, the error of the last
// failed attempt and when the failure began; err is nil while syncs
// work. Safe for concurrent use.
func (l *Log) Failing() (since time.Time, err error) {
	if !l.failing.Load() {
		return time.Time{}, nil
	}
	l.failMu.Lock()
	defer l.failMu.Unlock()
	return l.failSince, l.failErr
}

// syncLoop is the sync goroutine: it syncs the open group whenever it has
// records, at most every SyncInterval, and probes the disk while failing.
func (l *Log) syncLoop() {
	var last time.Time // of the previous sync
	for {
		var probe <-chan time.Time // only while failing: an idle log sleeps
		var t *time.Timer
		if l.failing.Load() {
			t = time.NewTimer(FailingProbe)
			probe = t.C
		}
		var probed, stopped bool
		select {
		case <-l.kick:
		case <-probe:
			probed = true
		case <-l.stop:
			stopped = true
		}
		if t != nil {
			t.Stop()
		}
		if stopped {
			l.syncOpen() // what was handed to the log before it closed
			return
		}
		if probed {
			l.probe()
			continue
		}
		if wait := l.opts.SyncInterval - time.Since(last); l.opts.SyncInterval > 0 && wait > 0 {
			// Let more appends join this sync (an SD card wears with each
			// fsync); on stop, sync at once.
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-l.stop:
			}
			t.Stop()
		}
		l.syncOpen()
		last = time.Now()
	}
}

// syncOpen takes the open group, if it has records, and syncs it.
func (l *Log) syncOpen() {
	l.qmu.Lock()
	g := l.open
	if len(g.recs) == 0 {
		l.qmu.Unlock()
		return
	}
	l.open = newGroup(len(g.recs)) // the next is likely as big
	close(l.room)
	l.room = make(chan struct{})
	l.qmu.Unlock()
	l.syncGroup(g)
}

// syncGroup writes a group of appends, fsyncs once and completes their
// Commits.
func (l *Log) syncGroup(g *group) {
	var hdr [headerLen]byte
	var written int64
	err := func() error {
		if l.f == nil { // the last rotation failed: try again
			if err := l.newSegment(); err != nil {
				return err
			}
		}
		for _, rec := range g.recs {
			binary.LittleEndian.PutUint32(hdr[0:4], uint32(len(rec)))
			binary.LittleEndian.PutUint32(hdr[4:8], crc32.Checksum(rec, crcTable))
			if _, err := l.bw.Write(hdr[:]); err != nil {
				return err
			}
			if _, err := l.bw.Write(rec); err != nil {
				return err
			}
			written += int64(headerLen + len(rec))
		}
		if err := l.bw.Flush(); err != nil {
			return err
		}
		if l.opts.NoSync {
			return nil
		}
		return l.f.Sync()
	}()
	if err != nil {
		// The tail of the active segment is now unknown: cut it back to the
		// last synced size so readers and recovery never see it.
		l.failed.Add(1)
		l.setFailing(err)
		if l.f != nil {
			l.mu.Lock()
			good := l.segs[len(l.segs)-1].size
			l.mu.Unlock()
			l.bw.Reset(l.f)
			if terr := l.f.Truncate(good); terr != nil {
				l.logger.Error("wal: truncate after failed sync", "err", terr)
			}
		}
		g.err = fmt.Errorf("wal: sync: %w", err)
		close(g.done)
		return
	}
	l.setWorking()
	// Publish the new end before waking the appenders, so that a record is
	// readable by the time its Append returns.
	g.first = l.next
	l.next += uint64(len(g.recs))
	l.mu.Lock()
	l.segs[len(l.segs)-1].size += written
	l.size += written
	l.committed.Store(l.next)
	close(l.notify)
	l.notify = make(chan struct{})
	rotate := l.segs[len(l.segs)-1].size >= l.opts.SegmentBytes
	l.mu.Unlock()
	l.syncs.Add(1)
	g.recs = nil // the records are on disk: let them go
	close(g.done)
	if rotate {
		if err := l.f.Close(); err != nil {
			l.logger.Error("wal: close segment", "err", err)
		}
		l.f, l.bw = nil, nil // the next sync opens the new segment if this fails
		if err := l.newSegment(); err != nil {
			l.logger.Error("wal: rotate segment, trying again with the next sync", "err", err)
		}
	}
}

// setFailing records a failed sync or probe. The first failure is
// logged at once, then one line every failingLogEvery while it lasts.
// Called by the syncer.
func (l *Log) setFailing(err error) {
	now := time.Now()
	l.failMu.Lock()
	first := !l.failing.Load()
	if first {
		l.failSince = now
	}
	l.failErr = err
	since := l.failSince
	l.failMu.Unlock()
	l.failing.Store(true)
	switch {
	case first:
		l.lastFailLog = now
		l.logger.Error("wal: sync failed; refusing new records until the disk takes writes again", "err", err)
	case now.Sub(l.lastFailLog) >= failingLogEvery:
		l.lastFailLog = now
		l.logger.Error("wal: still cannot sync; refusing new records", "err", err,
			"failing_for", now.Sub(since).Round(time.Second), "failed_syncs", l.failed.Load())
	}
}

// setWorking clears the failing state after a sync or probe succeeded.
// Called by the syncer.
func (l *Log) setWorking() {
	if !l.failing.Load() {
		return
	}
	l.failMu.Lock()
	since := l.failSince
	l.failErr, l.failSince = nil, time.Time{}
	l.failing.Store(false)
	l.failMu.Unlock()
	l.logger.Info("wal: syncs work again; taking new records", "failed_for", time.Since(since).Round(time.Millisecond),
		"failed_syncs", l.failed.Load())
}

// probe tries the disk while the log is failing: it writes and fsyncs
// probeBytes to a file of its own beside the segments (never into a
// segment, where a crash could leave it for recovery to read), removes it,
// and then syncs what is queued. A probe that fails keeps the log
// failing. Called by the syncer.
func (l *Log) probe() {
	err := func() error {
		if l.f == nil {
			if err := l.newSegment(); err != nil {
				return err
			}
		}
		p := filepath.Join(l.dir, probeFile)
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
		if err != nil {
			return err
		}
		defer os.Remove(p)
		_, err = f.Write(make([]byte, probeBytes))
		if err == nil && !l.opts.NoSync {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}()
	if err != nil {
		l.failed.Add(1)
		l.setFailing(err)
		return
	}
	l.setWorking()
	l.syncOpen()
}

// changed returns a channel closed when more records are committed.
func (l *Log) changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.notify
}

// Consumed returns the offset before which every consumer has consumed the
// records.
func (l *Log) Consumed() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.consumed
}

// Position returns a consumer's checkpoint: the offset of the first record
// it has not consumed.
func (l *Log) Position(name string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.consumers[name]
}

// DefaultConsumer is the consumer of NewReader and Checkpoint: the store
// writer.
const DefaultConsumer = "store"

// loadConsumers reads the checkpoint of every named consumer (a new one
// starts at the oldest record on disk) and removes stale checkpoints.
func (l *Log) loadConsumers() {
	names := l.opts.Consumers
	if len(names) == 0 {
		names = []string{DefaultConsumer}
	}
	first := l.next
	if len(l.segs) > 0 {
		first = l.segs[0].first
	}
	for _, name := range names {
		c := l.readCheckpoint(name)
		if c < first || c > l.next {
			c = first
		}
		l.consumers[name] = c
	}
	l.consumed = first
	l.recompute()
	l.dropConsumed()
	files, _ := filepath.Glob(filepath.Join(l.dir, checkpointName+"*"))
	for _, f := range files {
		known := false
		for _, name := range names {
			known = known || filepath.Base(f) == checkpointFile(name)
		}
		if !known {
			l.logger.Info("wal: removing the checkpoint of a consumer no longer configured", "file", f)
			os.Remove(f)
		}
	}
}

// register returns a configured consumer's position.
func (l *Log) register(name string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.consumers[name]
	if !ok {
		panic("wal: consumer " + name + " is not in Options.Consumers")
	}
	return c
}

// recompute sets consumed to the slowest consumer's position. Called with
// mu held.
func (l *Log) recompute() {
	first := true
	for _, c := range l.consumers {
		if first || c < l.consumed {
			l.consumed, first = c, false
		}
	}
}

// Checkpoint records that the default consumer has consumed every record
// before offset; see Reader.Checkpoint.
func (l *Log) Checkpoint(offset uint64) error { return l.checkpoint(DefaultConsumer, offset) }

// checkpoint advances a consumer, deletes segments every consumer is done
// with and persists the position. A lost checkpoint write only causes
// records to be read again.
func (l *Log) checkpoint(name string, offset uint64) error {
	l.mu.Lock()
	cur, ok := l.consumers[name]
	if name == "" || !ok || offset <= cur {
		l.mu.Unlock()
		return nil
	}
	c := min(offset, l.committed.Load())
	l.consumers[name] = c
	l.recompute()
	l.dropConsumed()
	l.mu.Unlock()
	return l.writeCheckpoint(name, c)
}

// dropConsumed deletes segments below consumed except the active one. It is
// called with mu held (or before the log is shared).
func (l *Log) dropConsumed() {
	for len(l.segs) > 1 && l.segs[1].first <= l.consumed {
		s := l.segs[0]
		if err := os.Remove(s.path); err != nil {
			l.logger.Error("wal: remove consumed segment", "segment", s.path, "err", err)
			return
		}
		l.size -= s.size
		l.segs = l.segs[1:]
	}
}

func checkpointFile(name string) string {
	if name == DefaultConsumer {
		return checkpointName
	}
	return checkpointName + "." + name
}

func (l *Log) writeCheckpoint(name string, c uint64) error {
	var b [12]byte
	binary.LittleEndian.PutUint64(b[0:8], c)
	binary.LittleEndian.PutUint32(b[8:12], crc32.Checksum(b[0:8], crcTable))
	f, err := os.OpenFile(filepath.Join(l.dir, checkpointFile(name)), os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("wal: open checkpoint: %w", err)
	}
	if _, err := f.WriteAt(b[:], 0); err != nil {
		f.Close()
		return fmt.Errorf("wal: write checkpoint: %w", err)
	}
	return f.Close()
}

func (l *Log) readCheckpoint(name string) uint64 {
	b, err := os.ReadFile(filepath.Join(l.dir, checkpointFile(name)))
	if err != nil || len(b) < 12 || crc32.Checksum(b[0:8], crcTable) != binary.LittleEndian.Uint32(b[8:12]) {
		return 0
	}
	return binary.LittleEndian.Uint64(b[0:8])
}

// Close syncs what was handed to the log, stops the sync goroutine and
// closes the active segment. Appends still waiting then fail with
// ErrClosed. Safe to call twice.
func (l *Log) Close() error {
	var err error
	l.closeMu.Do(func() {
		l.qmu.Lock() // no append joins the open group after this
		l.closed.Store(true)
		l.qmu.Unlock()
		close(l.stop)
		l.wg.Wait()
		if l.f != nil {
			err = l.f.Close()
		}
	})
	return err
}

package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/telehub/telehub/devices/topics"
)

// Device is the MQTT identity of one simulated device: username = ID,
// password = Token (empty for brokers that admit anyone).
type Device struct {
	ID    string
	Token string
}

// FleetConfig says how a fleet connects.
type FleetConfig struct {
	// Addr is the broker's host:port.
	Addr string
	// Devices are the identities to connect, one connection each.
	Devices []Device
	// SourceIPs spreads connections over 127.0.0.2 ... 127.0.0.(1+SourceIPs)
	// so that each source address has its own ephemeral ports; 0 leaves the
	// source to the kernel.
	SourceIPs int
	// KeepAlive is announced in CONNECT; the fleet pings each client twice
	// per period. 0 turns keep-alive off.
	KeepAlive time.Duration
	// Concurrency bounds the connects in flight (default 64).
	Concurrency int
	// Timeout bounds one connect (default 10 s).
	Timeout time.Duration
}

// SourceIP returns the source address of connection i, or nil.
func SourceIP(i, n int) net.IP {
	if n <= 0 {
		return nil
	}
	return net.IPv4(127, 0, byte(i%n/254), byte(2+i%n%254))
}

// ConnectResult says how connecting a fleet went.
type ConnectResult struct {
	Connected int           `json:"connected"`
	Failed    int           `json:"failed"`
	FirstErr  string        `json:"first_error,omitempty"`
	Elapsed   time.Duration `json:"elapsed"`
}

// Fleet is a set of connected devices that publish at a paced total rate.
// Its methods are not for concurrent use, except Dropped.
type Fleet struct {
	clients []*fleetClient
	run     atomic.Pointer[runStats]
	dropped atomic.Int64
	readers sync.WaitGroup
	cancel  context.CancelFunc
	pinger  sync.WaitGroup
}

type fleetClient struct {
	*Client
	fleet *Fleet
	topic string

	mu       sync.Mutex
	inflight map[uint16]int64 // packet id -> send time, Unix ns

	// owned by the publishing worker
	lastTS int64 // ms, so that a device never sends two readings with one timestamp
	seq    uint64
}

var _ Handler = (*fleetClient)(nil)

// Puback records the acknowledgement's latency in the current run.
func (c *fleetClient) Puback(id uint16) {
	c.mu.Lock()
	sent, ok := c.inflight[id]
	delete(c.inflight, id)
	c.mu.Unlock()
	if !ok {
		return // acknowledged after its run ended
	}
	r := c.fleet.run.Load()
	r.acked.Add(1)
	r.ack.Record(time.Duration(time.Now().UnixNano() - sent))
}

// Message ignores messages: devices of a fleet subscribe to nothing.
func (c *fleetClient) Message(_, _ []byte) {}

// Connect connects every device of cfg, Concurrency at a time, and returns
// the fleet of those that connected with how it went. It fails only when
// none connected.
func Connect(ctx context.Context, cfg FleetConfig) (*Fleet, ConnectResult, error) {
	conc := cfg.Concurrency
	if conc <= 0 {
		conc = 64
	}
	start := time.Now()
	clients := make([]*fleetClient, len(cfg.Devices))
	errs := make([]error, len(cfg.Devices))
	f := &Fleet{}
	f.run.Store(&runStats{})
	var wg sync.WaitGroup
	sem := make(chan struct{}, conc)
	for i, d := range cfg.Devices {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			errs[i] = ctx.Err()
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			dl := Dialer{Addr: cfg.Addr, LocalIP: SourceIP(i, cfg.SourceIPs), KeepAlive: cfg.KeepAlive, Timeout: cfg.Timeout}
			c, err := dl.Dial(ctx, d.ID, d.ID, d.Token)
			if err != nil {
				errs[i] = fmt.Errorf("device %s: %w", d.ID, err)
				return
			}
			clients[i] = &fleetClient{Client: c, fleet: f, topic: topics.Telemetry(d.ID), inflight: map[uint16]int64{}}
		})
	}
	wg.Wait()
	res := ConnectResult{Elapsed: time.Since(start)}
	var firstErr error
	for i, c := range clients {
		if c == nil {
			res.Failed++
			if firstErr == nil && errs[i] != nil {
				firstErr = errs[i]
				res.FirstErr = firstErr.Error()
			}
			continue
		}
		res.Connected++
		f.clients = append(f.clients, c)
		f.readers.Go(func() {
			if err := c.ReadLoop(c); err != nil {
				f.dropped.Add(1)
			}
		})
	}
	pctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	if cfg.KeepAlive > 0 {
		f.pinger.Go(func() { f.ping(pctx, cfg.KeepAlive/2) })
	}
	if res.Connected == 0 && len(cfg.Devices) > 0 {
		f.Close()
		return nil, res, fmt.Errorf("load: no device connected: %w", firstErr)
	}
	return f, res, nil
}

// ping sends every client a PINGREQ once per period, spread over it.
func (f *Fleet) ping(ctx context.Context, period time.Duration) {
	const slots = 20
	t := time.NewTicker(period / slots)
	defer t.Stop()
	for slot := 0; ; slot = (slot + 1) % slots {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for i := slot; i < len(f.clients); i += slots {
			f.clients[i].Ping()
		}
	}
}

// Size returns how many devices are connected or were at Connect.
func (f *Fleet) Size() int { return len(f.clients) }

// Dropped returns how many connections ended other than by Close.
func (f *Fleet) Dropped() int64 { return f.dropped.Load() }

// Close disconnects every device and waits for the readers. Safe to call
// twice.
func (f *Fleet) Close() {
	if f.cancel != nil {
		f.cancel()
	}
	f.pinger.Wait()
	for _, c := range f.clients {
		c.Disconnect()
	}
	f.readers.Wait()
}

// PublishConfig is one paced run of a fleet.
type PublishConfig struct {
	// Rate is the total offered readings per second over the fleet.
	Rate float64
	// Duration is how long readings are offered.
	Duration time.Duration
	// QoS is 0 or 1.
	QoS byte
	// Workers are the goroutines that send, each for its share of devices
	// and rate (default 4).
	Workers int
	// Drain bounds the wait for outstanding PUBACKs after the last send
	// (default 10 s).
	Drain time.Duration
	// AfterSend, when set, is called once the last reading is sent, before
	// the wait for PUBACKs (to measure what sending cost).
	AfterSend func()
}

// PublishResult is what a run sent and what came back.
type PublishResult struct {
	Rate     float64       `json:"rate"`
	QoS      byte          `json:"qos"`
	Duration time.Duration `json:"duration"`
	// Elapsed is how long sending took; longer than Duration when the
	// senders fell behind.
	Elapsed time.Duration `json:"elapsed"`
	Sent    int64         `json:"sent"`
	// Errors are publishes whose write failed.
	Errors int64 `json:"errors"`
	// Acked and Unacked count QoS 1 publishes acknowledged, and those still
	// unacknowledged when the drain ended.
	Acked   int64 `json:"acked"`
	Unacked int64 `json:"unacked"`
	// Ack is the time from send to PUBACK (QoS 1).
	Ack Summary `json:"ack"`
	// Late is how far behind its schedule each send was.
	Late Summary `json:"late"`
	// FirstTS and LastTS bound the readings' timestamps, in Unix ms.
	FirstTS int64 `json:"first_ts"`
	LastTS  int64 `json:"last_ts"`
	// End is when the last reading was sent.
	End time.Time `json:"end"`
}

// SendRate is the achieved send rate.
func (r PublishResult) SendRate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Elapsed.Seconds()
}

type runStats struct {
	acked atomic.Int64
	ack   Histogram
}

// Publish offers Rate readings per second for Duration, open-loop, over
// every device of the fleet in turn, then waits for outstanding PUBACKs.
func (f *Fleet) Publish(ctx context.Context, cfg PublishConfig) (PublishResult, error) {
	if cfg.Rate <= 0 || cfg.Duration <= 0 || cfg.QoS > 1 {
		return PublishResult{}, errors.New("load: publish needs a positive rate and duration and QoS 0 or 1")
	}
	if len(f.clients) == 0 {
		return PublishResult{}, errors.New("load: the fleet has no device")
	}
	workers := min(max(cfg.Workers, 1), len(f.clients))
	if cfg.Workers <= 0 {
		workers = min(4, len(f.clients))
	}
	drain := cfg.Drain
	if drain <= 0 {
		drain = 10 * time.Second
	}
	rs := &runStats{}
	f.run.Store(rs)
	// Writes do not watch ctx: when it ends, a past write deadline unblocks
	// any send stuck on a broker that stopped reading.
	defer context.AfterFunc(ctx, func() {
		for _, c := range f.clients {
			c.conn.SetWriteDeadline(time.Now())
		}
	})()
	total := int64(cfg.Rate * cfg.Duration.Seconds())
	var late Histogram
	var sent, failed atomic.Int64
	var firstTS, lastTS atomic.Int64
	firstTS.Store(1<<63 - 1)
	start := time.Now().Add(10 * time.Millisecond)
	var wg sync.WaitGroup
	for w := range workers {
		mine := f.clients[w:]
		n := (len(mine) + workers - 1) / workers
		wtotal := total / int64(workers)
		if int64(w) < total%int64(workers) {
			wtotal++
		}
		wg.Go(func() {
			buf := make([]byte, 0, 256)
			lo, hi := int64(1<<63-1), int64(0)
			Pace(ctx, Schedule{Start: start, Rate: cfg.Rate / float64(workers), Total: wtotal}, func(k int64, lateBy time.Duration) {
				late.Record(lateBy)
				c := mine[int(k%int64(n))*workers]
				now := time.Now()
				ts := max(now.UnixMilli(), c.lastTS+1)
				c.lastTS = ts
				c.seq++
				lo, hi = min(lo, ts), max(hi, ts)
				buf = AppendReading(buf[:0], ts, c.seq, now)
				var track func(uint16)
				if cfg.QoS > 0 {
					track = func(id uint16) {
						c.mu.Lock()
						c.inflight[id] = now.UnixNano()
						c.mu.Unlock()
					}
				}
				if _, err := c.Publish(c.topic, cfg.QoS, buf, track); err != nil {
					failed.Add(1)
					return
				}
				sent.Add(1)
			})
			for {
				m := firstTS.Load()
				if lo >= m || firstTS.CompareAndSwap(m, lo) {
					break
				}
			}
			for {
				m := lastTS.Load()
				if hi <= m || lastTS.CompareAndSwap(m, hi) {
					break
				}
			}
		})
	}
	wg.Wait()
	end := time.Now()
	if cfg.AfterSend != nil {
		cfg.AfterSend()
	}
	res := PublishResult{Rate: cfg.Rate, QoS: cfg.QoS, Duration: cfg.Duration, Elapsed: end.Sub(start), End: end,
		Sent: sent.Load(), Errors: failed.Load(), Late: late.Summary(), FirstTS: firstTS.Load(), LastTS: lastTS.Load()}
	if res.LastTS == 0 {
		res.FirstTS = 0
	}
	if cfg.QoS > 0 {
		deadline := time.Now().Add(drain)
		for rs.acked.Load() < res.Sent && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		for _, c := range f.clients {
			c.mu.Lock()
			res.Unacked += int64(len(c.inflight))
			clear(c.inflight)
			c.mu.Unlock()
		}
		res.Acked = rs.acked.Load()
		res.Ack = rs.ack.Summary()
	}
	f.run.Store(&runStats{})
	return res, ctx.Err()
}

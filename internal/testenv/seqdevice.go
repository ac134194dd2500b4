package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// SeqDevice is a device on a real paho MQTT 3.1.1 client (persistent
// session, reconnecting at most 100 ms apart) that publishes numbered QoS 1
// readings {"ts": Base+seq, "seq": seq} for seq = 0, 1, 2, … and knows
// exactly which ones the hub acknowledged: paho keeps every QoS 1 publish
// in its store until the PUBACK arrives and then deletes it, and the
// device's store records that deletion. A paho token is no such record: on a
// reconnect paho completes the tokens of the publishes it is about to resend,
// before any PUBACK, and fails the token of a publish whose write broke
// although it keeps and resends the publish. Like any MQTT 3.1.1 client,
// paho resends an unacknowledged publish only when it reconnects.
type SeqDevice struct {
	// ID is the device ID; it publishes on devices/{ID}/telemetry.
	ID string
	// Base is the Unix millisecond timestamp of reading 0.
	Base int64

	client paho.Client
	store  *ackStore
	sent   atomic.Int64
	cancel context.CancelFunc
	done   chan struct{}
}

// SeqDeviceConfig configures a SeqDevice.
type SeqDeviceConfig struct {
	// Broker is the hub's MQTT address, tcp://host:port.
	Broker string
	// ID and Token are the device's credentials.
	ID, Token string
	// Every is the time between two readings.
	Every time.Duration
	// PadBytes adds a string field "pad" of that many bytes to each
	// reading, to fill a log faster.
	PadBytes int
}

// StartSeqDevice connects a device and publishes a reading every
// cfg.Every until StopPublishing. The client is disconnected when the test
// ends.
func StartSeqDevice(t testing.TB, cfg SeqDeviceConfig) *SeqDevice {
	t.Helper()
	d := &SeqDevice{ID: cfg.ID, Base: time.Now().Add(-time.Hour).UnixMilli(), done: make(chan struct{}),
		store: &ackStore{MemoryStore: paho.NewMemoryStore(), acked: map[int64]bool{}}}
	opts := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(cfg.ID).SetUsername(cfg.ID).SetPassword(cfg.Token).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).SetMaxReconnectInterval(100 * time.Millisecond).
		SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second).SetStore(d.store)
	d.client = paho.NewClient(opts)
	if tok := d.client.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("device %s: connect: %v", cfg.ID, tok.Error())
	}
	pad := ""
	if cfg.PadBytes > 0 {
		pad = fmt.Sprintf(`,"pad":%q`, strings.Repeat("x", cfg.PadBytes))
	}
	topic := "devices/" + cfg.ID + "/telemetry"
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { // ends with StopPublishing, at the latest in the test's cleanup
		defer close(d.done)
		tick := time.NewTicker(cfg.Every)
		defer tick.Stop()
		for seq := int64(0); ; seq++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			d.client.Publish(topic, 1, false, fmt.Sprintf(`{"ts":%d,"seq":%d%s}`, d.Base+seq, seq, pad))
			d.sent.Add(1)
		}
	}()
	t.Cleanup(func() {
		d.StopPublishing()
		d.client.Disconnect(0)
	})
	return d
}

// StopPublishing ends the publishing loop; readings already published are
// still resent until acknowledged. Safe to call twice.
func (d *SeqDevice) StopPublishing() {
	d.cancel()
	<-d.done
}

// Sent returns the number of readings published so far.
func (d *SeqDevice) Sent() int { return int(d.sent.Load()) }

// Acked returns the number of readings the hub acknowledged.
func (d *SeqDevice) Acked() int {
	d.store.mu.Lock()
	defer d.store.mu.Unlock()
	return len(d.store.acked)
}

// AckedSeqs returns the acknowledged sequence numbers, in order.
func (d *SeqDevice) AckedSeqs() []int64 {
	d.store.mu.Lock()
	defer d.store.mu.Unlock()
	out := make([]int64, 0, len(d.store.acked))
	for seq := range d.store.acked {
		out = append(out, seq)
	}
	slices.Sort(out)
	return out
}

// WaitAllAcked stops publishing and waits until every reading published has
// been acknowledged.
func (d *SeqDevice) WaitAllAcked(t testing.TB, timeout time.Duration) {
	t.Helper()
	d.StopPublishing()
	for deadline := time.Now().Add(timeout); d.Acked() < d.Sent() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if acked := d.AckedSeqs(); len(acked) < d.Sent() {
		var missing []int64
		for seq, i := int64(0), 0; seq < int64(d.Sent()) && len(missing) < 20; seq++ {
			if i < len(acked) && acked[i] == seq {
				i++
				continue
			}
			missing = append(missing, seq)
		}
		t.Fatalf("device %s: %d of %d readings acknowledged within %v; unacknowledged seqs (up to 20): %v; %d still in the client's store",
			d.ID, len(acked), d.Sent(), timeout, missing, len(d.store.All()))
	}
}

// ackStore is paho's memory store, recording which publishes were
// acknowledged (paho deletes an outbound publish when its PUBACK arrives).
// Get returns a copy of a publish, because paho marks a publish it resends
// as a duplicate while the same packet may still be queued for writing.
type ackStore struct {
	*paho.MemoryStore

	mu    sync.Mutex
	acked map[int64]bool
}

var _ paho.Store = (*ackStore)(nil)

func (s *ackStore) Put(key string, m packets.ControlPacket) {
	if pub, ok := m.(*packets.PublishPacket); ok {
		cp := *pub
		m = &cp
	}
	s.MemoryStore.Put(key, m)
}

func (s *ackStore) Get(key string) packets.ControlPacket {
	p := s.MemoryStore.Get(key)
	if pub, ok := p.(*packets.PublishPacket); ok {
		cp := *pub
		return &cp
	}
	return p
}

func (s *ackStore) Del(key string) {
	if strings.HasPrefix(key, "o.") {
		if pub, ok := s.MemoryStore.Get(key).(*packets.PublishPacket); ok {
			var r struct{ Seq int64 }
			if json.Unmarshal(pub.Payload, &r) == nil {
				s.mu.Lock()
				s.acked[r.Seq] = true
				s.mu.Unlock()
			}
		}
	}
	s.MemoryStore.Del(key)
}

// RequireSeqs fails the test unless measurement holds exactly the readings
// the device had acknowledged: each seq once, at its timestamp Base+seq ms,
// and no other reading of the device. Call it after WaitAllAcked, once the
// store had time to receive them (it waits up to timeout for the count).
func (db Influx) RequireSeqs(t testing.TB, measurement string, d *SeqDevice, timeout time.Duration) {
	t.Helper()
	want := d.AckedSeqs()
	q := fmt.Sprintf(`SELECT seq FROM %q WHERE device_id = '%s' ORDER BY time`, measurement, d.ID)
	var rows [][]any
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		r, err := db.InfluxQL(q)
		if err != nil {
			t.Fatalf("query %s: %v", d.ID, err)
		}
		if rows = r.Rows(); len(rows) >= len(want) || time.Now().After(deadline) {
			break
		}
	}
	if len(rows) != len(want) {
		t.Fatalf("device %s: %d readings stored, %d acknowledged", d.ID, len(rows), len(want))
	}
	for i, row := range rows {
		// Nanosecond times pass through JSON as float64: exact to well
		// under a millisecond.
		ns, _ := row[0].(float64)
		seq, _ := row[1].(float64)
		if int64(seq) != want[i] || int64(math.Round(ns/1e6)) != d.Base+want[i] {
			t.Fatalf("device %s: stored reading %d is seq %v at %v ms, want seq %d at %d ms",
				d.ID, i, row[1], int64(math.Round(ns/1e6)), want[i], d.Base+want[i])
		}
	}
}

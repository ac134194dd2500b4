package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices/topics"
)

// Peer is the bare-broker peer of the benchmarks: mochi-mqtt with default
// options, every client allowed, and one in-process subscriber that counts
// the telemetry it sees. It is what Telehub would be without authentication,
// durability, storage and the live stream.
type Peer struct {
	srv      *mqtt.Server
	ln       *listeners.TCP
	http     *http.Server
	httpLn   net.Listener
	received atomic.Int64
	wg       sync.WaitGroup
}

// StartPeer starts the peer's MQTT listener on mqttAddr and its statistics
// (GET /stats: {"received":N}) on httpAddr.
func StartPeer(mqttAddr, httpAddr string, logger *slog.Logger) (*Peer, error) {
	p := &Peer{srv: mqtt.New(&mqtt.Options{InlineClient: true, Logger: logger})}
	if err := p.srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	p.ln = listeners.NewTCP(listeners.Config{ID: "tcp", Address: mqttAddr})
	if err := p.srv.AddListener(p.ln); err != nil {
		return nil, err
	}
	if err := p.srv.Subscribe(topics.TelemetryFilter, 1, func(_ *mqtt.Client, _ packets.Subscription, _ packets.Packet) {
		p.received.Add(1)
	}); err != nil {
		return nil, err
	}
	var err error
	if p.httpLn, err = net.Listen("tcp", httpAddr); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"received":%d}`, p.received.Load())
	})
	p.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	p.wg.Go(func() {
		if err := p.http.Serve(p.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("peer stats server", "err", err)
		}
	})
	if err := p.srv.Serve(); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// Addr returns the bound MQTT address.
func (p *Peer) Addr() string { return p.ln.Address() }

// Received returns how many telemetry messages the counting subscriber saw.
func (p *Peer) Received() int64 { return p.received.Load() }

// Stop closes the broker and the statistics server. Safe to call twice.
func (p *Peer) Stop() {
	p.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p.http.Shutdown(ctx)
	p.wg.Wait()
}

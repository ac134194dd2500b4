package bench

import (
	"context"
	"strings"
	"time"

	"github.com/telehub/telehub/cmd/loadgen/load"
	"github.com/telehub/telehub/devices/topics"
)

// DeliveryRow is what a set of watchers (Telehub dashboards on the
// WebSocket live stream, or MQTT subscribers of a bare broker) received
// while devices published at a rate.
type DeliveryRow struct {
	System   string
	Watchers int
	Rate     float64
	Sent     int64
	// Expected is Sent times Watchers; Received may be lower where the
	// live stream conflated readings for a watcher that fell behind.
	Expected int64
	load.WatchResult
	Cores float64
	Err   string
}

// deliverySystem is a broker with devices connected and a way to add watchers.
type deliverySystem struct {
	name  string
	pids  []int
	fleet *load.Fleet
	watch func(ctx context.Context, n int) (*load.Watchers, error)
}

// deliver publishes at rate for d at QoS 1 while n watchers watch.
func (r *runner) deliver(ctx context.Context, s deliverySystem, n int, rate float64, d time.Duration) DeliveryRow {
	row := DeliveryRow{System: s.name, Watchers: n, Rate: rate}
	ws, err := s.watch(ctx, n)
	if err != nil {
		row.Err = err.Error()
		return row
	}
	defer ws.Close()
	pctx, cancel := context.WithTimeout(ctx, d+time.Minute) // a wedged system cannot hang the suite
	defer cancel()
	cpu := startCPU(s.pids...)
	res, err := s.fleet.Publish(pctx, load.PublishConfig{Rate: rate, Duration: d, QoS: 1, AfterSend: func() { row.Cores = cpu.cores() }})
	if err != nil {
		row.Err = err.Error()
		return row
	}
	row.Sent, row.Expected = res.Sent, res.Sent*int64(n)
	deadline := time.Now().Add(5 * time.Second)
	for ws.Result().Readings < row.Expected && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	row.WatchResult = ws.Result()
	r.log.Info("delivery", "system", s.name, "watchers", n, "rate", rate, "expected", row.Expected,
		"received", row.Readings, "latency", row.Latency.String())
	return row
}

// withSystems runs f against Telehub (dashboards on the live stream),
// the bare broker and Mosquitto (MQTT subscribers), each with devices
// connected.
func (r *runner) withSystems(ctx context.Context, label string, f func(deliverySystem)) error {
	th, err := r.startTelehub(ctx, "telehub-"+label, true)
	if err != nil {
		return err
	}
	devs, err := th.provision(ctx, "bench", 1000)
	if err == nil {
		var fl *load.Fleet
		if fl, err = r.connect(ctx, th.mqtt, devs); err == nil {
			liveURL := "ws" + strings.TrimPrefix(th.http, "http") + "/api/v1/live?kinds=reading"
			f(deliverySystem{name: "Telehub (WebSocket)", pids: []int{th.pid()}, fleet: fl,
				watch: func(ctx context.Context, n int) (*load.Watchers, error) {
					return load.Dashboards(ctx, liveURL, th.token, n)
				}})
			fl.Close()
		}
	}
	th.stop()
	if err != nil {
		return err
	}
	p, err := r.startPeer(ctx)
	if err != nil {
		return err
	}
	if fl, err := r.connect(ctx, p.mqtt, anonymous(1000)); err == nil {
		f(deliverySystem{name: "mochi-mqtt bare (MQTT subscribers)", pids: []int{p.pid()}, fleet: fl,
			watch: func(ctx context.Context, n int) (*load.Watchers, error) {
				return load.Subscribe(ctx, p.mqtt, n, topics.TelemetryFilter, "", "")
			}})
		fl.Close()
	}
	p.stop()
	mq, addr, err := r.startMosquitto(ctx)
	if err != nil {
		return err
	}
	defer mq.stop()
	fl, err := r.connect(ctx, addr, anonymous(1000))
	if err != nil {
		return err
	}
	defer fl.Close()
	f(deliverySystem{name: "Mosquitto (MQTT subscribers)", pids: []int{mq.pid()}, fleet: fl,
		watch: func(ctx context.Context, n int) (*load.Watchers, error) {
			return load.Subscribe(ctx, addr, n, topics.TelemetryFilter, "", "")
		}})
	return nil
}

// live is scenario 2: publish-to-dashboard latency at 1,000 and 10,000
// readings/s with 10 dashboards.
func (r *runner) live(ctx context.Context) error {
	return r.withSystems(ctx, "live", func(s deliverySystem) {
		for _, rate := range r.plan.liveRates {
			r.rep.Live = append(r.rep.Live, r.deliver(ctx, s, r.plan.liveDashboards, rate, r.plan.liveDur))
		}
	})
}

// fanout is scenario 4: one stream of readings to 10, 100 and 1,000 watchers.
func (r *runner) fanout(ctx context.Context) error {
	return r.withSystems(ctx, "fanout", func(s deliverySystem) {
		for _, n := range r.plan.fanoutClients {
			r.rep.Fanout = append(r.rep.Fanout, r.deliver(ctx, s, n, r.plan.fanoutRate, r.plan.fanoutDur))
		}
	})
}

package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/telehub/telehub/cmd/loadgen/load"
)

// IngestStep is one offered rate of an ingest series.
type IngestStep struct {
	Rate float64
	load.PublishResult
	// Stored is how many of the readings reached the store (InfluxDB, or
	// the counting subscriber of the bare broker).
	Stored int64
	// CaughtUp is how long after the last send the store held every
	// reading; negative when it never did.
	CaughtUp time.Duration
	// Cores is the CPU the system under test used while sending; GenCores
	// the generator's.
	Cores, GenCores float64
	Pass            bool
	Why             string // why the step failed
}

// IngestSeries is a system at one QoS, stepped up until it fails.
type IngestSeries struct {
	System string
	QoS    byte
	Steps  []IngestStep
	Err    string // the series could not run
}

// Max returns the highest rate that passed, 0 if none did, and whether
// every step passed (the figure is then a lower bound).
func (s IngestSeries) Max() (float64, bool) {
	best := 0.0
	for _, st := range s.Steps {
		if !st.Pass {
			return best, false
		}
		best = st.Rate
	}
	return best, len(s.Steps) > 0
}

// ingestTarget is a system that takes readings and can say how many it
// stored.
type ingestTarget struct {
	name string
	pids []int
	// send offers a rate for a duration; it calls sent after the last send.
	send func(ctx context.Context, rate float64, d time.Duration, qos byte, sent func()) (load.PublishResult, error)
	// baseline is called before a step; stored counts the step's readings
	// that reached the store.
	baseline func(ctx context.Context) (int64, error)
	stored   func(ctx context.Context, res load.PublishResult, base int64) (int64, error)
}

// influxStored counts a step's readings in db by their time range.
func (r *runner) influxStored(db string) func(context.Context, load.PublishResult, int64) (int64, error) {
	return func(ctx context.Context, res load.PublishResult, _ int64) (int64, error) {
		return load.Count(ctx, r.cfg.InfluxURL, db, "telemetry", res.FirstTS, res.LastTS)
	}
}

func noBaseline(context.Context) (int64, error) { return 0, nil }

func fleetSender(f *load.Fleet) func(context.Context, float64, time.Duration, byte, func()) (load.PublishResult, error) {
	return func(ctx context.Context, rate float64, d time.Duration, qos byte, sent func()) (load.PublishResult, error) {
		return f.Publish(ctx, load.PublishConfig{Rate: rate, Duration: d, QoS: qos, AfterSend: sent})
	}
}

// series runs a warm-up, then the plan's rates until a step fails.
func (r *runner) series(ctx context.Context, t ingestTarget, qos byte) IngestSeries {
	s := IngestSeries{System: t.name, QoS: qos}
	r.log.Info("ingest series", "system", t.name, "qos", qos)
	warm := r.step(ctx, t, 1000, time.Second, qos)
	if !warm.Pass {
		s.Err = "warm-up at 1,000 readings/s failed: " + warm.Why
		return s
	}
	for _, rate := range r.plan.ingestRates {
		st := r.step(ctx, t, rate, r.plan.stepDur, qos)
		r.log.Info("ingest step", "system", t.name, "qos", qos, "rate", rate, "sent", st.Sent, "stored", st.Stored,
			"ack_p99", st.Ack.P99, "late_p99", st.Late.P99, "caught_up", st.CaughtUp, "pass", st.Pass, "why", st.Why)
		s.Steps = append(s.Steps, st)
		if !st.Pass || ctx.Err() != nil {
			break
		}
	}
	return s
}

// step offers one rate and judges it: every reading stored (and, at QoS 1,
// acknowledged), the store caught up within drainOK, and neither sends nor
// acknowledgements more than maxP99 late at the 99th percentile.
func (r *runner) step(ctx context.Context, t ingestTarget, rate float64, d time.Duration, qos byte) IngestStep {
	st := IngestStep{Rate: rate}
	base, err := t.baseline(ctx)
	if err != nil {
		st.Why = err.Error()
		return st
	}
	sctx, cancel := context.WithTimeout(ctx, d+time.Minute) // a wedged system cannot hang the suite
	defer cancel()
	cpu, gen := startCPU(t.pids...), startCPU(0)
	st.PublishResult, err = t.send(sctx, rate, d, qos, func() { st.Cores, st.GenCores = cpu.cores(), gen.cores() })
	if err != nil {
		st.Why = err.Error()
		return st
	}
	st.CaughtUp = -1
	var last int64 = -1
	progress := time.Now()
	deadline := time.Now().Add(r.plan.drainMax)
	for {
		n, err := t.stored(ctx, st.PublishResult, base)
		if err != nil {
			st.Why = "count: " + err.Error()
			return st
		}
		st.Stored = n
		if n >= st.Sent {
			st.CaughtUp = max(time.Since(st.End), 0)
			break
		}
		if n != last {
			last, progress = n, time.Now()
		}
		if time.Since(progress) > 5*time.Second || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	switch {
	case st.Stored < st.Sent:
		st.Why = fmt.Sprintf("%d of %d readings not in the store %v after the last send", st.Sent-st.Stored, st.Sent,
			time.Since(st.End).Round(time.Second))
	case st.Errors > 0:
		st.Why = fmt.Sprintf("%d publishes failed", st.Errors)
	case qos > 0 && st.Unacked > 0:
		st.Why = fmt.Sprintf("%d publishes not acknowledged", st.Unacked)
	case st.CaughtUp > r.plan.drainOK:
		st.Why = fmt.Sprintf("store caught up only %v after the last send", st.CaughtUp.Round(100*time.Millisecond))
	case qos > 0 && st.Ack.P99 > r.plan.maxP99:
		st.Why = fmt.Sprintf("ack p99 %v", load.Round(st.Ack.P99))
	case st.Late.P99 > r.plan.maxP99:
		st.Why = fmt.Sprintf("sends p99 %v behind schedule", load.Round(st.Late.P99))
	case st.SendRate() < 0.9*rate:
		st.Why = fmt.Sprintf("only %.0f/s sent", st.SendRate())
	default:
		st.Pass = true
	}
	return st
}

// ingest is scenario 1: readings into InfluxDB at rising rates, QoS 0 and
// 1, for Telehub, Mosquitto + Telegraf, the bare broker and direct writes.
func (r *runner) ingest(ctx context.Context) error {
	add := func(s IngestSeries) { r.rep.Ingest = append(r.rep.Ingest, s) }
	for _, qos := range []byte{0, 1} {
		if !r.cfg.runs("telehub") {
			break
		}
		s, err := r.ingestTelehub(ctx, qos)
		if err != nil {
			s = IngestSeries{System: "Telehub", QoS: qos, Err: err.Error()}
		}
		add(s)
	}
	if r.cfg.runs("telegraf") {
		mq, addr, err := r.startMosquitto(ctx)
		if err != nil {
			return err
		}
		for _, qos := range []byte{0, 1} {
			s, err := r.ingestTelegraf(ctx, mq, addr, qos)
			if err != nil {
				s = IngestSeries{System: "Mosquitto + Telegraf", QoS: qos, Err: err.Error()}
			}
			add(s)
		}
		mq.stop()
	}
	if r.cfg.runs("direct") {
		add(r.series(ctx, ingestTarget{name: "InfluxDB direct", baseline: noBaseline, stored: r.influxStored(dbDirect),
			send: func(ctx context.Context, rate float64, d time.Duration, _ byte, sent func()) (load.PublishResult, error) {
				res, err := load.WriteLines(ctx, load.LineConfig{URL: r.cfg.InfluxURL, DB: dbDirect, Devices: r.plan.ingestDevices, Rate: rate, Duration: d})
				sent()
				return res, err
			}}, 1))
	}
	for _, qos := range []byte{0, 1} {
		if !r.cfg.runs("mochi") {
			break
		}
		s, err := r.ingestPeer(ctx, qos)
		if err != nil {
			s = IngestSeries{System: "mochi-mqtt bare", QoS: qos, Err: err.Error()}
		}
		add(s)
	}
	return nil
}

func (r *runner) ingestTelehub(ctx context.Context, qos byte) (IngestSeries, error) {
	th, err := r.startTelehub(ctx, fmt.Sprintf("telehub-ingest-qos%d", qos), true)
	if err != nil {
		return IngestSeries{}, err
	}
	defer th.stop()
	devs, err := th.provision(ctx, "bench", r.plan.ingestDevices)
	if err != nil {
		return IngestSeries{}, err
	}
	f, err := r.connect(ctx, th.mqtt, devs)
	if err != nil {
		return IngestSeries{}, err
	}
	defer f.Close()
	return r.series(ctx, ingestTarget{name: "Telehub", pids: []int{th.pid()}, send: fleetSender(f),
		baseline: noBaseline, stored: r.influxStored(dbTelehub)}, qos), nil
}

func (r *runner) ingestTelegraf(ctx context.Context, mq *proc, addr string, qos byte) (IngestSeries, error) {
	tg, err := r.startTelegraf(ctx, addr, qos)
	if err != nil {
		return IngestSeries{}, err
	}
	defer tg.stop()
	f, err := r.connect(ctx, addr, anonymous(r.plan.ingestDevices))
	if err != nil {
		return IngestSeries{}, err
	}
	defer f.Close()
	return r.series(ctx, ingestTarget{name: "Mosquitto + Telegraf", pids: []int{mq.pid(), tg.pid()}, send: fleetSender(f),
		baseline: noBaseline, stored: r.influxStored(dbTelegraf)}, qos), nil
}

func (r *runner) ingestPeer(ctx context.Context, qos byte) (IngestSeries, error) {
	p, err := r.startPeer(ctx)
	if err != nil {
		return IngestSeries{}, err
	}
	defer p.stop()
	f, err := r.connect(ctx, p.mqtt, anonymous(r.plan.ingestDevices))
	if err != nil {
		return IngestSeries{}, err
	}
	defer f.Close()
	return r.series(ctx, ingestTarget{name: "mochi-mqtt bare", pids: []int{p.pid()}, send: fleetSender(f),
		baseline: p.received,
		stored: func(ctx context.Context, _ load.PublishResult, base int64) (int64, error) {
			n, err := p.received(ctx)
			return n - base, err
		}}, qos), nil
}

// anonymous returns n device identities without passwords.
func anonymous(n int) []load.Device {
	ids := load.DeviceIDs("bench", n)
	devs := make([]load.Device, n)
	for i, id := range ids {
		devs[i] = load.Device{ID: id}
	}
	return devs
}

// connect connects a fleet over 16 source addresses and fails unless every
// device connected.
func (r *runner) connect(ctx context.Context, addr string, devs []load.Device) (*load.Fleet, error) {
	f, res, err := load.Connect(ctx, load.FleetConfig{Addr: addr, Devices: devs, SourceIPs: 16, KeepAlive: 60 * time.Second})
	if err != nil {
		return nil, err
	}
	if res.Failed > 0 {
		f.Close()
		return nil, fmt.Errorf("%d of %d devices did not connect: %s", res.Failed, len(devs), res.FirstErr)
	}
	return f, nil
}

package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/telehub/telehub/cmd/loadgen/load"
)

// MemoryRow is the resident memory of an idle process.
type MemoryRow struct {
	System string
	RSSKB  int64
}

// IdleRow is scenario 3 for one system: idle device connections held.
type IdleRow struct {
	System    string
	Attempted int
	load.ConnectResult
	// RSS before and after connecting, in KiB.
	BeforeKB, AfterKB int64
	// Dropped connections while held.
	Dropped int64
	Err     string
}

// PerThousandKB is the memory per 1,000 connected devices.
func (r IdleRow) PerThousandKB() float64 {
	if r.Connected == 0 {
		return 0
	}
	return float64(r.AfterKB-r.BeforeKB) / float64(r.Connected) * 1000
}

// settle waits the plan's settle time, for memory to reach a steady state.
func (r *runner) settle(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(r.plan.settle):
	}
}

// memory is scenario 5: resident memory of each idle process, after it
// settled, with nothing connected.
func (r *runner) memory(ctx context.Context) error {
	th, err := r.startTelehub(ctx, "telehub-idle", false)
	if err != nil {
		return err
	}
	r.settle(ctx)
	r.rep.Memory = append(r.rep.Memory, MemoryRow{"Telehub (embedded store)", rssKB(th.pid())})
	th.stop()
	if th, err = r.startTelehub(ctx, "telehub-idle-influx", true); err != nil {
		return err
	}
	r.settle(ctx)
	r.rep.Memory = append(r.rep.Memory, MemoryRow{"Telehub (InfluxDB store)", rssKB(th.pid())})
	th.stop()
	p, err := r.startPeer(ctx)
	if err != nil {
		return err
	}
	r.settle(ctx)
	r.rep.Memory = append(r.rep.Memory, MemoryRow{"mochi-mqtt bare", rssKB(p.pid())})
	p.stop()
	mq, addr, err := r.startMosquitto(ctx)
	if err != nil {
		return err
	}
	defer mq.stop()
	tg, err := r.startTelegraf(ctx, addr, 0)
	if err != nil {
		return err
	}
	defer tg.stop()
	r.settle(ctx)
	mqKB, tgKB := rssKB(mq.pid()), rssKB(tg.pid())
	r.rep.Memory = append(r.rep.Memory, MemoryRow{"Mosquitto", mqKB}, MemoryRow{"Telegraf", tgKB},
		MemoryRow{"Mosquitto + Telegraf", mqKB + tgKB})
	return nil
}

// idleConns returns how many connections scenario 3 attempts: the plan's,
// capped by the open-file limit that the generator and every broker share
// here, less room for their other files.
func (r *runner) idleConns() int {
	n := r.plan.idleConns
	if n < 50000 {
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("Scenario 3 in %s mode attempts %d connections; `make bench-full` attempts 50,000.", r.cfg.Mode, n))
	}
	if lim := fdLimit(); lim > 0 && uint64(n)+500 > lim {
		capped := int(lim) - 500
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("Scenario 3 attempted %d connections, not %d: the open-file limit "+
			"(RLIMIT_NOFILE) here is %d for every process, and the hard limit cannot be raised without CAP_SYS_RESOURCE; "+
			"each connection costs the generator one descriptor and the broker another.", capped, n, lim))
		n = capped
	}
	return n
}

// idle is scenario 3: the most idle device connections (up to the plan's)
// and the memory per 1,000 of them, for Telehub, the bare broker and
// Mosquitto.
func (r *runner) idle(ctx context.Context) error {
	n := r.idleConns()
	hold := func(sys string, pid int, addr string, devs []load.Device) IdleRow {
		row := IdleRow{System: sys, Attempted: len(devs)}
		r.settle(ctx)
		row.BeforeKB = rssKB(pid)
		f, res, err := load.Connect(ctx, load.FleetConfig{Addr: addr, Devices: devs, SourceIPs: 16, KeepAlive: 120 * time.Second, Concurrency: 32})
		row.ConnectResult = res
		if err != nil {
			row.Err = err.Error()
			return row
		}
		r.settle(ctx)
		row.AfterKB = rssKB(pid)
		row.Dropped = f.Dropped()
		f.Close()
		r.log.Info("idle connections", "system", sys, "connected", res.Connected, "failed", res.Failed,
			"kb_per_1000", row.PerThousandKB(), "first_error", res.FirstErr)
		return row
	}
	th, err := r.startTelehub(ctx, "telehub-conns", false)
	if err != nil {
		return err
	}
	devs, err := th.provision(ctx, "idle", n)
	if err != nil {
		th.stop()
		return err
	}
	r.rep.Idle = append(r.rep.Idle, hold("Telehub", th.pid(), th.mqtt, devs))
	th.stop()
	p, err := r.startPeer(ctx)
	if err != nil {
		return err
	}
	r.rep.Idle = append(r.rep.Idle, hold("mochi-mqtt bare", p.pid(), p.mqtt, anonymous(n)))
	p.stop()
	mq, addr, err := r.startMosquitto(ctx)
	if err != nil {
		return err
	}
	defer mq.stop()
	r.rep.Idle = append(r.rep.Idle, hold("Mosquitto", mq.pid(), addr, anonymous(n)))
	return nil
}

package bench

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/telehub/telehub/cmd/loadgen/load"
)

// Report is everything a run measured.
type Report struct {
	Mode       string
	Start, End time.Time
	Machine    Machine
	Versions   [][2]string
	Loads      []string // load averages before each scenario
	Notes      []string
	Ingest     []IngestSeries
	Live       []DeliveryRow
	Fanout     []DeliveryRow
	Idle       []IdleRow
	Memory     []MemoryRow
	Edge       []EdgeRow
	Rules      []RulesRow
	// FloodIdleKB is the floods' hub idle, Floods each flood (scenario 8).
	FloodIdleKB int64
	Floods      []FloodRow
}

// The generated part of BENCHMARKS.md sits between these markers; the rest
// of the file (notes, profiles, other sections) is kept as it is.
const (
	beginMark = "<!-- bench:begin (written by make bench; edits inside are overwritten) -->"
	endMark   = "<!-- bench:end -->"
)

// writeReport puts the report into path, replacing only the generated part.
func writeReport(path string, r *Report) error {
	gen := beginMark + "\n" + r.markdown() + endMark + "\n"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, beginMark), strings.Index(s, endMark)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + gen + strings.TrimPrefix(s[j+len(endMark):], "\n")
	case s == "":
		s = "# Benchmarks\n\n`make bench` (quick, a few minutes) and `make bench-full` (for the record) write the section below.\n\n" + gen
	default:
		s = strings.TrimRight(s, "\n") + "\n\n" + gen
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

func ms(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
}

func num(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[0] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func mb(kb int64) string { return fmt.Sprintf("%.1f MB", float64(kb)/1024) }

func ratio(a, b float64) string {
	if b <= 0 || a <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func yes(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

func (r *Report) series(system string, qos byte) *IngestSeries {
	for i := range r.Ingest {
		if r.Ingest[i].System == system && r.Ingest[i].QoS == qos {
			return &r.Ingest[i]
		}
	}
	return nil
}

func (r *Report) markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("## Run of %s (%s mode)\n\n", r.Start.UTC().Format("2006-01-02 15:04 MST"), r.Mode)
	w("Took %v. Every system ran on this machine in the same run, one at a time, with the load generator "+
		"(`cmd/loadgen`, its `load` package) on the same cores; all traffic on loopback.\n\n", r.End.Sub(r.Start).Round(time.Second))
	w("| machine | |\n|---|---|\n| CPU | %s |\n| cores | %d |\n| memory | %s |\n| kernel | %s |\n| open files limit | %d |\n",
		r.Machine.CPU, r.Machine.Cores, r.Machine.Memory, r.Machine.Kernel, r.Machine.FDLimit)
	w("| load average (1, 5, 15 min) | %s |\n\n", strings.Join(r.Loads, "; "))
	w("The machine is shared: a load average above 0 before a scenario means other work was running and the figures are lower than on an idle machine.\n\n")
	w("| software | version |\n|---|---|\n")
	for _, v := range r.Versions {
		w("| %s | %s |\n", v[0], strings.ReplaceAll(v[1], "|", "/"))
	}
	w("\n")
	r.targets(w)
	r.ingestMarkdown(w)
	r.deliveryMarkdown(w, "### 2. Publish to dashboard latency",
		"Devices publish at QoS 1; Telehub's dashboards are WebSocket clients on `/api/v1/live?kinds=reading`, the peers' are MQTT subscribers on `devices/+/telemetry`. Latency is from the device's send time (`sent_us` in the payload) to arrival at the watcher.", r.Live)
	r.idleMarkdown(w)
	r.deliveryMarkdown(w, "### 4. Fan-out",
		"One stream of readings to many watchers. Received below expected means readings were conflated for a watcher that fell behind (Telehub sends the latest values instead of a backlog) or lost (MQTT QoS 0 to a slow subscriber).", r.Fanout)
	if len(r.Memory) > 0 {
		w("### 5. Idle memory\n\nResident memory (VmRSS from /proc) of each process after it started and settled, nothing connected.\n\n| system | RSS | Telehub as a ratio |\n|---|---|---|\n")
		var th int64
		for _, m := range r.Memory {
			if m.System == "Telehub (embedded store)" {
				th = m.RSSKB
			}
		}
		for _, m := range r.Memory {
			w("| %s | %s | %s |\n", m.System, mb(m.RSSKB), ratio(float64(th), float64(m.RSSKB)))
		}
		w("\n")
	}
	r.edgeMarkdown(w)
	r.rulesMarkdown(w)
	r.floodsMarkdown(w)
	if len(r.Notes) > 0 {
		w("### Notes of this run\n\n")
		for _, n := range r.Notes {
			w("- %s\n", n)
		}
		w("\n")
	}
	return b.String()
}

func (r *Report) targets(w func(string, ...any)) {
	w("### Targets\n\n| target | this run | |\n|---|---|---|\n")
	if s, t := r.series("Telehub", 1), r.series("Mosquitto + Telegraf", 1); s != nil {
		mx, _ := s.Max()
		var peer float64
		if t != nil {
			peer, _ = t.Max()
		}
		w("| ingest ≥ 100,000 readings/s into InfluxDB, zero loss (QoS 1) | %s/s | %s |\n", num(mx), yes(mx >= 100000))
		w("| ingest ≥ 1.5x Mosquitto + Telegraf (QoS 1) | %s | %s |\n", ratio(mx, peer), yes(peer > 0 && mx >= 1.5*peer))
	}
	if s, t := r.series("Telehub", 0), r.series("Mosquitto + Telegraf", 0); s != nil {
		mx, _ := s.Max()
		var peer float64
		if t != nil {
			peer, _ = t.Max()
		}
		w("| ingest ≥ 1.5x Mosquitto + Telegraf (QoS 0) | %s (%s/s vs %s/s) | %s |\n", ratio(mx, peer), num(mx), num(peer), yes(peer > 0 && mx >= 1.5*peer))
	}
	for _, row := range r.Live {
		if !strings.HasPrefix(row.System, "Telehub") {
			continue
		}
		limit := 5 * time.Millisecond
		if row.Rate > 1000 {
			limit = 20 * time.Millisecond
		}
		w("| dashboard p99 < %v at %s readings/s | %s | %s |\n", limit, num(row.Rate), ms(row.Latency.P99), yes(row.Err == "" && row.Latency.Count > 0 && row.Latency.P99 < limit))
	}
	var th, mochi *IdleRow
	for i := range r.Idle {
		switch r.Idle[i].System {
		case "Telehub":
			th = &r.Idle[i]
		case "mochi-mqtt bare":
			mochi = &r.Idle[i]
		}
	}
	if th != nil {
		verdict := yes(th.Connected >= 50000)
		if th.Attempted < 50000 {
			verdict = fmt.Sprintf("**not measured**: %s attempted (see the notes)", num(float64(th.Attempted)))
		}
		w("| 50,000 idle device connections | %s of %s connected | %s |\n", num(float64(th.Connected)), num(float64(th.Attempted)), verdict)
		if mochi != nil {
			w("| memory per 1,000 devices ≤ 1.3x bare mochi | %s | %s |\n", ratio(th.PerThousandKB(), mochi.PerThousandKB()),
				yes(mochi.PerThousandKB() > 0 && th.PerThousandKB() <= 1.3*mochi.PerThousandKB()))
		}
	}
	for _, m := range r.Memory {
		if m.System == "Telehub (embedded store)" {
			w("| idle hub < 30 MB resident | %s | %s |\n", mb(m.RSSKB), yes(m.RSSKB < 30*1024))
		}
	}
	r.edgeTargets(w)
	r.rulesTargets(w)
	r.floodsTargets(w)
	w("\n")
}

func (r *Report) ingestMarkdown(w func(string, ...any)) {
	if len(r.Ingest) == 0 {
		return
	}
	w("### 1. Ingest into InfluxDB\n\n")
	w("Each system gets the same open-loop load: %s readings/s stepped up, each step for the same time, "+
		"from 1,000 (quick) or 2,000 (full) device connections; a step passes when every reading is in "+
		"the store, the store caught up within 5 s of the last send, every QoS 1 publish was acknowledged, "+
		"and sends and acknowledgements stayed within 1 s at p99. The series stops at the first failed step. "+
		"\"Stored\" is counted in InfluxDB (for the bare broker: by its subscriber). Readings are the payload "+
		"of `load.AppendReading`, 6 fields each. Cores is the CPU the system used while the load ran (Mosquitto + Telegraf: both; "+
		"InfluxDB's own is not counted for anyone).\n\n", "5,000 and more")
	w("| system | QoS | highest rate passed | Telehub as a ratio | failed at |\n|---|---|---|---|---|\n")
	for _, s := range r.Ingest {
		mx, all := s.Max()
		rate := num(mx) + "/s"
		if all {
			rate = "≥ " + rate + " (every step passed)"
		}
		fail := ""
		for _, st := range s.Steps {
			if !st.Pass {
				fail = num(st.Rate) + "/s: " + st.Why
			}
		}
		if s.Err != "" {
			fail = s.Err
		}
		rt := ""
		if th := r.series("Telehub", s.QoS); th != nil && s.System != "Telehub" {
			tm, _ := th.Max()
			rt = ratio(tm, mx)
		}
		q := fmt.Sprint(s.QoS)
		if s.System == "InfluxDB direct" {
			q = "n/a"
		}
		w("| %s | %s | %s | %s | %s |\n", s.System, q, rate, rt, fail)
	}
	w("\nEvery step:\n\n| system | QoS | offered/s | sent/s | sent | stored | unacked | ack p50 | ack p99 | ack max | send late p99 | caught up | cores | generator cores | |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Ingest {
		for _, st := range s.Steps {
			verdict := "pass"
			if !st.Pass {
				verdict = "fail: " + st.Why
			}
			ack50, ack99, ackMax := "", "", ""
			if st.Ack.Count > 0 {
				ack50, ack99, ackMax = ms(st.Ack.P50), ms(st.Ack.P99), ms(st.Ack.Max)
			}
			caught := "never"
			if st.CaughtUp >= 0 {
				caught = ms(st.CaughtUp)
			}
			w("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %.2f | %s |\n", s.System, s.QoS, num(st.Rate),
				num(st.SendRate()), num(float64(st.Sent)), num(float64(st.Stored)), num(float64(st.Unacked)),
				ack50, ack99, ackMax, ms(st.Late.P99), caught, st.Cores, st.GenCores, verdict)
		}
	}
	w("\n")
}

func (r *Report) deliveryMarkdown(w func(string, ...any), title, intro string, rows []DeliveryRow) {
	if len(rows) == 0 {
		return
	}
	w("%s\n\n%s\n\n", title, intro)
	w("| system | watchers | readings/s | expected | received | gaps | p50 | p90 | p99 | max | Telehub p99 as a ratio | cores |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	find := func(sys string, n int, rate float64) *DeliveryRow {
		for i := range rows {
			if rows[i].System == sys && rows[i].Watchers == n && rows[i].Rate == rate {
				return &rows[i]
			}
		}
		return nil
	}
	for _, row := range rows {
		if row.Err != "" {
			w("| %s | %d | %s | | | | | | | | | error: %s |\n", row.System, row.Watchers, num(row.Rate), row.Err)
			continue
		}
		rt := ""
		if th := find("Telehub (WebSocket)", row.Watchers, row.Rate); th != nil && th != &row && !strings.HasPrefix(row.System, "Telehub") {
			rt = ratio(float64(th.Latency.P99), float64(row.Latency.P99))
		}
		l := row.Latency
		w("| %s | %d | %s | %s | %s | %d | %s | %s | %s | %s | %s | %.2f |\n", row.System, row.Watchers, num(row.Rate),
			num(float64(row.Expected)), num(float64(row.Readings)), row.Gaps, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max), rt, row.Cores)
	}
	w("\n")
}

func (r *Report) idleMarkdown(w func(string, ...any)) {
	if len(r.Idle) == 0 {
		return
	}
	w("### 3. Idle device connections\n\nEach system gets the same number of MQTT connections (keep-alive 120 s, 32 connecting at a time, over 16 source addresses); " +
		"memory is the growth of the broker's RSS from before connecting (Telehub: with the devices already registered) to after they settled.\n\n")
	w("| system | attempted | connected | failed | first error | connect time | RSS before | RSS after | per 1,000 devices | Telehub as a ratio |\n|---|---|---|---|---|---|---|---|---|---|\n")
	var th float64
	for _, row := range r.Idle {
		if row.System == "Telehub" {
			th = row.PerThousandKB()
		}
	}
	for _, row := range r.Idle {
		errText := row.FirstErr
		if row.Err != "" {
			errText = row.Err
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row.System, num(float64(row.Attempted)), num(float64(row.Connected)),
			num(float64(row.Failed)), errText, load.Round(row.Elapsed), mb(row.BeforeKB), mb(row.AfterKB),
			fmt.Sprintf("%.2f MB", row.PerThousandKB()/1024), ratio(th, row.PerThousandKB()))
	}
	w("\n")
}

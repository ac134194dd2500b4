package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/telehub/telehub/cmd/loadgen/load"
)

// RulesRow is scenario 7 for one number of alert rules: the hub's CPU at a
// fixed ingest rate.
type RulesRow struct {
	Rules int
	// Cores is the hub's CPU in each run while the devices published.
	Cores []float64
	// EvalsPerPayload is what the rule engine did per payload
	// (telehub_rules_evaluations_total over the payloads sent).
	EvalsPerPayload float64
	Err             string
}

// Mean returns the mean of the runs' cores.
func (r RulesRow) Mean() float64 {
	if len(r.Cores) == 0 {
		return 0
	}
	var sum float64
	for _, c := range r.Cores {
		sum += c
	}
	return sum / float64(len(r.Cores))
}

// ruleCounts are the configurations of scenario 7.
var ruleCounts = []int{0, 100, 1000}

// rulesScenario is scenario 7: the cost of alert rules to ingest. A hub with
// InfluxDB as the store takes QoS 1 readings at a fixed rate from devices
// with 0, 100 and 1,000 rules in its config file; the configurations run in
// turn, several times, and the hub's CPU is compared. Ingest is CPU-bound
// here, so the CPU per reading the rules add is the throughput they cost.
func (r *runner) rulesScenario(ctx context.Context) error {
	rows := make([]RulesRow, len(ruleCounts))
	for run := 0; run < r.plan.rulesRuns; run++ {
		for i, n := range ruleCounts {
			rows[i].Rules = n
			cores, evals, err := r.rulesRun(ctx, n)
			if err != nil {
				rows[i].Err = err.Error()
				continue
			}
			rows[i].Cores = append(rows[i].Cores, cores)
			rows[i].EvalsPerPayload = evals
			r.log.Info("rules run", "rules", n, "run", run+1, "cores", cores, "evaluations_per_payload", evals)
		}
	}
	r.rep.Rules = rows
	return nil
}

// rulesRun starts a hub with n rules and measures its cores while the
// devices publish at the plan's rate (after a warm-up second).
func (r *runner) rulesRun(ctx context.Context, n int) (cores, evalsPerPayload float64, err error) {
	const prefix = "rules"
	th, err := r.startTelehubWith(ctx, fmt.Sprintf("telehub-rules-%d", n), true, RulesYAML(n, prefix, r.plan.rulesDevices))
	if err != nil {
		return 0, 0, err
	}
	defer th.stop()
	devs, err := th.provision(ctx, prefix, r.plan.rulesDevices)
	if err != nil {
		return 0, 0, err
	}
	f, _, err := load.Connect(ctx, load.FleetConfig{Addr: th.mqtt, Devices: devs, SourceIPs: 8, KeepAlive: time.Minute})
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	warm, err := f.Publish(ctx, load.PublishConfig{Rate: r.plan.rulesRate, Duration: time.Second, QoS: 1})
	if err != nil {
		return 0, 0, err
	}
	cpu := startCPU(th.pid())
	res, err := f.Publish(ctx, load.PublishConfig{Rate: r.plan.rulesRate, Duration: r.plan.rulesDur, QoS: 1,
		AfterSend: func() { cores = cpu.cores() }})
	if err != nil {
		return 0, 0, err
	}
	if res.Unacked > 0 || res.Errors > 0 {
		return 0, 0, fmt.Errorf("%d publishes failed, %d not acknowledged", res.Errors, res.Unacked)
	}
	evals, err := th.metric(ctx, "telehub_rules_evaluations_total")
	if err != nil {
		return 0, 0, err
	}
	return cores, evals / float64(warm.Sent+res.Sent), nil
}

// RulesYAML returns a config file's rules section of n rules on the devices
// prefix-000001... (n of them), in the mix of ingest/rules' benchmark: 60%
// thresholds with a duration and hysteresis, 20% rates, 10% absence, 10%
// offline; 15% scoped to the devices' type, the others to one device each.
// None fires under the load generator's readings.
func RulesYAML(n int, prefix string, devices int) string {
	if n == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("rules:\n")
	fields := []string{"temperature", "humidity", "battery"}
	for i := range n {
		scope := "{type: thermostat}"
		if i >= n*15/100 {
			scope = fmt.Sprintf("{device: %s-%06d}", prefix, i*7919%devices+1)
		}
		var cond string
		switch k := i % 10; {
		case k < 6:
			cond = fmt.Sprintf(`{kind: threshold, field: %s, op: ">", value: %d, for: 5m, clear_below: %d}`, fields[i%3], 1000+i, 900+i)
		case k < 8:
			cond = `{kind: rate, field: temperature, op: ">", value: 50, window: 5m}`
		case k < 9:
			cond = `{kind: absence, for: 10m}`
		default:
			cond = `{kind: offline, for: 5m}`
		}
		fmt.Fprintf(&b, "  - id: r%04d\n    name: rule %d\n    scope: %s\n    condition: %s\n", i, i, scope, cond)
	}
	return b.String()
}

// metric reads one sample of the hub's /metrics.
func (t *telehub) metric(ctx context.Context, name string) (float64, error) {
	m, err := t.metrics(ctx)
	if err != nil {
		return 0, err
	}
	v, ok := m[name]
	if !ok {
		return 0, fmt.Errorf("metric %s not found", name)
	}
	return v, nil
}

// rulesMarkdown writes scenario 7.
func (r *Report) rulesMarkdown(w func(string, ...any)) {
	if len(r.Rules) == 0 {
		return
	}
	w("### 7. Alert rules\n\n" +
		"The hub (InfluxDB store) takes QoS 1 readings at a fixed rate with 0, 100 and 1,000 alert rules in its config file " +
		"(`bench.RulesYAML`: the mix of ingest/rules' benchmark, device- and type-scoped, none fires); the three " +
		"configurations run in turn, several times. Cores is the hub's CPU while the devices published. Ingest is CPU-bound " +
		"on this machine, so the CPU the rules add per reading is the ingest throughput they cost.\n\n")
	w("| rules | evaluations per payload | hub cores, each run | mean | vs 0 rules | |\n|---|---|---|---|---|---|\n")
	base := r.Rules[0].Mean()
	for _, row := range r.Rules {
		runs := make([]string, len(row.Cores))
		for i, c := range row.Cores {
			runs[i] = fmt.Sprintf("%.2f", c)
		}
		vs := ""
		if row.Rules > 0 && base > 0 && row.Mean() > 0 {
			vs = fmt.Sprintf("%+.0f%%", (row.Mean()/base-1)*100)
		}
		w("| %s | %.1f | %s | %.3f | %s | %s |\n", num(float64(row.Rules)), row.EvalsPerPayload, strings.Join(runs, ", "), row.Mean(), vs, row.Err)
	}
	w("\n")
}

// rulesTargets writes the alert rules row of the targets table.
func (r *Report) rulesTargets(w func(string, ...any)) {
	if len(r.Rules) < 3 || r.Rules[0].Mean() == 0 || r.Rules[2].Mean() == 0 {
		return
	}
	cost := r.Rules[2].Mean()/r.Rules[0].Mean() - 1
	w("| 1,000 alert rules cost < 10%% of ingest (hub CPU per reading) | %+.0f%% | %s |\n", cost*100, yes(cost < 0.10))
}

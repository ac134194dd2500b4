package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/cmd/telehub/config"
)

// FloodRow is scenario 8 for one flood: what one client sent a hub with
// the default limits, what the hub refused, and the hub's resident memory
// before and after.
type FloodRow struct {
	// Flood names it: "field", "alias" or "retained".
	Flood string
	// Sent says what the client sent.
	Sent string
	// Acks counts the PUBACKs of the flood's QoS 1 publishes by reason code.
	Acks map[byte]int
	// Refused is the growth of the hub's refusal counters over the flood,
	// by sample name (labels included).
	Refused map[string]float64
	// BeforeKB is the hub's RSS right before the flood (after a
	// collection), AfterKB after the flood settled, CollectedKB after the
	// next collection, the flooding client still connected.
	BeforeKB, AfterKB, CollectedKB int64
	// HeapBefore and HeapAfter are the hub's Go heap (HeapAlloc, bytes)
	// after a collection before and after the flood; 0 when not measured.
	HeapBefore, HeapAfter int64
	// BoundKB is the documented bound of what the flood can make the hub
	// keep, computed from the default caps (floodBounds).
	BoundKB int64
	// Extra is a further observation, such as the device's API answer.
	Extra string
	Err   string
}

// HeapGrowthKB is the heap the flood left behind after a collection.
func (f FloodRow) HeapGrowthKB() int64 { return (f.HeapAfter - f.HeapBefore) / 1024 }

// Within reports whether the flood completed and the heap it left stayed
// within the documented bound.
func (f FloodRow) Within() bool {
	return f.Err == "" && f.HeapAfter > 0 && f.HeapGrowthKB() <= f.BoundKB
}

// Per-item costs the documented bounds use (docs/architecture.md, "What
// one client can cost" and "Bounded fields per device").
const (
	// fieldNameBytes is what one admitted field name costs the hub (index,
	// latest cache, store head): 202 MB for the 525,000 names of the field
	// flood without the cap (BenchmarkFieldFloodHub), about 400 bytes each.
	fieldNameBytes = 400
	// retainedOverhead is mochi's own memory per retained message besides
	// its topic and payload.
	retainedOverhead = 300
	// queueSlotBytes is one slot of a client's write queue, allocated at
	// connect.
	queueSlotBytes = 8
)

// floodBounds returns, in KiB, the bound of what each flood can make a
// hub with the configuration c keep, from its caps: every flooding client
// holds its write queue and, while a packet is read, two copies of it (at
// most 2 x max_packet_bytes); besides, the field flood at most
// max_fields_per_device names, the alias flood topic_alias_maximum topics
// of at most max_topic_bytes, the retained flood max_retained_bytes_per_client
// plus mochi's overhead for max_retained_per_client messages.
func floodBounds(c config.Config) map[string]int64 {
	client := int64(c.MQTT.WriteQueue)*queueSlotBytes + 2*int64(c.MQTT.MaxPacketBytes)
	l := c.MQTT.Limits
	return map[string]int64{
		"field":    (client + int64(c.Ingest.MaxFieldsPerDevice)*fieldNameBytes) / 1024,
		"alias":    (client + int64(l.TopicAliasMaximum)*int64(l.MaxTopicBytes)) / 1024,
		"retained": (client + int64(l.MaxRetainedBytesPerClient) + int64(l.MaxRetainedPerClient)*retainedOverhead) / 1024,
	}
}

// fieldFloodBatches returns the security review's field flood: batches
// payloads, each an array of points readings of perPoint field names never
// seen before (n000001, n000002, ...), timestamped an hour ago.
func fieldFloodBatches(batches, points, perPoint int, now time.Time) [][]byte {
	out := make([][]byte, batches)
	ts, name := now.Add(-time.Hour).UnixMilli(), 0
	for i := range out {
		buf := []byte{'['}
		for p := range points {
			if p > 0 {
				buf = append(buf, ',')
			}
			buf = fmt.Appendf(buf, `{"ts":%d`, ts+int64(i*points+p))
			for range perPoint {
				name++
				buf = fmt.Appendf(buf, `,"n%06d":1`, name)
			}
			buf = append(buf, '}')
		}
		out[i] = append(buf, ']')
	}
	return out
}

// floodSettle is how long the RSS is left to settle after a flood.
const floodSettle = 3 * time.Second

// floods is scenario 8: one hub with the default limits (embedded store;
// the connect and message rates lifted as for every bench hub, so that the
// caps, not the rates, meet the floods), three devices, and the security
// review's floods one after the other, each from its own MQTT 5 client,
// which stays connected: new field names, topic aliases bound to 60 KB
// topics, retained messages. Around each, the hub's RSS and its Go heap
// after a collection, against the bound its caps document. The hub is the
// same source as bin/telehub built with -tags pprof, whose heap profile
// endpoint runs a collection and reports the heap (the release build has
// no way to ask for either).
func (r *runner) floods(ctx context.Context) error {
	bin, err := r.buildPprof(ctx)
	if err != nil {
		return err
	}
	pprofAddr, err := freeAddr()
	if err != nil {
		return err
	}
	th, err := r.launchTelehub(ctx, "telehub-floods", "", bin, []string{"TELEHUB_PPROF_ADDR=" + pprofAddr}, 30*time.Second,
		r.benchConfig(false, ""))
	if err != nil {
		return err
	}
	defer th.stop()
	devs, err := th.provision(ctx, "flood", 3)
	if err != nil {
		return err
	}
	r.settle(ctx)
	r.rep.FloodIdleKB = rssKB(th.pid())
	// collect runs a collection in the hub, waits for the runtime to
	// return what it freed, and returns the heap and the RSS.
	collect := func() (heap, rss int64, err error) {
		if heap, err = pprofHeap(ctx, "http://"+pprofAddr); err != nil {
			return 0, 0, err
		}
		// The runtime's scavenger returns the freed pages over a few
		// seconds: take the RSS once it has not fallen for two.
		rss, still := rssKB(th.pid()), 0
		for i := 0; i < 20 && still < 4; i++ {
			if !sleep(ctx, 500*time.Millisecond) {
				return 0, 0, ctx.Err()
			}
			if now := rssKB(th.pid()); now < rss {
				rss, still = now, 0
			} else {
				still++
			}
		}
		return heap, rss, nil
	}
	bounds := floodBounds(config.Default())
	var clients []*mqtt5
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	for i, fl := range []struct {
		name string
		run  func(context.Context, *telehub, *mqtt5, string, *FloodRow) error
	}{
		{"field", fieldFlood},
		{"alias", aliasFlood},
		{"retained", retainedFlood},
	} {
		row := FloodRow{Flood: fl.name, BoundKB: bounds[fl.name]}
		err := func() error {
			c, _, err := dialMQTT5(ctx, th.mqtt, devs[i].ID+"-c", devs[i].ID, devs[i].Token)
			if err != nil {
				return err
			}
			clients = append(clients, c)
			before, err := th.metrics(ctx)
			if err != nil {
				return err
			}
			if row.HeapBefore, row.BeforeKB, err = collect(); err != nil {
				return err
			}
			if err := fl.run(ctx, th, c, devs[i].ID, &row); err != nil {
				return err
			}
			sleep(ctx, floodSettle)
			row.AfterKB = rssKB(th.pid())
			after, err := th.metrics(ctx)
			if err != nil {
				return err
			}
			row.Refused = refusals(before, after)
			row.HeapAfter, row.CollectedKB, err = collect()
			return err
		}()
		if err != nil {
			row.Err = err.Error()
		}
		r.log.Info("flood", "flood", row.Flood, "rss_before_kb", row.BeforeKB, "rss_after_kb", row.AfterKB, "rss_collected_kb", row.CollectedKB,
			"heap_before", row.HeapBefore, "heap_after", row.HeapAfter, "bound_kb", row.BoundKB, "acks", row.Acks, "refused", row.Refused, "err", row.Err)
		r.rep.Floods = append(r.rep.Floods, row)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// sleep waits d or until ctx ends; false if it ended.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// buildPprof returns a telehub built with -tags pprof: the one given, or
// one built from the module in the working directory like bin/telehub
// (static, CGO_ENABLED=0).
func (r *runner) buildPprof(ctx context.Context) (string, error) {
	if r.cfg.TelehubPprof != "" {
		return filepath.Abs(r.cfg.TelehubPprof)
	}
	out := filepath.Join(r.cfg.Dir, "telehub-pprof")
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "pprof", "-trimpath", "-o", out, "./cmd/telehub")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build telehub -tags pprof: %v: %s", err, b)
	}
	return out, nil
}

// pprofHeap asks the hub's heap profile endpoint for a collection
// (?gc=1) and returns HeapAlloc after it.
func pprofHeap(ctx context.Context, base string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/debug/pprof/heap?gc=1&debug=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("heap profile: %s", resp.Status)
	}
	return memStat(resp.Body, "HeapAlloc")
}

// memStat returns a runtime.MemStats field from the text of a heap
// profile with debug=1 ("# HeapAlloc = 7006800").
func memStat(rd io.Reader, name string) (int64, error) {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# "+name+" = "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("heap profile: no %s", name)
}

// fieldFlood: 30 QoS 1 batches of 70 points with 250 new field names each
// (525,000 names), then the size of the device's API answer.
func fieldFlood(ctx context.Context, th *telehub, c *mqtt5, id string, row *FloodRow) error {
	batches := fieldFloodBatches(30, 70, 250, time.Now())
	row.Sent = fmt.Sprintf("30 QoS 1 batches of 70 points x 250 new field names (525,000 names, %d KB each)", len(batches[0])/1000)
	for i, b := range batches {
		if err := c.publish("devices/"+id+"/telemetry", 0, 1, false, uint16(i+1), b); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
	}
	var err error
	if row.Acks, err = c.pubacks(len(batches), time.Minute); err != nil {
		return err
	}
	// What was accepted is in the store's head before the RSS is taken.
	if err := waitFor(ctx, th.proc, time.Minute, "store caught up", func() error {
		m, err := th.metrics(ctx)
		if err != nil {
			return err
		}
		if w, in := m["telehub_store_readings_written_total"], m["telehub_ingest_readings_total"]; w < in {
			return fmt.Errorf("%v of %v readings written", w, in)
		}
		return nil
	}); err != nil {
		return err
	}
	n, err := th.get(ctx, "/api/v1/devices/"+id)
	if err != nil {
		return err
	}
	row.Extra = fmt.Sprintf("`GET /api/v1/devices/{id}`: %.1f KB", float64(n)/1024)
	return nil
}

// aliasFlood: bind every topic alias the broker allows to a 1 KiB topic
// with a 250 KiB payload, then 1,000 QoS 0 publishes that would bind the
// aliases to 60 KB topics, then a QoS 1 publish whose PUBACK says the
// broker has read them all.
func aliasFlood(_ context.Context, _ *telehub, c *mqtt5, id string, row *FloodRow) error {
	const n, aliases = 1000, 16
	prefix := "devices/" + id + "/"
	fill := make([]byte, 250<<10)
	for a := range uint16(aliases) {
		name := strconv.Itoa(int(a)) + "/"
		if err := c.publish(prefix+name+strings.Repeat("a", 1024-len(prefix)-len(name)), a+1, 0, false, 0, fill); err != nil {
			return fmt.Errorf("bind alias %d: %w", a+1, err)
		}
	}
	long := prefix + strings.Repeat("l", 60_000)
	for i := range n {
		if err := c.publish(long+strconv.Itoa(i), uint16(i%aliases+1), 0, false, 0, []byte("x")); err != nil {
			return fmt.Errorf("publish %d: %w", i, err)
		}
	}
	row.Sent = fmt.Sprintf("MQTT 5: %d aliases bound to 1 KiB topics (250 KiB payloads), then %s QoS 0 publishes binding aliases to 60 KB topics", aliases, num(n))
	if err := c.publish(prefix+"end", 0, 1, false, 1, []byte("x")); err != nil {
		return err
	}
	_, err := c.pubacks(1, time.Minute)
	return err
}

// retainedFlood: 150 QoS 1 retained messages of 200 KiB on distinct topics
// of the device's own tree.
func retainedFlood(_ context.Context, _ *telehub, c *mqtt5, id string, row *FloodRow) error {
	const n = 150
	payload := []byte(strings.Repeat("r", 200<<10))
	for i := range n {
		if err := c.publish("devices/"+id+"/r"+strconv.Itoa(i), 0, 1, true, uint16(i+1), payload); err != nil {
			return fmt.Errorf("publish %d: %w", i, err)
		}
	}
	row.Sent = fmt.Sprintf("%d QoS 1 retained messages of 200 KiB on distinct topics (%.0f MB)", n, float64(n*len(payload))/(1<<20))
	var err error
	row.Acks, err = c.pubacks(n, time.Minute)
	return err
}

// metrics scrapes the hub's /metrics.
func (t *telehub) metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.http+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// get returns the size of the answer to an authorised GET of path.
func (t *telehub) get(ctx context.Context, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.http+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return len(b), err
}

// parseMetrics reads the Prometheus text format and returns each sample
// by its full name, labels included
// (`telehub_mqtt_limit_hits_total{limit="topic_bytes"}`).
func parseMetrics(rd io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(rd)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("metrics: malformed line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: line %q: %w", line, err)
		}
		out[strings.TrimSpace(line[:i])] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("metrics: no samples")
	}
	return out, nil
}

// refusalCounters are the families whose growth a flood row reports.
var refusalCounters = []string{"telehub_ingest_rejected_total", "telehub_mqtt_limit_hits_total", "telehub_mqtt_messages_dropped_total"}

// refusals returns the refusal counters that grew from before to after,
// by how much.
func refusals(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for name, v := range after {
		family, _, _ := strings.Cut(name, "{")
		if slices.Contains(refusalCounters, family) && v > before[name] {
			out[name] = v - before[name]
		}
	}
	return out
}

// refusedText writes the refusals of a row as `limit_hits{limit="x"}` n,
// sorted by name.
func refusedText(m map[string]float64) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("`%s` %s", strings.TrimPrefix(n, "telehub_"), num(m[n]))
	}
	return strings.Join(parts, ", ")
}

// acksText writes PUBACK counts by reason code: "5 x 0x00, 145 x 0x97 (quota exceeded)".
func acksText(acks map[byte]int) string {
	codes := make([]byte, 0, len(acks))
	for c := range acks {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%s x 0x%02x", num(float64(acks[c])), c)
		if c == packets.ErrQuotaExceeded.Code {
			parts[i] += " (quota exceeded)"
		}
	}
	return strings.Join(parts, ", ")
}

// floodsMarkdown writes scenario 8.
func (r *Report) floodsMarkdown(w func(string, ...any)) {
	if len(r.Floods) == 0 {
		return
	}
	w("### 8. Floods (memory under the security review's floods)\n\n"+
		"One hub with the default limits (embedded store; only the connect and message rates lifted, as for every hub of the suite, "+
		"so that the caps and not the rates meet the floods), three devices, idle RSS %s after settling. The hub is bin/telehub's source "+
		"built with `-tags pprof`, whose heap profile endpoint (`?gc=1`) runs a collection and reports the heap. Each flood comes from its own "+
		"MQTT 5 client (mochi's packet codec over TCP), which stays connected. RSS (VmRSS) is taken after a collection right before the flood, "+
		"%d s after it (garbage included: what the Go runtime holds until its next collection, at most every 2 minutes), and after a collection "+
		"once it has stopped falling for 2 s (the runtime may return more later: compare the next flood's RSS before); "+
		"heap kept is the growth of the Go heap (HeapAlloc) from one collection to the other. Refused is the growth of "+
		"`telehub_ingest_rejected_total` and `telehub_mqtt_limit_hits_total` over the flood. "+
		"The bound is the documented one (README, docs/architecture.md), computed from the default caps: every flooding client's write "+
		"queue (8,192 x 8 B) and two copies of a packet being read (2 x 256 KiB), plus for the field flood 1,024 names at about 400 B each, "+
		"for the alias flood 16 aliases of 1 KiB topics, for the retained flood 1 MiB of retained topic and payload plus 300 B a message for mochi's own "+
		"bookkeeping; within means the heap kept is. Before the caps, the same floods took the hub from 90 to 330 MB (fields), "+
		"+65 MB (aliases) and +63 MB (retained).\n\n", mb(r.FloodIdleKB), int(floodSettle/time.Second))
	w("| flood | sent | PUBACKs | refused | RSS before | RSS after the flood | RSS after a collection | heap kept | bound | within | |\n" +
		"|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range r.Floods {
		within, after, collected, heap := "", "", "", ""
		if f.AfterKB > 0 {
			after = mb(f.AfterKB)
		}
		if f.HeapAfter > 0 {
			within, collected, heap = yes(f.Within()), mb(f.CollectedKB), fmt.Sprintf("%+.2f MB", float64(f.HeapAfter-f.HeapBefore)/(1<<20))
		}
		note := strings.TrimPrefix(strings.Join([]string{f.Extra, f.Err}, "; "), "; ")
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", f.Flood, f.Sent, acksText(f.Acks), refusedText(f.Refused),
			mb(f.BeforeKB), after, collected, heap, mb(f.BoundKB), within, strings.TrimSuffix(note, "; "))
	}
	w("\n")
}

// floodsTargets writes the floods' row of the targets table.
func (r *Report) floodsTargets(w func(string, ...any)) {
	if len(r.Floods) == 0 {
		return
	}
	ok := true
	var kept []string
	for _, f := range r.Floods {
		ok = ok && f.Within()
		kept = append(kept, fmt.Sprintf("%s %+.2f MB", f.Flood, float64(f.HeapAfter-f.HeapBefore)/(1<<20)))
	}
	w("| field, alias and retained floods leave the heap within the documented bounds | %s | %s |\n", strings.Join(kept, ", "), yes(ok))
}

package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// LineConfig is a paced run of line-protocol writes straight to InfluxDB
// 1.x (/write): the storage ceiling, what the database takes with no broker
// or pipeline in front of it.
type LineConfig struct {
	// URL is the influxd's base URL, DB the database.
	URL, DB string
	// Measurement names the points (default "telemetry").
	Measurement string
	// Devices is how many series the lines spread over.
	Devices int
	// Rate is the offered lines per second, Duration how long.
	Rate     float64
	Duration time.Duration
	// BatchLines is the most lines in one request (default 5000); a
	// partial batch is sent after 100 ms.
	BatchLines int
	// Concurrency is how many requests may be in flight (default 4).
	Concurrency int
}

type lineBatch struct {
	body  []byte
	sents []int64 // Unix ns each line was made
}

// WriteLines offers cfg.Rate lines per second for cfg.Duration, the same
// points the hub would write for the readings of AppendReading, and returns
// what was sent and acknowledged (HTTP 204) with the latency from a line's
// making to its acknowledgement.
func WriteLines(ctx context.Context, cfg LineConfig) (PublishResult, error) {
	if cfg.Rate <= 0 || cfg.Duration <= 0 || cfg.Devices <= 0 {
		return PublishResult{}, errors.New("load: line writes need a positive rate, duration and device count")
	}
	if cfg.Measurement == "" {
		cfg.Measurement = "telemetry"
	}
	if cfg.BatchLines <= 0 {
		cfg.BatchLines = 5000
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency}}
	defer client.CloseIdleConnections()
	u := cfg.URL + "/write?precision=ms&db=" + url.QueryEscape(cfg.DB)
	jobs := make(chan lineBatch, cfg.Concurrency)
	var ack, late Histogram
	var acked, failed atomic.Int64
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Go(func() {
			for b := range jobs {
				resp, err := client.Post(u, "text/plain", bytes.NewReader(b.body))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusNoContent {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				if err != nil {
					failed.Add(int64(len(b.sents)))
					continue
				}
				now := time.Now().UnixNano()
				for _, s := range b.sents {
					ack.Record(time.Duration(now - s))
				}
				acked.Add(int64(len(b.sents)))
			}
		})
	}
	ids := DeviceIDs("bench", cfg.Devices)
	lastTS := make([]int64, cfg.Devices)
	seqs := make([]uint64, cfg.Devices)
	prefix := []byte(cfg.Measurement + ",device_id=")
	var cur lineBatch
	var batchStart time.Time
	var sent int64
	lo, hi := int64(1<<63-1), int64(0)
	flush := func() {
		if len(cur.sents) > 0 {
			jobs <- cur
			cur = lineBatch{}
		}
	}
	start := time.Now()
	total := int64(cfg.Rate * cfg.Duration.Seconds())
	Pace(ctx, Schedule{Start: start, Rate: cfg.Rate, Total: total}, func(k int64, lateBy time.Duration) {
		late.Record(lateBy)
		d := int(k % int64(cfg.Devices))
		now := time.Now()
		ts := max(now.UnixMilli(), lastTS[d]+1)
		lastTS[d] = ts
		seqs[d]++
		lo, hi = min(lo, ts), max(hi, ts)
		if len(cur.sents) == 0 {
			batchStart = now
		}
		cur.body = AppendLine(append(cur.body, prefix...), ids[d], ts, seqs[d], now)
		cur.body = append(cur.body, '\n')
		cur.sents = append(cur.sents, now.UnixNano())
		sent++
		if len(cur.sents) >= cfg.BatchLines || now.Sub(batchStart) >= 100*time.Millisecond {
			flush()
		}
	})
	flush()
	end := time.Now()
	close(jobs)
	wg.Wait()
	res := PublishResult{Rate: cfg.Rate, QoS: 1, Duration: cfg.Duration, Elapsed: end.Sub(start), End: end, Sent: sent,
		Errors: failed.Load(), Acked: acked.Load(), Ack: ack.Summary(), Late: late.Summary(), FirstTS: lo, LastTS: hi}
	res.Unacked = res.Sent - res.Acked
	if sent == 0 {
		res.FirstTS = 0
	}
	return res, ctx.Err()
}

// AppendLine appends the fields and timestamp of a line after its
// measurement and device_id= tag key: the same point as the hub writes for
// the reading of AppendReading (numbers as floats, time in ms).
func AppendLine(b []byte, deviceID string, ts int64, seq uint64, sent time.Time) []byte {
	b = append(b, deviceID...)
	b = append(b, ",device_type=thermostat temperature="...)
	b = strconv.AppendFloat(b, 19+float64(seq%600)/100, 'f', 2, 64)
	b = append(b, ",humidity="...)
	b = strconv.AppendFloat(b, 35+float64(seq%250)/10, 'f', 1, 64)
	b = append(b, ",battery="...)
	b = strconv.AppendInt(b, int64(100-seq/1000%100), 10)
	b = append(b, ",seq="...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ","+SentField+"="...)
	b = strconv.AppendInt(b, sent.UnixMicro(), 10)
	b = append(b, ' ')
	return strconv.AppendInt(b, ts, 10)
}

// Count returns how many points of measurement in database db of the
// influxd at base have a sent_us field and a time in [fromMs, toMs].
func Count(ctx context.Context, base, db, measurement string, fromMs, toMs int64) (int64, error) {
	q := fmt.Sprintf(`SELECT count(%q) FROM %q WHERE time >= %dms AND time <= %dms`, SentField, measurement, fromMs, toMs)
	var r struct {
		Results []struct {
			Error  string `json:"error"`
			Series []struct {
				Values [][]any `json:"values"`
			} `json:"series"`
		} `json:"results"`
	}
	if err := influxQL(ctx, base, db, q, &r); err != nil {
		return 0, err
	}
	if len(r.Results) == 0 {
		return 0, errors.New("load: count: empty answer")
	}
	if r.Results[0].Error != "" {
		return 0, fmt.Errorf("load: count: %s", r.Results[0].Error)
	}
	if len(r.Results[0].Series) == 0 || len(r.Results[0].Series[0].Values) == 0 || len(r.Results[0].Series[0].Values[0]) < 2 {
		return 0, nil
	}
	n, ok := r.Results[0].Series[0].Values[0][1].(json.Number)
	if !ok {
		return 0, fmt.Errorf("load: count: unexpected value %v", r.Results[0].Series[0].Values[0][1])
	}
	return n.Int64()
}

// InfluxQL runs a statement (CREATE DATABASE, DROP DATABASE) on the influxd at base.
func InfluxQL(ctx context.Context, base, db, q string) error {
	var r struct {
		Results []struct {
			Error string `json:"error"`
		} `json:"results"`
	}
	if err := influxQL(ctx, base, db, q, &r); err != nil {
		return err
	}
	for _, res := range r.Results {
		if res.Error != "" {
			return fmt.Errorf("load: %s: %s", q, res.Error)
		}
	}
	return nil
}

func influxQL(ctx context.Context, base, db, q string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/query",
		bytes.NewBufferString(url.Values{"q": {q}, "db": {db}}.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("load: influxql: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("load: influxql %q: %s: %s", q, resp.Status, b)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(out)
}

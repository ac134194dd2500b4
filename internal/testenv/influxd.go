package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Influxd is an influxd process of one test, with one database on it. Unlike
// the shared influxd of NewInflux it may be stopped and started again, on the
// same port and data directory, to simulate an InfluxDB outage. Its methods
// are called from the test's goroutine.
type Influxd struct {
	// Influx is the test's database on this server.
	Influx

	t       testing.TB
	bin     string
	conf    string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
}

// StartInfluxd starts a private influxd (the binary in TELEHUB_TEST_INFLUXD,
// which `make test` sets) on free loopback ports with its data in a temporary
// directory, configured from configs/influxdb-test.conf, creates a database
// on it and stops it when the test ends. Without the binary the test skips,
// or fails under CI.
func StartInfluxd(t testing.TB) *Influxd {
	t.Helper()
	bin := os.Getenv("TELEHUB_TEST_INFLUXD")
	if bin == "" {
		Missing(t, "influxd binary (TELEHUB_TEST_INFLUXD)")
	}
	if _, err := os.Stat(bin); err != nil {
		Missing(t, "influxd binary "+bin)
	}
	tmpl, err := os.ReadFile(filepath.Join(RepoRoot(t), "configs", "influxdb-test.conf"))
	if err != nil {
		t.Fatalf("read influxd config template: %v", err)
	}
	dir := t.TempDir()
	port, rpc := FreePort(t), FreePort(t)
	conf := strings.NewReplacer("@DIR@", dir, "@PORT@", strconv.Itoa(port), "@RPCPORT@", strconv.Itoa(rpc)).Replace(string(tmpl))
	d := &Influxd{t: t, bin: bin, conf: filepath.Join(dir, "influxdb.conf"), logPath: filepath.Join(dir, "influxd.log")}
	if err := os.WriteFile(d.conf, []byte(conf), 0o600); err != nil {
		t.Fatalf("write influxd config: %v", err)
	}
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			t.Logf("private influxd log:\n%s", tail(d.logPath, 4096))
		}
	})
	d.URL = "http://127.0.0.1:" + strconv.Itoa(port)
	d.Start()
	d.Influx = createDatabase(t, d.URL)
	return d
}

// Start starts the server (again) on its port and data directory and returns
// once it answers /ping.
func (d *Influxd) Start() {
	d.t.Helper()
	if d.cmd != nil {
		d.t.Fatal("influxd is already running")
	}
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		d.t.Fatalf("open influxd log: %v", err)
	}
	cmd := exec.Command(d.bin, "-config", d.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		d.t.Fatalf("start influxd: %v", err)
	}
	exited := make(chan struct{})
	go func() { // ends when the process does; Stop and the test's cleanup end it
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	d.cmd, d.exited = cmd, exited
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get(d.URL + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return
			}
		}
		select {
		case <-exited:
			d.cmd = nil
			d.t.Fatalf("influxd exited while starting; its log:\n%s", tail(d.logPath, 4096))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("influxd did not answer /ping within 60s; its log:\n%s", tail(d.logPath, 4096))
		}
	}
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 s) and waits for it
// to exit. Connections to its port are refused until Start. Safe to call when
// it is not running.
func (d *Influxd) Stop() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
}

// CountByDevice returns, per device_id, the number of points of measurement
// that have field.
func (db Influx) CountByDevice(measurement, field string) (map[string]int, error) {
	r, err := db.InfluxQL(fmt.Sprintf(`SELECT count(%q) FROM %q GROUP BY device_id`, field, measurement))
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	if len(r.Results) == 0 {
		return out, nil
	}
	for _, s := range r.Results[0].Series {
		if len(s.Values) == 0 || len(s.Values[0]) < 2 {
			return nil, fmt.Errorf("count for %v: unexpected row %v", s.Tags, s.Values)
		}
		n, ok := s.Values[0][1].(float64)
		if !ok {
			return nil, fmt.Errorf("count for %v: %T is not a number", s.Tags, s.Values[0][1])
		}
		out[s.Tags["device_id"]] = int(n)
	}
	return out, nil
}

// RepoRoot returns the module root: the nearest directory at or above the
// test's working directory that holds go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("working directory: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's working directory")
		}
		dir = parent
	}
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

// FreePort returns a loopback TCP port that is free now and was not returned
// before in this process. It is drawn below the kernel's ephemeral range, so
// that an outgoing connection cannot take it while a server that listened on
// it is down and about to listen again.
func FreePort(t testing.TB) int {
	t.Helper()
	low, _ := ephemeralRange()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		p := 10000 + rand.IntN(low-10000)
		if ports[p] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l.Close()
		ports[p] = true
		return p
	}
	t.Fatal("no free loopback port found")
	return 0
}

// ephemeralRange returns the kernel's range of ports for outgoing
// connections (Linux defaults when it cannot be read).
func ephemeralRange() (low, high int) {
	low, high = 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return low, high
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return low, high
	}
	l, err1 := strconv.Atoi(f[0])
	h, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || l <= 11000 {
		return low, high
	}
	return l, h
}

// tail returns the last n bytes of a file, for failure messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil {
		return err.Error()
	}
	return string(b)
}

// RequireCounts waits until field of measurement has at least want[id]
// points for every device in want, then fails the test unless the counts are
// exactly want: no point missing, none stored twice (a point is its series
// and timestamp, so a reading stored twice would be two timestamps), and no
// device that want does not name.
func (db Influx) RequireCounts(t testing.TB, measurement, field string, want map[string]int, timeout time.Duration) {
	t.Helper()
	db.RequireCountsBetween(t, measurement, field, want, want, timeout)
}

// RequireCountsBetween is RequireCounts with a range: it waits until every
// device in low has at least low[id] points, then fails the test unless each
// device has between low[id] and high[id] points and no other device has any.
func (db Influx) RequireCountsBetween(t testing.TB, measurement, field string, low, high map[string]int, timeout time.Duration) {
	t.Helper()
	enough := func() bool {
		got, err := db.CountByDevice(measurement, field)
		if err != nil {
			return false
		}
		for id, n := range low {
			if got[id] < n {
				return false
			}
		}
		return true
	}
	// Past the deadline the comparison below says what is missing.
	for deadline := time.Now().Add(timeout); !enough() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	got, err := db.CountByDevice(measurement, field)
	if err != nil {
		t.Fatalf("count stored points: %v", err)
	}
	var diff []string
	for id, lo := range low {
		if hi := high[id]; got[id] < lo || got[id] > hi {
			if lo == hi {
				diff = append(diff, fmt.Sprintf("%s: stored %d, want %d", id, got[id], lo))
			} else {
				diff = append(diff, fmt.Sprintf("%s: stored %d, want %d to %d", id, got[id], lo, hi))
			}
		}
	}
	for id, n := range got {
		if _, ok := low[id]; !ok {
			diff = append(diff, fmt.Sprintf("%s: stored %d, want none", id, n))
		}
	}
	if len(diff) > 0 {
		slices.Sort(diff)
		t.Fatalf("stored points differ from the expected counts:\n%s", strings.Join(diff, "\n"))
	}
}

package testenv

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NATSCluster returns the client URLs of the shared three-server NATS
// JetStream cluster that `make test` starts (scripts/nats.sh,
// TELEHUB_TEST_NATS_URLS). Tests on it share the servers: each uses its own
// stream, bucket and consumer names and deletes them when it ends. Without
// the cluster the test skips, or fails under CI.
func NATSCluster(t testing.TB) []string {
	t.Helper()
	u := os.Getenv("TELEHUB_TEST_NATS_URLS")
	if u == "" {
		Missing(t, "NATS cluster (TELEHUB_TEST_NATS_URLS)")
	}
	return strings.Split(u, ",")
}

// NATSServers is a private three-server NATS JetStream cluster of one test,
// whose servers the test may kill and start again (on the same ports and
// store directories) to simulate a dead machine. Its methods are called from
// the test's goroutine.
type NATSServers struct {
	t       testing.TB
	bin     string
	servers []*natsServer
}

type natsServer struct {
	name    string
	conf    string
	logPath string
	port    int
	http    int
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
}

// StartNATSCluster starts a private cluster of three nats-servers (the
// binary in TELEHUB_TEST_NATS_SERVER, which `make test` sets) on free
// loopback ports, with their stores in a temporary directory, configured
// from configs/nats-test.conf, waits until JetStream has a meta leader that
// every server is current with, and kills the servers when the test ends.
// Without the binary the test skips, or fails under CI.
func StartNATSCluster(t testing.TB) *NATSServers {
	t.Helper()
	bin := os.Getenv("TELEHUB_TEST_NATS_SERVER")
	if bin == "" {
		Missing(t, "nats-server binary (TELEHUB_TEST_NATS_SERVER)")
	}
	if _, err := os.Stat(bin); err != nil {
		Missing(t, "nats-server binary "+bin)
	}
	tmpl, err := os.ReadFile(filepath.Join(RepoRoot(t), "configs", "nats-test.conf"))
	if err != nil {
		t.Fatalf("read nats-server config template: %v", err)
	}
	dir := t.TempDir()
	const n = 3
	c := &NATSServers{t: t, bin: bin}
	cluster := make([]int, n)
	for i := range n {
		c.servers = append(c.servers, &natsServer{
			name:    "n" + strconv.Itoa(i),
			conf:    filepath.Join(dir, fmt.Sprintf("n%d.conf", i)),
			logPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i)),
			port:    FreePort(t),
			http:    FreePort(t),
		})
		cluster[i] = FreePort(t)
	}
	for i, s := range c.servers {
		var routes []string
		for j, p := range cluster {
			if j != i {
				routes = append(routes, fmt.Sprintf("%q", "nats-route://127.0.0.1:"+strconv.Itoa(p)))
			}
		}
		conf := strings.NewReplacer(
			"@NAME@", s.name,
			"@DIR@", filepath.Join(dir, s.name),
			"@PORT@", strconv.Itoa(s.port),
			"@HTTPPORT@", strconv.Itoa(s.http),
			"@CLUSTERPORT@", strconv.Itoa(cluster[i]),
			"@ROUTES@", strings.Join(routes, ", "),
		).Replace(string(tmpl))
		if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
			t.Fatalf("write nats-server config: %v", err)
		}
	}
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		for i, s := range c.servers {
			c.Kill(i)
			if t.Failed() {
				t.Logf("private nats-server %s log:\n%s", s.name, tail(s.logPath, 4096))
			}
		}
	})
	for i := range c.servers {
		c.Start(i)
	}
	c.WaitHealthy(60 * time.Second)
	return c
}

// URLs returns the client URLs of the three servers, in the order of their
// indexes.
func (c *NATSServers) URLs() []string {
	urls := make([]string, len(c.servers))
	for i := range c.servers {
		urls[i] = c.URL(i)
	}
	return urls
}

// URL returns the client URL of server i.
func (c *NATSServers) URL(i int) string {
	return "nats://127.0.0.1:" + strconv.Itoa(c.servers[i].port)
}

// Name returns the server_name of server i ("n0", "n1", "n2"), as JetStream
// reports it (a stream's cluster leader, for instance).
func (c *NATSServers) Name(i int) string { return c.servers[i].name }

// Index returns the index of the server named name, or fails the test.
func (c *NATSServers) Index(name string) int {
	c.t.Helper()
	for i, s := range c.servers {
		if s.name == name {
			return i
		}
	}
	c.t.Fatalf("no nats-server named %q in the cluster", name)
	return -1
}

// Start starts server i (again) on its ports and store directory and returns
// once it answers its monitoring endpoint with JetStream enabled. It does not
// wait for a meta leader, which needs two running servers: WaitHealthy does.
func (c *NATSServers) Start(i int) {
	c.t.Helper()
	s := c.servers[i]
	if s.cmd != nil {
		c.t.Fatalf("nats-server %s is already running", s.name)
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatalf("open nats-server log: %v", err)
	}
	cmd := exec.Command(c.bin, "-c", s.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatalf("start nats-server %s: %v", s.name, err)
	}
	exited := make(chan struct{})
	go func() { // ends when the process does; Kill and the test's cleanup end it
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	c.waitFor(i, "js-server-only=true", 60*time.Second)
}

// Kill kills server i (SIGKILL, like a machine that dies) and waits for it to
// exit. Safe to call when it is not running.
func (c *NATSServers) Kill(i int) {
	s := c.servers[i]
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// WaitHealthy waits until every running server answers /healthz: JetStream
// has a meta leader, the server is current with it, and its replicas of
// streams and consumers are current (a restarted server has caught up).
func (c *NATSServers) WaitHealthy(timeout time.Duration) {
	c.t.Helper()
	for i, s := range c.servers {
		if s.cmd != nil {
			c.waitFor(i, "", timeout)
		}
	}
}

// waitFor polls server i's /healthz with query until it answers 200, and
// fails the test when the server exits or timeout passes.
func (c *NATSServers) waitFor(i int, query string, timeout time.Duration) {
	c.t.Helper()
	s := c.servers[i]
	u := fmt.Sprintf("http://127.0.0.1:%d/healthz?%s", s.http, query)
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for {
		resp, err := client.Get(u)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status + " " + string(b)
		}
		select {
		case <-s.exited:
			s.cmd = nil
			c.t.Fatalf("nats-server %s exited; its log:\n%s", s.name, tail(s.logPath, 4096))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("nats-server %s not healthy within %v (%s); its log:\n%s", s.name, timeout, last, tail(s.logPath, 4096))
		}
	}
}

package broker

import (
	"bytes"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// The hub as the plain MQTT broker of a site: anonymous clients (and
// devices) get the whole of MQTT 3.1.1 and 5, with the hub's hooks in place.

func TestRetainedMessages(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowAnonymous = true })
	pub, err := f.dial(t, "ret-pub", "", "", nil)
	require.NoError(t, err)
	pub.publish(t, "site/door", 1, true, "open")

	late, err := f.dial(t, "ret-late", "", "", nil)
	require.NoError(t, err)
	late.subscribe(t, "site/#", 1)
	testenv.Eventually(t, 5*time.Second, "retained message on subscribe", func() bool { return late.received("site/door") })
	late.mu.Lock()
	m := late.got[0]
	late.mu.Unlock()
	require.True(t, m.Retained())
	require.Equal(t, "open", string(m.Payload()))

	pub.publish(t, "site/door", 1, true, "") // clears it
	later, err := f.dial(t, "ret-later", "", "", nil)
	require.NoError(t, err)
	later.subscribe(t, "site/#", 1)
	// The client's own publish comes after anything its subscription sent.
	later.publish(t, "site/marker", 1, false, "m")
	testenv.Eventually(t, 5*time.Second, "marker", func() bool { return later.received("site/marker") })
	// The clearing publish itself may still reach the new subscription as
	// a live message (mochi writes the PUBACK before it forwards): empty and
	// not retained. What must not come is the retained "open".
	later.mu.Lock()
	defer later.mu.Unlock()
	for _, m := range later.got {
		require.False(t, m.Retained(), "the cleared retained message is gone: got %s %q", m.Topic(), m.Payload())
		require.NotEqual(t, "open", string(m.Payload()))
	}
}

func TestQoS2ExactlyOnce(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowAnonymous = true })
	tok := f.device(t, "q2")
	sub, err := f.dial(t, "q2-sub", "", "", nil)
	require.NoError(t, err)
	require.Equal(t, byte(2), sub.subscribe(t, "site/q2", 2))
	pub, err := f.dial(t, "q2-pub", "", "", nil)
	require.NoError(t, err)
	for i := range 10 {
		pub.publish(t, "site/q2", 2, false, strconv.Itoa(i))
	}
	testenv.Eventually(t, 5*time.Second, "10 messages", func() bool { return len(sub.topics()) >= 10 })
	sub.mu.Lock()
	for i, m := range sub.got {
		require.Equal(t, byte(2), m.Qos())
		require.Equal(t, strconv.Itoa(i), string(m.Payload()), "in order, once each")
	}
	sub.mu.Unlock()
	require.Len(t, sub.topics(), 10)

	// A device's QoS 2 telemetry is stored once.
	dev, err := f.dial(t, "", "q2", tok, nil)
	require.NoError(t, err)
	dev.publish(t, "devices/q2/telemetry", 2, false, `{"v":1}`)
	require.Equal(t, []string{`{"v":1}`}, f.ingested.of("q2"))
}

// TestPersistentSession: a device with a persistent session (clean session
// off) gets the commands published while it was offline when it comes back.
func TestPersistentSession(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.device(t, "ps")
	persistent := func(o *paho.ClientOptions) { o.SetCleanSession(false) }
	dev, err := f.dial(t, "ps-session", "ps", tok, persistent)
	require.NoError(t, err)
	require.Equal(t, byte(1), dev.subscribe(t, "devices/ps/commands/+", 1))
	dev.Disconnect(100)
	// Publish only once the broker has seen the device go, so the commands
	// are queued in its session rather than racing the old connection.
	testenv.Eventually(t, 5*time.Second, "the broker saw the device go", func() bool {
		cl, ok := f.b.Server().Clients.Get("ps-session")
		return ok && cl.Closed()
	})

	ctl, err := f.dial(t, "", "ctl", f.integration(t, "ctl", []string{"devices/+/commands/+"}, nil), nil)
	require.NoError(t, err)
	ctl.publish(t, "devices/ps/commands/c1", 1, false, `{"name":"reboot"}`)
	ctl.publish(t, "devices/ps/commands/c2", 1, false, `{"name":"blink"}`)

	back, err := f.dial(t, "ps-session", "ps", tok, persistent)
	require.NoError(t, err)
	testenv.Eventually(t, 5*time.Second, "queued commands delivered", func() bool { return len(back.topics()) >= 2 })
	// mochi resends a resumed session's in-flight messages in no set order.
	require.ElementsMatch(t, []string{"devices/ps/commands/c1", "devices/ps/commands/c2"}, back.topics())
}

// TestWill: a client that vanishes without DISCONNECT (mosquitto_sub killed)
// has its will published; one that disconnects cleanly does not.
func TestWill(t *testing.T) {
	bin := testenv.Tool(t, "mosquitto_sub")
	f := newFixture(t, func(c *Config) { c.AllowAnonymous = true })
	obs, err := f.dial(t, "will-obs", "", "", nil)
	require.NoError(t, err)
	obs.subscribe(t, "site/+/status", 1)
	host, port := hostPort(t, f.b.Addr())
	for _, tc := range []struct {
		name   string
		signal syscall.Signal
		will   bool
	}{
		{"killed", syscall.SIGKILL, true},
		{"clean exit", syscall.SIGINT, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "will-" + strings.ReplaceAll(tc.name, " ", "-")
			p := startProc(t, bin, "-h", host, "-p", port, "-i", id, "-t", "site/idle", "-q", "1",
				"--will-topic", "site/"+id+"/status", "--will-payload", "offline", "--will-qos", "1")
			waitSubscribed(t, f, id)
			require.NoError(t, p.cmd.Process.Signal(tc.signal))
			p.cmd.Wait()
			marker := "site/" + id + "-marker/status"
			pub, err := f.dial(t, id+"-pub", "", "", nil)
			require.NoError(t, err)
			if tc.will {
				testenv.Eventually(t, 5*time.Second, "will published", func() bool { return obs.received("site/" + id + "/status") })
			}
			testenv.Eventually(t, 5*time.Second, "client gone", func() bool { _, ok := f.b.srv.Clients.Get(id); return !ok })
			pub.publish(t, marker, 1, false, "m")
			testenv.Eventually(t, 5*time.Second, "marker", func() bool { return obs.received(marker) })
			require.Equal(t, tc.will, obs.received("site/"+id+"/status"))
		})
	}
}

// TestMQTT5SharedSubscription: two mosquitto_sub -V 5 share
// $share/workers/site/jobs; each message goes to exactly one of them.
func TestMQTT5SharedSubscription(t *testing.T) {
	bin := testenv.Tool(t, "mosquitto_sub")
	f := newFixture(t, func(c *Config) { c.AllowAnonymous = true })
	host, port := hostPort(t, f.b.Addr())
	var subs []*proc
	for _, id := range []string{"worker-1", "worker-2"} {
		subs = append(subs, startProc(t, bin, "-V", "5", "-h", host, "-p", port, "-i", id, "-q", "1",
			"-t", "$share/workers/site/jobs"))
		waitSubscribed(t, f, id)
	}
	pub, err := f.dial(t, "jobs-pub", "", "", nil)
	require.NoError(t, err)
	const n = 40
	for i := range n {
		pub.publish(t, "site/jobs", 1, false, "job-"+strconv.Itoa(i))
	}
	total := func() int { return len(subs[0].lines()) + len(subs[1].lines()) }
	testenv.Eventually(t, 10*time.Second, "all jobs delivered", func() bool { return total() >= n })
	seen := map[string]bool{}
	for _, s := range subs {
		require.NotEmpty(t, s.lines(), "both workers get work")
		for _, l := range s.lines() {
			require.False(t, seen[l], "job %s delivered twice", l)
			seen[l] = true
		}
	}
	require.Len(t, seen, n)
}

// TestMQTT5TopicAliases: mosquitto_pub -V 5 with a topic alias sends the
// topic once and then only the alias. The device's telemetry is still
// ingested, other subscribers get the real topic, and an alias cannot carry
// a publish past the ACL. (Aliases from the broker to a client are tested
// with MQTT.js in cmd/telehub/app: libmosquitto does not accept them.)
func TestMQTT5TopicAliases(t *testing.T) {
	pubBin := testenv.Tool(t, "mosquitto_pub")
	f := newFixture(t, func(c *Config) { c.AllowAnonymous = true })
	tok := f.device(t, "al")
	f.device(t, "other")
	host, port := hostPort(t, f.b.Addr())
	obs, err := f.dial(t, "", "obs", f.integration(t, "obs", nil, []string{"#"}), nil)
	require.NoError(t, err)
	obs.subscribe(t, "#", 1)

	run := func(user, pass, topic, stdin string) string {
		args := []string{"-V", "5", "-h", host, "-p", port, "-q", "1", "-t", topic, "-D", "publish", "topic-alias", "1", "-l"}
		if user != "" {
			args = append(args, "-u", user, "-P", pass)
		}
		cmd := exec.Command(pubBin, args...)
		cmd.Stdin = strings.NewReader(stdin)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	run("al", tok, "devices/al/telemetry", "{\"v\":1}\n{\"v\":2}\n{\"v\":3}\n")
	testenv.Eventually(t, 5*time.Second, "aliased telemetry ingested", func() bool { return len(f.ingested.of("al")) == 3 })
	require.Equal(t, []string{`{"v":1}`, `{"v":2}`, `{"v":3}`}, f.ingested.of("al"))

	run("", "", "site/aliased", "a\nb\nc\n")
	testenv.Eventually(t, 5*time.Second, "aliased messages delivered", func() bool { return len(obs.topics()) >= 6 })

	// The first publish (topic and alias) is refused, so the alias is never
	// bound; the ones with only the alias go nowhere.
	out := run("al", tok, "devices/other/telemetry", "{\"v\":9}\n{\"v\":10}\n")
	require.Contains(t, out, "not authorized")
	obs2, err := f.dial(t, "", "al", tok, nil)
	require.NoError(t, err)
	obs2.publish(t, "devices/al/marker", 1, false, "m")
	testenv.Eventually(t, 5*time.Second, "marker", func() bool { return obs.received("devices/al/marker") })
	require.Equal(t, []string{
		"devices/al/telemetry", "devices/al/telemetry", "devices/al/telemetry",
		"site/aliased", "site/aliased", "site/aliased", "devices/al/marker",
	}, obs.topics())
	require.Empty(t, f.ingested.of("other"))
}

// proc is a client process whose output lines are collected.
type proc struct {
	cmd *exec.Cmd
	out *lineBuffer
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), out: &lineBuffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(t, p.cmd.Start())
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	})
	return p
}

func (p *proc) lines() []string { return p.out.lines() }

// lineBuffer is an io.Writer that collects lines. Safe for concurrent use.
type lineBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lineBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSuffix(b.buf.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// waitSubscribed waits until the client with this ID holds a subscription.
func waitSubscribed(t *testing.T, f *fixture, clientID string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, clientID+" subscribed", func() bool {
		cl, ok := f.b.srv.Clients.Get(clientID)
		return ok && cl.State.Subscriptions.Len() > 0
	})
}

func hostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	require.Positive(t, i)
	return addr[:i], addr[i+1:]
}

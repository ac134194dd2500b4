package forward

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/control"
	"github.com/telehub/telehub/devices/topics"
)

// Passing desired state down: the forwarder's connection subscribes
// upstream to the desired state of every device (the upstream's ACL
// decides which it gets). A Telehub publishes each device's desired state
// retained, so every (re)connection receives the current one of each
// device at once, and each change as it is made. For a device registered
// here whose desired state differs, the forwarder sets it in this hub's
// state service, which stores it and publishes it retained to the device,
// as if an operator had set it here. The upstream owns the desired state of
// the devices it sets it for: a local change is overwritten by the next
// change upstream, or by the upstream's current one at the next connection.
//
// Each message is taken at once (the handler only records it) and applied
// by one goroutine per connection, newest version per device first come:
// a crash before it is applied loses nothing, since the retained message
// comes again with the next connection.
const (
	// DesiredFilter is the subscription made upstream.
	DesiredFilter = topics.DesiredFilter
)

// States is the device state service of this hub that desired state from
// the upstream is applied to (control.States).
type States interface {
	Get(deviceID string) (control.State, bool)
	SetDesired(deviceID string, desired json.RawMessage, ifVersion *uint64, by string) (control.State, error)
	OnReported(fn func(deviceID string))
	ReportedDevices() []string
}

var _ States = (*control.States)(nil)

// stateMetrics count the desired states passed down.
type stateMetrics struct {
	DesiredApplied   prometheus.Counter
	DesiredUnchanged prometheus.Counter
	DesiredIgnored   prometheus.Counter
	DesiredRefused   prometheus.Counter
	ReportedSent     prometheus.Counter
	StateDenied      prometheus.Counter
}

func newStateMetrics(r prometheus.Registerer) *stateMetrics {
	const help = "Desired states received from the upstream, by outcome: applied here, unchanged (already the device's desired state here), ignored (device not registered here) or refused (not a desired state document, or not storable)."
	f := promauto.With(r)
	desired := f.NewCounterVec(prometheus.CounterOpts{Name: "telehub_forward_desired_total", Help: help}, []string{"outcome"})
	return &stateMetrics{
		DesiredApplied:   desired.WithLabelValues("applied"),
		DesiredUnchanged: desired.WithLabelValues("unchanged"),
		DesiredIgnored:   desired.WithLabelValues("ignored"),
		DesiredRefused:   desired.WithLabelValues("refused"),
		ReportedSent:     f.NewCounter(prometheus.CounterOpts{Name: "telehub_forward_reported_total", Help: "Reported states of devices here published to the upstream (each change, and every device's on each connection)."}),
		StateDenied:      f.NewCounter(prometheus.CounterOpts{Name: "telehub_forward_desired_subscribe_denied_total", Help: "Connections on which the upstream refused the desired state subscription."}),
	}
}

// stateRoute is what RouteState sets; the zero value routes nothing.
type stateRoute struct {
	once   sync.Once
	ready  chan struct{} // closed by RouteState
	states States        // read after ready is closed
	m      *stateMetrics
	up     reportedQueue // devices whose reported state is to go upstream
}

// RouteState makes the forwarder apply the desired state the upstream
// publishes for devices registered here to states. Call it once, before or
// after Start; without it (or with Config.State off) the forwarder does not
// subscribe to desired state upstream.
func (f *Forwarder) RouteState(states States) {
	if !f.cfg.State || states == nil {
		return
	}
	f.state.once.Do(func() {
		f.state.states = states
		states.OnReported(func(id string) { f.state.up.mark(id) })
		close(f.state.ready)
	})
}

// reportedQueue is the set of devices whose reported state has changed
// since it was last published upstream. Safe for concurrent use.
type reportedQueue struct {
	mu   sync.Mutex
	ids  map[string]struct{}
	wake chan struct{} // set by newForwarder
}

func (q *reportedQueue) mark(ids ...string) {
	q.mu.Lock()
	if q.ids == nil {
		q.ids = map[string]struct{}{}
	}
	for _, id := range ids {
		q.ids[id] = struct{}{}
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *reportedQueue) take() map[string]struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	ids := q.ids
	q.ids = nil
	return ids
}

// relayReported passes the state devices here report up to the upstream:
// every device's on connecting, then each change, on
// devices/{id}/state, which a Telehub upstream takes from an integration as
// the device's own report. QoS 0 on purpose: reported state is a latest
// value that the next connection sends again anyway, and an MQTT 3.1.1
// broker closes the connection of a QoS 1 publish its ACL refuses, which
// would stop the telemetry too where the upstream does not allow the topic.
func (f *Forwarder) relayReported(ctx context.Context, c paho.Client) {
	select {
	case <-f.state.ready:
	case <-ctx.Done():
		return
	}
	q := &f.state.up
	q.mark(f.state.states.ReportedDevices()...)
	for {
		for id := range q.take() {
			st, ok := f.state.states.Get(id)
			if !ok || st.ReportedVersion == 0 {
				continue
			}
			b, err := json.Marshal(st.Reported)
			if err != nil {
				continue
			}
			c.Publish(topics.State(id), 0, false, b)
			f.state.m.ReportedSent.Inc()
		}
		select {
		case <-q.wake:
		case <-ctx.Done():
			return
		}
	}
}

// desiredUpdate is a desired state received for a device.
type desiredUpdate struct {
	version uint64
	state   json.RawMessage
}

// desiredQueue holds, per device, the newest desired state received on one
// connection and not yet applied. It is bounded by the devices the upstream
// lets the edge see. Safe for concurrent use.
type desiredQueue struct {
	mu      sync.Mutex
	seen    map[string]uint64 // newest version taken per device on this connection
	pending map[string]desiredUpdate
	wake    chan struct{}
}

func newDesiredQueue() *desiredQueue {
	return &desiredQueue{seen: map[string]uint64{}, pending: map[string]desiredUpdate{}, wake: make(chan struct{}, 1)}
}

// put records u for a device unless a newer version was already taken
// (messages of one connection may be handled out of order).
func (q *desiredQueue) put(devID string, u desiredUpdate) {
	q.mu.Lock()
	if v, ok := q.seen[devID]; ok && u.version <= v {
		q.mu.Unlock()
		return
	}
	q.seen[devID] = u.version
	q.pending[devID] = u
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns what is pending and empties the queue.
func (q *desiredQueue) take() map[string]desiredUpdate {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return nil
	}
	p := q.pending
	q.pending = map[string]desiredUpdate{}
	return p
}

// routeDesired subscribes upstream to desired state once it is routed,
// then applies what arrives until ctx ends. A refusal leaves the rest of
// the connection working: it is logged and counted.
func (f *Forwarder) routeDesired(ctx context.Context, c paho.Client) {
	select {
	case <-f.state.ready:
	case <-ctx.Done():
		return
	}
	q := newDesiredQueue()
	if !f.subscribeUpstream(ctx, c, DesiredFilter, func(_ paho.Client, m paho.Message) { f.onDesired(q, m) },
		"desired state set upstream", "desired state",
		"On a Telehub upstream, let the integration subscribe to "+DesiredFilter+", or set forward.state: false", f.state.m.StateDenied) {
		return
	}
	f.logger.Info("passing desired state from the upstream to devices here", "filter", DesiredFilter)
	for {
		for id, u := range q.take() {
			f.applyDesired(id, u)
		}
		select {
		case <-q.wake:
		case <-ctx.Done():
			return
		}
	}
}

// onDesired takes a retained desired state message from the upstream; it
// runs on a goroutine of the MQTT client and does not block.
func (f *Forwarder) onDesired(q *desiredQueue, m paho.Message) {
	devID, rest, ok := topics.Split(m.Topic())
	if !ok || rest != topics.RestDesired {
		return
	}
	if len(bytes.TrimSpace(m.Payload())) == 0 {
		return // cleared: the device was deleted upstream; its state here stays
	}
	var msg struct {
		Version uint64          `json:"version"`
		State   json.RawMessage `json:"state"`
	}
	if err := json.Unmarshal(m.Payload(), &msg); err != nil || len(msg.State) == 0 || msg.State[0] != '{' {
		f.state.m.DesiredRefused.Inc()
		f.logger.Warn("desired state from the upstream is not a desired state document, ignored", "device_id", devID, "err", err)
		return
	}
	q.put(devID, desiredUpdate{version: msg.Version, state: msg.State})
}

// applyDesired sets a device's desired state here unless it already is the
// upstream's.
func (f *Forwarder) applyDesired(devID string, u desiredUpdate) {
	cur, ok := f.state.states.Get(devID)
	if !ok {
		f.state.m.DesiredIgnored.Inc()
		f.logger.Debug("desired state from the upstream for a device not registered here ignored", "device_id", devID)
		return
	}
	if sameDocument(cur.Desired, u.state) {
		f.state.m.DesiredUnchanged.Inc()
		return
	}
	_, err := f.state.states.SetDesired(devID, u.state, nil, "upstream "+f.cfg.Username)
	var ve *devices.ValidationError
	switch {
	case errors.Is(err, devices.ErrNotFound):
		f.state.m.DesiredIgnored.Inc()
	case errors.As(err, &ve):
		f.state.m.DesiredRefused.Inc()
		f.logger.Warn("desired state from the upstream refused here", "device_id", devID, "err", err)
	case err != nil:
		// Not stored: the retained message brings it again with the next
		// connection.
		f.state.m.DesiredRefused.Inc()
		f.logger.Error("store desired state from the upstream", "device_id", devID, "err", err)
	default:
		f.state.m.DesiredApplied.Inc()
		f.logger.Debug("desired state from the upstream applied", "device_id", devID, "upstream_version", u.version)
	}
}

// sameDocument reports whether a desired state here and a JSON object from
// the upstream are the same document (numbers compared by value).
func sameDocument(cur map[string]any, doc json.RawMessage) bool {
	dec := json.NewDecoder(bytes.NewReader(doc))
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return false
	}
	a, err1 := json.Marshal(normalizeJSON(cur))
	b, err2 := json.Marshal(normalizeJSON(v))
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

// normalizeJSON turns json.Number values into float64, so that documents
// decoded either way marshal alike (maps marshal with sorted keys).
func normalizeJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		if f, err := x.Float64(); err == nil {
			return f
		}
		return x.String()
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalizeJSON(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalizeJSON(e)
		}
		return out
	}
	return v
}

package firmwaresim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Errors returned by Fleet.Run.
var (
	// ErrProvisioning means no device of the fleet could be provisioned, so
	// the fleet never started publishing.
	ErrProvisioning = errors.New("provisioning failed")
	// ErrAlreadyRun means Run was called on a Fleet that already ran.
	ErrAlreadyRun = errors.New("fleet already ran")
)

// Seed streams: each device kind draws from its own PCG stream, so adding
// thermostats does not change the wearables' readings.
const (
	thermostatStream = 1 << 32
	wearableStream   = 2 << 32
)

// Fixed MQTT client settings.
const (
	mqttConnectTimeout = 10 * time.Second
	mqttKeepAlive      = 30 * time.Second
	mqttWriteTimeout   = 5 * time.Second
	disconnectQuiesce  = 250 // ms
	httpTimeout        = 15 * time.Second
)

// Config configures a Fleet. Start from DefaultConfig.
type Config struct {
	// HubURL is the base URL of the hub's HTTP API, e.g. http://localhost:8080.
	HubURL string `yaml:"hub_url"`
	// MQTTURL is the broker URL, e.g. tcp://localhost:1883 (tcp, mqtt, ssl,
	// tls, mqtts, ws and wss are accepted).
	MQTTURL string `yaml:"mqtt_url"`
	// Token is the hub's admin API token used to provision devices. Load it
	// from a file or the environment, never from a config file.
	Token string `yaml:"-"`
	// Thermostats is the number of simulated thermostats.
	Thermostats int `yaml:"thermostats"`
	// Wearables is the number of simulated wearables.
	Wearables int `yaml:"wearables"`
	// Interval is the time between two readings of one device.
	Interval time.Duration `yaml:"interval"`
	// QoS is the MQTT QoS of telemetry publishes: 0, 1 or 2.
	QoS byte `yaml:"qos"`
	// Duration bounds the publishing phase, which starts once the devices
	// are provisioned and connected (or ConnectTimeout has passed); 0
	// publishes until Run's context is done.
	Duration time.Duration `yaml:"duration"`
	// IDPrefix starts every device ID: "sim" gives sim-thermo-0001 and
	// sim-wearable-0001. May be empty.
	IDPrefix string `yaml:"id_prefix"`
	// Seed makes the readings and start jitter reproducible.
	Seed int64 `yaml:"seed"`
	// ProvisionConcurrency bounds the API requests in flight while provisioning
	// and the disconnects in flight at shutdown.
	ProvisionConcurrency int `yaml:"provision_concurrency"`
	// ProvisionAttempts is how often provisioning one device is tried when the
	// hub is unreachable or answers 5xx or 429.
	ProvisionAttempts int `yaml:"provision_attempts"`
	// MaxPendingAcks bounds the publishes of one device waiting for their
	// acknowledgement (while the hub is away, QoS 1 readings queue up). Past
	// it, new readings are dropped and counted as errors.
	MaxPendingAcks int `yaml:"max_pending_acks"`
	// DrainTimeout bounds how long Run waits at the end for outstanding
	// acknowledgements; readings still unacknowledged then count as errors.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// ConnectTimeout bounds how long Run waits for the devices' first MQTT
	// connection before it starts publishing anyway (QoS 1 readings then
	// queue until the connection is up; QoS 0 readings are dropped).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// ReconnectInterval is the longest wait between two MQTT connection
	// attempts of one device.
	ReconnectInterval time.Duration `yaml:"reconnect_interval"`
	// TimeScale runs the simulated physics this many times faster than
	// real time (a thermostat's room warms in seconds at 600); 0 or 1 is
	// real time. Timestamps and publish intervals stay real.
	TimeScale float64 `yaml:"time_scale"`
	// ThermostatModel, when set, makes each thermostat's model instead of
	// the simulated one: fleetsim --hardware passes a thermostat on a real
	// sensor and relay (package hardware).
	ThermostatModel func() Device `yaml:"-"`
}

// DefaultConfig returns the defaults: a hub on localhost, 5 thermostats and
// 5 wearables publishing every second with QoS 1 until stopped.
func DefaultConfig() Config {
	return Config{
		HubURL:               "http://localhost:8080",
		MQTTURL:              "tcp://localhost:1883",
		Thermostats:          5,
		Wearables:            5,
		Interval:             time.Second,
		QoS:                  1,
		IDPrefix:             "sim",
		Seed:                 1,
		ProvisionConcurrency: 8,
		ProvisionAttempts:    5,
		MaxPendingAcks:       1000,
		DrainTimeout:         5 * time.Second,
		ConnectTimeout:       10 * time.Second,
		ReconnectInterval:    5 * time.Second,
	}
}

// Validate checks the configuration without doing any I/O.
func (c Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.HubURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("hub URL %q: want http(s)://host[:port]", c.HubURL))
	}
	if u, err := url.Parse(c.MQTTURL); err != nil || u.Host == "" {
		errs = append(errs, fmt.Errorf("mqtt URL %q: want scheme://host:port", c.MQTTURL))
	} else {
		switch u.Scheme {
		case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
		default:
			errs = append(errs, fmt.Errorf("mqtt URL %q: unsupported scheme %q", c.MQTTURL, u.Scheme))
		}
	}
	if c.Token == "" {
		errs = append(errs, errors.New("admin token is empty"))
	}
	if c.Thermostats < 0 || c.Wearables < 0 || c.Thermostats+c.Wearables == 0 {
		errs = append(errs, fmt.Errorf("device counts %d thermostats, %d wearables: want at least one device and no negative count",
			c.Thermostats, c.Wearables))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval %v: must be positive", c.Interval))
	}
	if c.QoS > 2 {
		errs = append(errs, fmt.Errorf("qos %d: must be 0, 1 or 2", c.QoS))
	}
	if c.Duration < 0 {
		errs = append(errs, fmt.Errorf("duration %v: must not be negative", c.Duration))
	}
	if c.ProvisionConcurrency < 1 {
		errs = append(errs, errors.New("provision concurrency must be at least 1"))
	}
	if c.ProvisionAttempts < 1 {
		errs = append(errs, errors.New("provision attempts must be at least 1"))
	}
	if c.MaxPendingAcks < 1 {
		errs = append(errs, errors.New("max pending acks must be at least 1"))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, errors.New("drain timeout must not be negative"))
	}
	if c.ConnectTimeout < 0 {
		errs = append(errs, errors.New("connect timeout must not be negative"))
	}
	if c.ReconnectInterval <= 0 {
		errs = append(errs, errors.New("reconnect interval must be positive"))
	}
	if c.TimeScale < 0 {
		errs = append(errs, errors.New("time scale must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid fleet config: %w", err)
	}
	return nil
}

// Fleet is a set of simulated devices that register with the hub and publish
// telemetry over MQTT. Create it with New and start it with Run; Stats may be
// called at any time. Safe for concurrent use.
type Fleet struct {
	cfg  Config
	log  *slog.Logger
	prov *provisioner

	started atomic.Bool

	mu              sync.Mutex
	devices         []*simDevice // set once provisioning is done
	provisionFailed int
}

// New returns a Fleet for cfg, logging to log (nil discards).
func New(cfg Config, log *slog.Logger) (*Fleet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	base, _ := url.Parse(cfg.HubURL) // checked by Validate
	return &Fleet{
		cfg: cfg,
		log: log,
		prov: &provisioner{
			base:     base,
			token:    cfg.Token,
			client:   &http.Client{Timeout: httpTimeout},
			attempts: cfg.ProvisionAttempts,
			backoff:  provisionBackoff,
			log:      log,
		},
	}, nil
}

// Run provisions the devices, connects them and publishes their readings
// until ctx is done or Config.Duration has elapsed; then it waits up to
// Config.DrainTimeout for outstanding acknowledgements and disconnects.
//
// Devices that fail to provision are logged and left out; Run returns an
// error wrapping ErrProvisioning only when none could be provisioned. A run
// ended by ctx or Duration returns nil. Run may be called once.
func (f *Fleet) Run(ctx context.Context) error {
	if !f.started.CompareAndSwap(false, true) {
		return ErrAlreadyRun
	}
	devs, err := f.provisionAll(ctx)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		f.log.Info("fleet stopped while provisioning")
		return nil
	}

	f.declareSchemas(ctx, devs)
	f.connectAll(ctx, devs)
	runCtx, cancel := ctx, context.CancelFunc(func() {})
	if f.cfg.Duration > 0 {
		runCtx, cancel = context.WithTimeout(ctx, f.cfg.Duration)
	}
	defer cancel()
	f.log.Info("fleet publishing", "devices", len(devs), "interval", f.cfg.Interval, "qos", f.cfg.QoS)

	rc := runConfig{
		interval:     f.cfg.Interval,
		qos:          f.cfg.QoS,
		maxPending:   f.cfg.MaxPendingAcks,
		drainTimeout: f.cfg.DrainTimeout,
	}
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Go(func() { d.run(runCtx, rc) })
	}
	wg.Wait()

	forEachLimit(len(devs), f.cfg.ProvisionConcurrency, func(i int) {
		devs[i].client.Disconnect(disconnectQuiesce)
	})
	st := f.Stats()
	f.log.Info("fleet stopped", "sent", st.Sent, "acked", st.Acked, "errors", st.Errors)
	return nil
}

// connectAll starts connecting every device and waits until all are
// connected, ctx is done or Config.ConnectTimeout has passed, whichever
// comes first. Devices still connecting keep retrying in the background; their
// QoS 1 readings queue in the client until the connection is up.
func (f *Fleet) connectAll(ctx context.Context, devs []*simDevice) {
	tokens := make([]paho.Token, len(devs))
	for i, d := range devs {
		tokens[i] = d.client.Connect()
	}
	deadline := time.NewTimer(f.cfg.ConnectTimeout)
	defer deadline.Stop()
	for i, tok := range tokens {
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return
		case <-deadline.C:
			f.log.Warn("devices still connecting, publishing anyway", "connecting", len(devs)-i)
			return
		}
	}
}

// provisionAll provisions every device with bounded concurrency and returns
// those that succeeded, ready to connect; nothing when ctx ended first.
func (f *Fleet) provisionAll(ctx context.Context) ([]*simDevice, error) {
	specs := f.plan()
	results := make([]*simDevice, len(specs))
	errs := make([]error, len(specs))
	forEachLimit(len(specs), f.cfg.ProvisionConcurrency, func(i int) {
		if ctx.Err() != nil {
			errs[i] = ctx.Err()
			return
		}
		p := specs[i]
		token, err := f.prov.provision(ctx, p.spec)
		if err != nil {
			errs[i] = err
			return
		}
		results[i] = newSimDevice(p, token, f.cfg, f.log)
	})
	if ctx.Err() != nil {
		return nil, nil
	}

	var devs []*simDevice
	var firstErr error
	failed := 0
	for i, d := range results {
		if d != nil {
			devs = append(devs, d)
			continue
		}
		failed++
		if firstErr == nil {
			firstErr = errs[i]
		}
		f.log.Warn("device not provisioned", "device_id", specs[i].spec.ID, "err", errs[i])
	}
	f.mu.Lock()
	f.devices, f.provisionFailed = devs, failed
	f.mu.Unlock()
	if len(devs) == 0 {
		return nil, fmt.Errorf("%w: none of %d devices: %w", ErrProvisioning, len(specs), firstErr)
	}
	f.log.Info("fleet provisioned", "devices", len(devs), "failed", failed)
	return devs, nil
}

// plannedDevice is a device to provision, with its model ready.
type plannedDevice struct {
	spec   deviceSpec
	model  Device
	jitter time.Duration
}

// plan derives the devices, their models and start jitter from the config.
func (f *Fleet) plan() []plannedDevice {
	var out []plannedDevice
	add := func(kind, typ string, n int, stream uint64, model func(*rand.Rand) Device) {
		for i := range n {
			rng := rand.New(rand.NewPCG(uint64(f.cfg.Seed), stream|uint64(i)))
			jitter := time.Duration(rng.Int64N(int64(f.cfg.Interval)))
			out = append(out, plannedDevice{
				spec: deviceSpec{
					ID:     deviceID(f.cfg.IDPrefix, kind, i+1),
					Type:   typ,
					Labels: map[string]string{"sim": "true"},
				},
				model:  model(rng),
				jitter: jitter,
			})
		}
	}
	add("thermo", TypeThermostat, f.cfg.Thermostats, thermostatStream,
		func(r *rand.Rand) Device { return NewThermostat(r) })
	add("wearable", TypeWearable, f.cfg.Wearables, wearableStream,
		func(r *rand.Rand) Device { return NewWearable(r) })
	for i := range out {
		if f.cfg.ThermostatModel != nil && out[i].spec.Type == TypeThermostat {
			out[i].model = f.cfg.ThermostatModel()
			out[i].spec.Labels = map[string]string{"hardware": "true"}
		}
	}
	return out
}

// deviceID formats the ID of the n-th device of a kind.
func deviceID(prefix, kind string, n int) string {
	if prefix == "" {
		return fmt.Sprintf("%s-%04d", kind, n)
	}
	return fmt.Sprintf("%s-%s-%04d", prefix, kind, n)
}

// Stats returns the fleet's counters so far. Before provisioning is done it
// has no devices. Safe for concurrent use.
func (f *Fleet) Stats() Stats {
	f.mu.Lock()
	devs := f.devices
	st := Stats{ProvisionFailed: f.provisionFailed}
	f.mu.Unlock()

	st.Devices = make([]DeviceStats, 0, len(devs))
	for _, d := range devs {
		ds := d.stats()
		st.Sent += ds.Sent
		st.Acked += ds.Acked
		st.Errors += ds.Errors
		if ds.Connected {
			st.Connected++
		}
		st.Devices = append(st.Devices, ds)
	}
	return st
}

// forEachLimit calls fn(0..n-1) with at most limit calls running at once and
// returns when all have returned.
func forEachLimit(n, limit int, fn func(i int)) {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
	wg.Wait()
}

// newMQTTClient returns a paho client for one device, not yet connected.
func newMQTTClient(id, token string, cfg Config, d *simDevice) paho.Client {
	opts := paho.NewClientOptions().
		AddBroker(cfg.MQTTURL).
		SetClientID(id).
		SetUsername(id).
		SetPassword(token).
		// A persistent session lets paho resend in-flight QoS 1/2 publishes
		// after a reconnect; QoS 0 has nothing to resend.
		SetCleanSession(cfg.QoS == 0).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(cfg.ReconnectInterval).
		SetMaxReconnectInterval(cfg.ReconnectInterval).
		SetConnectTimeout(mqttConnectTimeout).
		SetKeepAlive(mqttKeepAlive).
		SetWriteTimeout(mqttWriteTimeout).
		SetOrderMatters(false).
		SetOnConnectHandler(func(paho.Client) { d.onConnect() }).
		// Commands may arrive on a resumed session before the subscription
		// callback is registered again.
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { d.deliver(m) }).
		SetConnectionLostHandler(func(_ paho.Client, err error) { d.onConnectionLost(err) }).
		SetConnectionNotificationHandler(func(_ paho.Client, n paho.ConnectionNotification) {
			// Failed covers both unreachable brokers and refused CONNECTs
			// (a rotated or unknown token).
			if f, ok := n.(paho.ConnectionNotificationFailed); ok {
				d.onConnectFailed(f.Reason)
			}
		})
	return paho.NewClient(opts)
}

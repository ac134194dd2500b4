// Package app assembles the hub from its parts and runs it: sink first,
// source last on start; source first, sink last on stop, which reports
// what failed on the way out.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	dto "github.com/prometheus/client_model/go"
	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/broker"
	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/ingest/forward"
	"github.com/telehub/telehub/ingest/influx"
	"github.com/telehub/telehub/ingest/store"
	"github.com/telehub/telehub/internal/auth"
	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/wal"
	"github.com/telehub/telehub/web"
)

// App is a running hub.
type App struct {
	// AdminToken is the operator token with every right.
	AdminToken string

	logger   *slog.Logger
	state    *bolt.DB
	registry *devices.Registry
	tokens   *auth.Store
	wal      *wal.Log
	store    *store.DB
	janitor  *store.Janitor
	influx   *influx.DB
	writer   *ingest.Writer
	// fields caps and remembers each device's field names.
	fields *ingest.Fields
	// localWriter keeps the local window when InfluxDB is the store.
	localWriter *ingest.Writer
	broker      *broker.Broker
	web         *web.Server
	http        *http.Server
	httpLn      net.Listener
	https       bool // httpLn serves TLS
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	stopOnce    sync.Once
	stopErr     error // what the first Stop returned

	// integrations are the MQTT clients that are not devices.
	integrations *devices.Integrations
	// forwarder sends the log on to an upstream; nil when forwarding is off.
	forwarder *forward.Forwarder
	// control is commands, their schemas and device state.
	control *control
	// alerting is the rule engine and the webhooks.
	alerting *alerting
}

// Start opens the data directory and starts every part of the hub, sink
// first: state, durable log, stores and their writer, live stream and
// forwarder, pipeline, control and alerting, web, and the broker last.
// Each part registers its metrics where it is built.
func Start(ctx context.Context, cfg config.Config, logger *slog.Logger) (_ *App, err error) {
	a := &App{logger: logger}
	defer func() {
		if err != nil {
			err = errors.Join(err, a.Stop()) // what was started is stopped, and a failure of that is said too
		}
	}()
	ctx, a.cancel = context.WithCancel(ctx)
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	reg := newRegistry()
	if err := a.openState(cfg); err != nil {
		return nil, err
	}
	if err := a.openWAL(cfg, reg); err != nil {
		return nil, err
	}
	sink, history, err := a.openStores(ctx, cfg, reg)
	if err != nil {
		return nil, err
	}
	writerMetrics := a.startWriter(ctx, cfg, sink, reg)
	hub := live.NewAt(cfg.Live.ReplayBuffer, uint64(time.Now().UnixMicro()))
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{Name: "telehub_live_last_seq", Help: "Sequence number of the newest live stream message."},
		func() float64 { return float64(hub.Last()) })
	if err := a.startForwarder(ctx, cfg, hub, reg); err != nil {
		return nil, err
	}
	latest, presence := ingest.NewLatest(), devices.NewPresence()
	pipe, err := a.newPipeline(ctx, cfg, hub, latest, writerMetrics, reg)
	if err != nil {
		return nil, err
	}
	if a.control, err = newControl(cfg, a.state, a.registry, hub, reg, logger); err != nil {
		return nil, err
	}
	if a.forwarder != nil {
		if err := a.forwarder.KeepAnswers(a.state); err != nil { // answers to the upstream survive restarts
			return nil, err
		}
		a.forwarder.RouteCommands(a.control.commands) // commands from the upstream to devices here
		a.forwarder.RouteState(a.control.states)      // desired state from the upstream to devices here
	}
	if a.alerting, err = newAlerting(cfg, a.state, a.registry, presence, pipe, hub, reg, logger); err != nil {
		return nil, err
	}
	if err := a.startWeb(ctx, cfg, latest, presence, hub, history, reg); err != nil {
		return nil, err
	}
	if err := a.startBroker(ctx, cfg, pipe, latest, presence, hub, reg); err != nil {
		return nil, err
	}
	a.web.SetReady(true)
	logger.Info("telehub started", "mqtt", a.broker.Addr(), "http", a.httpLn.Addr().String(), "data_dir", cfg.DataDir)
	return a, nil
}

// newRegistry returns the hub's metrics registry, with the Go runtime's
// and the process's collectors (go_*, process_*).
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// openState opens the state database and what lives in it: devices,
// integrations and API tokens, with the operator's token.
func (a *App) openState(cfg config.Config) (err error) {
	if a.state, err = bolt.Open(filepath.Join(cfg.DataDir, "state.db"), 0o600, &bolt.Options{Timeout: 2 * time.Second}); err != nil {
		return fmt.Errorf("open state database: %w", err)
	}
	if a.registry, err = devices.New(a.state); err != nil {
		return err
	}
	if a.integrations, err = devices.NewIntegrations(a.state); err != nil {
		return err
	}
	if a.tokens, err = auth.New(a.state); err != nil {
		return err
	}
	a.AdminToken, err = bootstrapAdmin(a.tokens, filepath.Join(cfg.DataDir, "admin.token"), a.logger)
	return err
}

// openWAL opens the durable log with a consumer for each reader of it.
func (a *App) openWAL(cfg config.Config, reg prometheus.Registerer) (err error) {
	consumers := []string{wal.DefaultConsumer}
	if localWindow(cfg) {
		consumers = append(consumers, "local")
	}
	if cfg.Forward.Enabled() {
		consumers = append(consumers, forward.Consumer)
	}
	if a.wal, err = wal.Open(filepath.Join(cfg.DataDir, "log"), wal.Options{MaxBytes: cfg.WAL.MaxBytes,
		SegmentBytes: cfg.WAL.SegmentBytes, NoSync: !cfg.WAL.Fsync, SyncInterval: cfg.WAL.SyncInterval, Consumers: consumers}, a.logger.With("component", "wal")); err != nil {
		return err
	}
	registerLogMetrics(reg, a.wal)
	return nil
}

// localWindow reports whether the embedded store keeps a window of history
// beside InfluxDB.
func localWindow(cfg config.Config) bool { return cfg.Influx.Enabled() && cfg.Store.LocalWindow > 0 }

// openStores opens the embedded store, InfluxDB or both (the local window,
// with its own writer), and returns where readings go and where history
// comes from.
func (a *App) openStores(ctx context.Context, cfg config.Config, reg prometheus.Registerer) (sink ingest.Sink, history ingest.History, err error) {
	logger := a.logger
	if !cfg.Influx.Enabled() || localWindow(cfg) {
		retention := cfg.Store.Retention
		if localWindow(cfg) {
			retention = cfg.Store.LocalWindow
		}
		// Retention deletes whole flushes: merged ones span at most an
		// eighth of the retention period (and a day), which bounds how
		// long samples outlive it.
		span := 24 * time.Hour
		if retention > 0 {
			span = min(span, max(retention/8, time.Minute))
		}
		if a.store, err = store.Open(filepath.Join(cfg.DataDir, "history.db"), store.Options{FlushBytes: cfg.Store.FlushBytes,
			FlushEvery: cfg.Store.FlushEvery, MergeSpan: span, Logger: logger.With("component", "store")}); err != nil {
			return nil, nil, err
		}
		registerStoreMetrics(reg, a.store)
		a.janitor = store.NewJanitor(a.store, retention, logger.With("component", "retention"))
		a.janitor.Start(ctx)
		sink, history = a.store, a.store
	}
	if !cfg.Influx.Enabled() {
		logger.Info("storing readings in the embedded store", "path", filepath.Join(cfg.DataDir, "history.db"))
		return sink, history, nil
	}
	a.influx = influx.New(cfg.Influx)
	sink = a.influx
	history = ingest.History(a.influx)
	logger.Info("storing readings in InfluxDB", "url", cfg.Influx.URL, "bucket", cfg.Influx.Bucket)
	if localWindow(cfg) {
		history = ingest.FallbackHistory{Primary: a.influx, Local: a.store, Window: cfg.Store.LocalWindow, Logger: logger}
		a.localWriter = ingest.NewWriter(a.wal, a.store, cfg.Writer, ingest.NewWriterMetricsNamed(reg, "telehub_local_store"),
			filepath.Join(cfg.DataDir, "dead-letters-local.jsonl"), logger.With("component", "local-writer")).As("local")
		a.localWriter.Start(context.WithoutCancel(ctx)) // stopped by Stop, after a drain
		logger.Info("keeping a local window of history", "window", cfg.Store.LocalWindow)
	}
	return sink, history, nil
}

// startWriter starts the writer that moves the log to sink.
func (a *App) startWriter(ctx context.Context, cfg config.Config, sink ingest.Sink, reg prometheus.Registerer) *ingest.WriterMetrics {
	m := ingest.NewWriterMetrics(reg)
	a.writer = ingest.NewWriter(a.wal, sink, cfg.Writer, m,
		filepath.Join(cfg.DataDir, "dead-letters.jsonl"), a.logger.With("component", "writer"))
	// The writer outlives the hub's context: Stop lets it drain the log
	// (bounded by writer.drain_timeout) after the broker has closed.
	a.writer.Start(context.WithoutCancel(ctx))
	return m
}

// startForwarder starts the forwarder to the upstream, if configured.
func (a *App) startForwarder(ctx context.Context, cfg config.Config, hub *live.Hub, reg prometheus.Registerer) (err error) {
	if !cfg.Forward.Enabled() {
		return nil
	}
	if a.forwarder, err = forward.New(cfg.Forward, a.wal, hub, reg, a.logger.With("component", "forward")); err != nil {
		return err
	}
	a.forwarder.Start(ctx)
	a.logger.Info("forwarding readings to an upstream", "url", cfg.Forward.URL, "alerts", cfg.Forward.Alerts)
	return nil
}

// newPipeline builds the ingest pipeline with its field index, and counts
// the readings between it and the writer.
func (a *App) newPipeline(ctx context.Context, cfg config.Config, hub *live.Hub, latest *ingest.Latest,
	writerMetrics *ingest.WriterMetrics, reg prometheus.Registerer) (*ingest.Pipeline, error) {
	backlog, err := ingest.CountPending(a.wal, a.wal.Position(wal.DefaultConsumer))
	if err != nil {
		a.logger.Warn("count the durable log's backlog", "err", err)
	}
	m := ingest.NewMetrics(reg)
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{Name: "telehub_log_pending_readings", Help: "Readings in the durable log not yet confirmed by the store."},
		func() float64 {
			done := counterValue(writerMetrics.Written) + counterValue(writerMetrics.DeadLetters)
			return float64(backlog) + counterValue(m.Readings) - done
		})
	pipe := ingest.NewPipeline(a.wal, hub, ingest.DefaultLimits(), m, latest, a.logger.With("component", "ingest"))
	if a.fields, err = openFields(ctx, a.state, a.store, cfg.Ingest.MaxFieldsPerDevice, a.logger); err != nil {
		return nil, err
	}
	pipe.SetFields(a.fields)
	return pipe, nil
}

// startWeb builds the HTTP side and starts serving it.
func (a *App) startWeb(ctx context.Context, cfg config.Config, latest *ingest.Latest, presence *devices.Presence,
	hub *live.Hub, history ingest.History, reg *prometheus.Registry) (err error) {
	logger := a.logger
	a.web = web.New(ctx, web.Deps{Registry: a.registry, Latest: latest, Presence: presence, Stream: hub, History: history, Metrics: reg,
		Live:   web.StreamConfig{ConflateAbove: cfg.Live.ConflateAbove, PollWait: cfg.Live.PollWait, WriteEvery: cfg.Live.WriteEvery},
		States: a.control.states, Commands: a.control.commands, Schemas: a.control.schemas,
		Rules: a.alerting.rules, Alerts: a.alerting.rules, Webhooks: a.alerting.notify,
		Tokens: a.tokens, Integrations: a.integrations, HTTP: cfg.HTTP, Logger: logger.With("component", "web"), WAL: a.wal})
	if a.httpLn, a.https, err = web.Listen(cfg.HTTP); err != nil {
		return err
	}
	a.http = web.HTTPServer(cfg.HTTP, a.web, ctx, slog.NewLogLogger(logger.Handler(), slog.LevelWarn)) // e.g. TLS handshake errors
	a.wg.Go(func() {
		if err := a.http.Serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server", "err", err)
		}
	})
	return nil
}

// startBroker builds the broker, attaches control and alerting to it and
// starts accepting devices: the source, last.
func (a *App) startBroker(ctx context.Context, cfg config.Config, pipe *ingest.Pipeline, latest *ingest.Latest,
	presence *devices.Presence, hub *live.Hub, reg prometheus.Registerer) (err error) {
	presence.OnChange(func(ev devices.PresenceEvent) {
		if m, err := live.Event(live.KindPresence, ev.DeviceID, ev.At, ev); err == nil {
			hub.Publish(m)
		}
	})
	if a.broker, err = broker.New(cfg.MQTT, a.registry, pipe, presence, a.logger,
		broker.WithIntegrations(a.integrations), broker.WithMetrics(reg)); err != nil {
		return err
	}
	a.registry.OnChange(func(c devices.Change) { // the broker follows the registry itself (broker/revoke.go)
		if c.Kind == devices.Deleted {
			latest.Forget(c.DeviceID)
			a.fields.Forget(c.DeviceID) // and, off this goroutine, the embedded store's names
		}
	})
	if err := a.control.attach(a.broker, presence, a.registry); err != nil {
		return err
	}
	a.alerting.start(ctx)
	if err := a.broker.Start(); err != nil {
		return err
	}
	a.control.start(ctx)
	return nil
}

// openFields loads the field index from the state database. On its first
// start (a new hub, or one upgraded from a version without the index) it is
// seeded from the embedded store's fields, when there is one; with only
// InfluxDB it starts empty and learns each device's names as they come.
func openFields(ctx context.Context, state *bolt.DB, st *store.DB, max int, logger *slog.Logger) (*ingest.Fields, error) {
	f, fresh, err := ingest.NewFields(state, max, logger.With("component", "fields"))
	if err != nil {
		return nil, err
	}
	if fresh && st != nil {
		known, err := st.DeviceFields()
		if err != nil {
			return nil, err
		}
		for dev, names := range known {
			f.Seed(dev, names)
		}
		logger.Info("field index seeded from the embedded store", "devices", len(known))
	}
	if st != nil {
		f.OnForget(func(dev string) {
			if err := st.ForgetFields(dev); err != nil {
				logger.Warn("drop a deleted device's fields from the embedded store", "device_id", dev, "err", err)
			}
		})
	}
	f.Start(ctx)
	return f, nil
}

// counterValue reads a counter, for a gauge computed from counters when
// scraped.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

func registerStoreMetrics(reg prometheus.Registerer, st *store.DB) {
	f := promauto.With(reg)
	f.NewCounterFunc(prometheus.CounterOpts{Name: "telehub_store_flushes_total", Help: "Flushes of the embedded store's head to history.db."},
		func() float64 { return float64(st.Flushes()) })
	f.NewCounterFunc(prometheus.CounterOpts{Name: "telehub_store_merges_total", Help: "Merges of the embedded store's flushes (compaction)."},
		func() float64 { return float64(st.Merges()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "telehub_store_head_bytes", Help: "Encoded samples in the embedded store's head, not yet in history.db (the durable log has them)."},
		func() float64 { return float64(st.HeadBytes()) })
}

func registerLogMetrics(reg prometheus.Registerer, l *wal.Log) {
	f := promauto.With(reg)
	gauge := func(name, help string, v func() float64) {
		f.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, v)
	}
	flag := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	gauge("telehub_log_bytes", "Bytes of the durable log on disk.", func() float64 { return float64(l.Stats().Bytes) })
	gauge("telehub_log_max_bytes", "Bound of the durable log.", func() float64 { return float64(l.Stats().MaxBytes) })
	gauge("telehub_log_pending_records", "Records in the durable log not yet confirmed by the store.", func() float64 {
		s := l.Stats()
		return float64(s.Committed - s.Consumed)
	})
	f.NewCounterFunc(prometheus.CounterOpts{Name: "telehub_log_commits_total", Help: "Group commits of the durable log (one write and one fsync each)."},
		func() float64 { return float64(l.Stats().Syncs) })
	gauge("telehub_log_commit_failing", "1 while the durable log cannot write to disk and refuses telemetry (see /readyz).", func() float64 {
		_, err := l.Failing()
		return flag(err != nil)
	})
	f.NewCounterFunc(prometheus.CounterOpts{Name: "telehub_log_commit_failures_total", Help: "Commits (and disk probes) of the durable log that failed."},
		func() float64 { return float64(l.Stats().Failed) })
	gauge("telehub_log_full", "1 while the durable log is full and devices get backpressure.", func() float64 { return flag(l.Full()) })
}

// MQTTAddr returns the bound MQTT address.
func (a *App) MQTTAddr() string { return a.broker.Addr() }

// HTTPAddr returns the bound HTTP address.
func (a *App) HTTPAddr() string { return a.httpLn.Addr().String() }

// DashboardURL returns the URL of the dashboard with the admin token.
func (a *App) DashboardURL() string {
	host, port, _ := net.SplitHostPort(a.HTTPAddr())
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	scheme := "http://"
	if a.https {
		scheme = "https://"
	}
	if a.AdminToken == "" {
		return scheme + net.JoinHostPort(host, port) + "/"
	}
	return scheme + net.JoinHostPort(host, port) + "/?token=" + a.AdminToken
}

// Store returns the embedded store, nil when InfluxDB is configured.
func (a *App) Store() *store.DB { return a.store }

// Stop stops the hub: no new publishes, WebSockets closed, the log drained
// to the store as far as it goes within the drain timeout. It returns what
// failed on the way (errors.Join), each also logged with its context: above
// all a failed final flush of the embedded store, whose readings are then
// only in the durable log until the next start. Safe to call twice; the
// second call returns the first one's error.
func (a *App) Stop() error {
	a.stopOnce.Do(func() {
		var errs []error
		fail := func(what string, err error) {
			if err != nil {
				a.logger.Error("stop: "+what, "err", err)
				errs = append(errs, fmt.Errorf("%s: %w", what, err))
			}
		}
		if a.web != nil {
			a.web.SetReady(false)
		}
		if a.broker != nil {
			fail("close mqtt broker", a.broker.Close())
		}
		if a.cancel != nil {
			a.cancel() // ends WebSockets
		}
		if a.http != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			fail("shut down http server", a.http.Shutdown(sctx))
			cancel()
		}
		a.wg.Wait()
		a.control.stop()
		a.alerting.stop()
		if a.fields != nil {
			a.fields.Stop() // after the broker: saves the names of the last publishes
		}
		if a.forwarder != nil {
			a.forwarder.Stop()
		}
		if a.writer != nil {
			a.writer.Stop()
		}
		if a.localWriter != nil {
			a.localWriter.Stop()
		}
		if a.wal != nil {
			fail("close durable log", a.wal.Close())
		}
		if a.influx != nil {
			a.influx.Close()
		}
		if a.janitor != nil {
			a.janitor.Stop()
		}
		if a.store != nil {
			// Close flushes the head: a failure here loses nothing that was
			// acknowledged (the durable log still holds it, and the next
			// start replays it), but it must not pass unseen.
			fail("embedded store final flush", a.store.Close())
		}
		if a.state != nil {
			fail("close state database", a.state.Close())
		}
		a.stopErr = errors.Join(errs...)
	})
	return a.stopErr
}

// Run starts the hub, prints the dashboard URL to out and runs until ctx ends.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger, out io.Writer) error {
	a, err := Start(ctx, cfg, logger)
	if err != nil {
		return err
	}
	tokenNote := "Admin token in " + filepath.Join(cfg.DataDir, "admin.token")
	if a.AdminToken == "" {
		tokenNote = "No valid admin token in " + filepath.Join(cfg.DataDir, "admin.token") + " (revoked or removed): sign in with a token you hold"
	}
	fmt.Fprintf(out, "Telehub is running.\n  Dashboard: %s\n  MQTT:      %s\n  %s\n", a.DashboardURL(), a.MQTTAddr(), tokenNote)
	<-ctx.Done()
	logger.Info("telehub stopping")
	return a.Stop()
}

// bootstrapAdmin makes sure the hub can be administered and returns the
// admin token of the file at path, "" when it holds none that is valid.
// Only while the store has no admin token at all (first start, or every
// admin token deleted) does it mint one: a new secret, written to path
// (mode 0600, replacing the file) and registered. Otherwise the file is
// only read: a bootstrap token deleted through the API stays deleted
// across restarts, and a file edited or restored by hand registers
// nothing. A file that others may read (mode looser than 0600) is refused,
// since its token may have leaked.
func bootstrapAdmin(tokens *auth.Store, path string, logger *slog.Logger) (string, error) {
	if !tokens.HasAdmin() {
		secret := auth.NewSecret()
		if err := writeSecret(path, secret); err != nil {
			return "", fmt.Errorf("write admin token: %w", err)
		}
		if err := tokens.EnsureAdmin(secret); err != nil {
			return "", err
		}
		logger.Info("created the admin token", "file", path)
		return secret, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read admin token: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read admin token: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("admin token file %s has mode %04o: others may read it; run chmod 600 %s, or delete the token and the file if it may have leaked", path, perm, path)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return "", fmt.Errorf("read admin token: %w", err)
	}
	secret := strings.TrimSpace(string(b))
	if _, ok := tokens.Authenticate(secret); !ok {
		logger.Warn("the admin token file holds no valid token (revoked or replaced); it is not registered again", "file", path)
		return "", nil
	}
	return secret, nil
}

// writeSecret writes secret to path with mode 0600 through a temporary
// file, so that an existing file's looser mode is not kept.
func writeSecret(path, secret string) error {
	tmp := path + ".tmp"
	os.Remove(tmp) // a leftover keeps its mode through WriteFile
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

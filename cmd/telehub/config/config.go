// Package config loads the hub's settings: defaults, then a YAML file
// (--config), then TELEHUB_* environment variables, then flags, each
// overriding the one before. Unknown keys in the file are errors; renamed
// keys and flags keep working for one release, recorded as Deprecations.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/telehub/telehub/broker"
	"github.com/telehub/telehub/devices/control"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/ingest/forward"
	"github.com/telehub/telehub/ingest/influx"
	"github.com/telehub/telehub/ingest/rules"
	"github.com/telehub/telehub/internal/notify"
	"github.com/telehub/telehub/web"
)

// Config is everything `telehub serve` needs.
type Config struct {
	// DataDir holds the durable log, the registry, the embedded store and
	// the admin token.
	DataDir string `yaml:"data_dir"`
	// LogLevel is debug, info, warn or error.
	LogLevel string              `yaml:"log_level"`
	MQTT     broker.Config       `yaml:"mqtt"`
	HTTP     web.Config          `yaml:"http"`
	Influx   influx.Config       `yaml:"influx"`
	Writer   ingest.WriterConfig `yaml:"writer"`
	Ingest   ingest.Config       `yaml:"ingest"`
	WAL      WALConfig           `yaml:"wal"`
	Live     LiveConfig          `yaml:"live"`
	Store    StoreConfig         `yaml:"store"`
	// Commands and State configure device control.
	Commands control.CommandConfig `yaml:"commands"`
	State    control.StateConfig   `yaml:"state"`
	// Forward sends the readings on to an upstream hub or MQTT broker
	// (store-and-forward); off while forward.url is empty.
	Forward forward.Config `yaml:"forward"`

	// Rules are alert rules declared in the file, each with an id; the API
	// shows them but cannot change them. Alerts tunes the alert lifecycle,
	// Webhooks the delivery of events to webhooks and its address policy.
	Rules    []rules.Spec  `yaml:"rules"`
	Alerts   rules.Config  `yaml:"alerts"`
	Webhooks notify.Config `yaml:"webhooks"`

	// Deprecations are the old names Load met (config keys, flags,
	// environment variables) with their new names. They still work for one
	// release; the caller logs them once it has a logger.
	Deprecations []Deprecation `yaml:"-"`
}

// Deprecation is an old setting name that was used, and its new name.
type Deprecation struct{ Old, New string }

func (d Deprecation) String() string { return d.Old + " is deprecated, use " + d.New }

// StoreConfig configures the embedded store.
type StoreConfig struct {
	// Retention is how long the embedded store keeps samples; 0 keeps them
	// forever.
	Retention time.Duration `yaml:"retention"`
	// LocalWindow, when InfluxDB is configured, also keeps this much recent
	// history in the embedded store, so that the dashboard's charts keep
	// working while InfluxDB is unreachable (an edge hub with its uplink
	// down). 0 turns it off.
	LocalWindow time.Duration `yaml:"local_window"`
	// FlushBytes and FlushEvery bound the store's in-memory head: it is
	// written to history.db when it holds this many bytes of encoded
	// samples or its oldest sample is this old. Until then the readings are
	// kept in the durable log as well.
	FlushBytes int           `yaml:"flush_bytes"`
	FlushEvery time.Duration `yaml:"flush_every"`
}

// WALConfig bounds the durable log (the write-ahead log, internal/wal).
// Its section was called log: until 0.x; see legacyLog.
type WALConfig struct {
	// MaxBytes bounds the log on disk; when full, devices get backpressure.
	MaxBytes int64 `yaml:"max_bytes"`
	// SegmentBytes is the size of one segment file.
	SegmentBytes int64 `yaml:"segment_bytes"`
	// Fsync makes every append reach the disk before devices are
	// acknowledged. Off, an acknowledged reading survives a crash of the
	// process but not a power cut or a kernel crash.
	Fsync bool `yaml:"fsync"`
	// SyncInterval spaces the log's syncs (one write and fsync for a group
	// of appends) at least this far apart (0: sync at once). Devices are still acknowledged only after the
	// fsync; they wait up to this long for it, and a busy hub fsyncs at most
	// 1/SyncInterval times a second, which spares an SD card.
	SyncInterval time.Duration `yaml:"sync_interval"`
}

// LiveConfig sizes the live stream.
type LiveConfig struct {
	// ReplayBuffer is how many recent messages a reconnecting client can
	// catch up on with ?since=.
	ReplayBuffer int `yaml:"replay_buffer"`
	// ConflateAbove is how many messages a client may lag before its
	// readings are conflated to the latest value per device and field.
	ConflateAbove uint64 `yaml:"conflate_above"`
	// PollWait is how long a long poll waits for a message.
	PollWait time.Duration `yaml:"poll_wait"`
	// WriteEvery is the shortest time between two writes to a WebSocket or
	// SSE client; messages arriving meanwhile go out together. 0 writes
	// every message at once (more system calls and wake-ups per message).
	WriteEvery time.Duration `yaml:"write_every"`
}

// Default returns the defaults.
func Default() Config {
	return Config{
		DataDir:  "./data",
		LogLevel: "info",
		MQTT:     broker.DefaultConfig(),
		HTTP:     web.DefaultConfig(),
		Influx:   influx.Config{Org: "telehub", Bucket: "telehub", Measurement: "telemetry", Timeout: 10 * time.Second},
		Writer:   ingest.DefaultWriterConfig(),
		Ingest:   ingest.DefaultConfig(),
		WAL:      WALConfig{MaxBytes: 1 << 30, SegmentBytes: 64 << 20, Fsync: true, SyncInterval: time.Millisecond},
		Live:     LiveConfig{ReplayBuffer: 65536, ConflateAbove: 4096, PollWait: 25 * time.Second, WriteEvery: time.Millisecond},
		Store:    StoreConfig{Retention: 30 * 24 * time.Hour, FlushBytes: 8 << 20, FlushEvery: 5 * time.Minute},
		Commands: control.DefaultCommandConfig(),
		State:    control.DefaultStateConfig(),
		Forward:  forward.DefaultConfig(),
		Alerts:   rules.DefaultConfig(),
		Webhooks: notify.DefaultConfig(),
	}
}

// Validate checks every section without touching the disk or network.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir must not be empty"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q: use debug, info, warn or error", c.LogLevel))
	}
	if c.WAL.MaxBytes < 64<<10 {
		errs = append(errs, errors.New("wal.max_bytes must be at least 65536"))
	}
	if c.WAL.SyncInterval < 0 || c.WAL.SyncInterval > 10*time.Second {
		errs = append(errs, errors.New("wal.sync_interval must be between 0 and 10s"))
	}
	if c.Store.LocalWindow < 0 {
		errs = append(errs, errors.New("store.local_window must not be negative"))
	}
	if c.Store.Retention < 0 {
		errs = append(errs, errors.New("store.retention must not be negative"))
	}
	if c.Store.FlushBytes < 64<<10 || c.Store.FlushEvery < time.Second {
		errs = append(errs, errors.New("store.flush_bytes must be at least 65536 and store.flush_every at least 1s"))
	}
	if c.Live.ReplayBuffer < 16 {
		errs = append(errs, errors.New("live.replay_buffer must be at least 16"))
	}
	if c.Live.ConflateAbove < 1 || c.Live.PollWait < time.Second || c.Live.PollWait > 5*time.Minute {
		errs = append(errs, errors.New("live.conflate_above must be at least 1 and live.poll_wait between 1s and 5m"))
	}
	if c.Live.WriteEvery < 0 || c.Live.WriteEvery > time.Second {
		errs = append(errs, errors.New("live.write_every must be between 0 and 1s"))
	}
	errs = append(errs, c.MQTT.Validate(), c.HTTP.Validate(), c.Influx.Validate(), c.Writer.Validate(), c.Ingest.Validate())
	errs = append(errs, c.Commands.Validate(), c.State.Validate())
	errs = append(errs, c.Forward.Validate())
	errs = append(errs, c.Alerts.Validate(), c.Webhooks.Validate(), rules.ValidateDeclared(c.Rules))
	return errors.Join(errs...)
}

// setting is one value settable by flag and environment.
type setting struct {
	flag, help string
	ptr        func(*Config) any
	// renamed is the new flag of a deprecated one: both set the same
	// value, the old one with a deprecation, and giving both is an error.
	renamed string
}

var settings = []setting{
	{"data-dir", "directory for the durable log, registry and embedded store", func(c *Config) any { return &c.DataDir }, ""},
	{"log-level", "debug, info, warn or error", func(c *Config) any { return &c.LogLevel }, ""},
	{"mqtt-addr", "MQTT TCP listen address", func(c *Config) any { return &c.MQTT.Addr }, ""},
	{"http-addr", "HTTP listen address (API, live stream, dashboard)", func(c *Config) any { return &c.HTTP.Addr }, ""},
	{"allow-anonymous", "admit MQTT clients without credentials, confined to topics outside devices/", func(c *Config) any { return &c.MQTT.AllowAnonymous }, ""},
	{"mqtt-tls-addr", "MQTT over TLS listen address, e.g. :8883 (needs --mqtt-tls-cert and --mqtt-tls-key)", func(c *Config) any { return &c.MQTT.TLSAddr }, ""},
	{"mqtt-tls-cert", "PEM certificate of the MQTT TLS and secure WebSocket listeners", func(c *Config) any { return &c.MQTT.TLSCert }, ""},
	{"mqtt-tls-key", "PEM key of the MQTT TLS and secure WebSocket listeners", func(c *Config) any { return &c.MQTT.TLSKey }, ""},
	{"mqtt-client-ca", "PEM CA bundle: the MQTT TLS listener then requires client certificates, whose common name is the device ID", func(c *Config) any { return &c.MQTT.ClientCA }, ""},
	{"mqtt-ws-addr", "MQTT over WebSocket listen address, e.g. :8083", func(c *Config) any { return &c.MQTT.WSAddr }, ""},
	{"mqtt-wss-addr", "MQTT over secure WebSocket listen address, e.g. :8084", func(c *Config) any { return &c.MQTT.WSSAddr }, ""},
	{"http-tls-cert", "PEM certificate: serve the API and dashboard over HTTPS", func(c *Config) any { return &c.HTTP.TLSCert }, ""},
	{"http-tls-key", "PEM key for --http-tls-cert", func(c *Config) any { return &c.HTTP.TLSKey }, ""},
	{"influx-url", "InfluxDB URL; empty keeps history in the embedded store", func(c *Config) any { return &c.Influx.URL }, ""},
	{"influx-token", "InfluxDB token (1.8: user:password)", func(c *Config) any { return &c.Influx.Token }, ""},
	{"influx-org", "InfluxDB organisation (ignored by 1.8)", func(c *Config) any { return &c.Influx.Org }, ""},
	{"influx-bucket", "InfluxDB bucket (1.8: database or database/retention-policy)", func(c *Config) any { return &c.Influx.Bucket }, ""},
	{"wal-max-bytes", "bound of the durable log in bytes", func(c *Config) any { return &c.WAL.MaxBytes }, ""},
	{"retention", "how long the embedded store keeps history (0: forever)", func(c *Config) any { return &c.Store.Retention }, ""},
	{"fsync", "fsync the durable log before acknowledging (false: a power cut may lose acknowledged readings)", func(c *Config) any { return &c.WAL.Fsync }, ""},
	{"wal-sync-interval", "space the durable log's fsyncs at least this far apart, default 1ms, 0: at once; 100ms spares SD cards", func(c *Config) any { return &c.WAL.SyncInterval }, ""},
	{"local-window", "with InfluxDB, also keep this much recent history locally (0: off)", func(c *Config) any { return &c.Store.LocalWindow }, ""},
	{"forward-url", "upstream to forward readings to, e.g. mqtts://hub.example.com:8883 (empty: off)", func(c *Config) any { return &c.Forward.URL }, ""},
	{"forward-username", "username at the upstream (a Telehub upstream: an integration's name)", func(c *Config) any { return &c.Forward.Username }, ""},
	{"forward-password", "password at the upstream; prefer the environment or --forward-password-file", func(c *Config) any { return &c.Forward.Password }, ""},
	{"forward-password-file", "file holding the password at the upstream", func(c *Config) any { return &c.Forward.PasswordFile }, ""},
	{"batch-size", "readings per store write", func(c *Config) any { return &c.Writer.BatchSize }, ""},
	{"flush-interval", "how long a partial batch waits for more readings", func(c *Config) any { return &c.Writer.FlushInterval }, ""},

	// Deprecated names, kept for one release.
	{"log-max-bytes", "deprecated: use --wal-max-bytes", func(c *Config) any { return &c.WAL.MaxBytes }, "wal-max-bytes"},
	{"log-sync-interval", "deprecated: use --wal-sync-interval", func(c *Config) any { return &c.WAL.SyncInterval }, "wal-sync-interval"},
}

// legacyLog is the durable log's config section under its old name, log:
// (now wal:), kept for one release. A nil field was not in the file.
type legacyLog struct {
	MaxBytes     *int64         `yaml:"max_bytes"`
	SegmentBytes *int64         `yaml:"segment_bytes"`
	Fsync        *bool          `yaml:"fsync"`
	SyncInterval *time.Duration `yaml:"sync_interval"`
}

// fileConfig is what a config file may hold: the Config and the
// deprecated sections.
type fileConfig struct {
	Config `yaml:",inline"`
	Log    *legacyLog `yaml:"log"`
}

// applyLegacy moves the keys of the deprecated log: section to wal:,
// recording a deprecation for each. A key set under both names is an
// error: the two values may differ and neither is clearly meant.
func (f *fileConfig) applyLegacy(walKeys map[string]any) error {
	if f.Log == nil {
		return nil
	}
	var errs []error
	move := func(key string, set bool, apply func()) {
		if !set {
			return
		}
		if _, both := walKeys[key]; both {
			errs = append(errs, fmt.Errorf("log.%s and wal.%s are both set: log.%[1]s is the deprecated name of wal.%[1]s, keep only wal.%[1]s", key, key))
			return
		}
		apply()
		f.Deprecations = append(f.Deprecations, Deprecation{Old: "config key log." + key, New: "wal." + key})
	}
	l := f.Log
	move("max_bytes", l.MaxBytes != nil, func() { f.WAL.MaxBytes = *l.MaxBytes })
	move("segment_bytes", l.SegmentBytes != nil, func() { f.WAL.SegmentBytes = *l.SegmentBytes })
	move("fsync", l.Fsync != nil, func() { f.WAL.Fsync = *l.Fsync })
	move("sync_interval", l.SyncInterval != nil, func() { f.WAL.SyncInterval = *l.SyncInterval })
	return errors.Join(errs...)
}

// EnvName returns the environment variable of a flag: mqtt-addr -> TELEHUB_MQTT_ADDR.
func EnvName(flag string) string {
	return "TELEHUB_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Load builds the configuration from args (without the program and command
// names) and the environment.
func Load(name string, args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", getenv("TELEHUB_CONFIG"), "YAML config file (env TELEHUB_CONFIG)")
	vals := make(map[string]*flagValue, len(settings))
	var probe Config
	for _, s := range settings {
		_, isBool := s.ptr(&probe).(*bool)
		vals[s.flag] = &flagValue{isBool: isBool}
		fs.Var(vals[s.flag], s.flag, s.help+" (env "+EnvName(s.flag)+")")
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		if _, err := strconv.ParseBool(fs.Arg(0)); err == nil {
			return Config{}, fmt.Errorf("unexpected arguments: %v (a switch takes its value with =, e.g. --fsync=false)", fs.Args())
		}
		return Config{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	cfg := Default()
	if *path != "" {
		b, err := os.ReadFile(*path)
		if err != nil {
			return Config{}, fmt.Errorf("read config: %w", err)
		}
		file := fileConfig{Config: cfg}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&file); err != nil && !errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("config %s: %w", *path, err)
		}
		var keys struct {
			WAL map[string]any `yaml:"wal"`
		}
		if err := yaml.Unmarshal(b, &keys); err != nil {
			return Config{}, fmt.Errorf("config %s: %w", *path, err)
		}
		if err := file.applyLegacy(keys.WAL); err != nil {
			return Config{}, fmt.Errorf("config %s: %w", *path, err)
		}
		cfg = file.Config
	}
	for _, s := range settings {
		if v := getenv(EnvName(s.flag)); v != "" {
			if s.renamed != "" {
				if getenv(EnvName(s.renamed)) != "" {
					return Config{}, fmt.Errorf("%s and %s are both set: %[1]s is the deprecated name, keep only %[2]s", EnvName(s.flag), EnvName(s.renamed))
				}
				cfg.Deprecations = append(cfg.Deprecations, Deprecation{Old: "environment variable " + EnvName(s.flag), New: EnvName(s.renamed)})
			}
			if err := set(s.ptr(&cfg), v); err != nil {
				return Config{}, fmt.Errorf("%s: %w", EnvName(s.flag), err)
			}
		}
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var ferr error
	fs.Visit(func(f *flag.Flag) {
		for _, s := range settings {
			if s.flag != f.Name || ferr != nil {
				continue
			}
			if s.renamed != "" {
				if given[s.renamed] {
					ferr = fmt.Errorf("--%s and --%s are both given: --%[1]s is the deprecated name, keep only --%[2]s", s.flag, s.renamed)
					return
				}
				cfg.Deprecations = append(cfg.Deprecations, Deprecation{Old: "flag --" + s.flag, New: "--" + s.renamed})
			}
			if err := set(s.ptr(&cfg), vals[s.flag].v); err != nil {
				ferr = fmt.Errorf("--%s: %w", s.flag, err)
			}
		}
	})
	if ferr != nil {
		return Config{}, ferr
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("invalid config: %w", err)
	}
	return cfg, nil
}

// flagValue is what a setting's flag was given, applied after the file and
// the environment. The flag of a bool setting is a switch, as the flag
// package's own bools are: --allow-anonymous alone means true,
// --fsync=false false, and the next argument is never taken as its value.
type flagValue struct {
	v      string
	isBool bool
}

func (f *flagValue) String() string {
	if f == nil {
		return ""
	}
	return f.v
}

func (f *flagValue) Set(v string) error { f.v = v; return nil }

// IsBoolFlag tells the flag package that the flag needs no value.
func (f *flagValue) IsBoolFlag() bool { return f.isBool }

func set(p any, v string) error {
	switch p := p.(type) {
	case *string:
		*p = v
	case *int:
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		*p = n
	case *int64:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 500ms or 2s", v)
		}
		*p = d
	default:
		return fmt.Errorf("unsupported setting type %T", p)
	}
	return nil
}

package app

import (
	"context"
	"log/slog"

	bolt "go.etcd.io/bbolt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/ingest/rules"
	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/notify"
	"github.com/telehub/telehub/web"
)

var (
	_ web.Rules    = (*rules.Engine)(nil)
	_ web.Alerts   = (*rules.Engine)(nil)
	_ web.Webhooks = (*notify.Dispatcher)(nil)
)

// alerting is the alert rule engine and the webhook dispatcher.
type alerting struct {
	rules  *rules.Engine
	notify *notify.Dispatcher
}

// newAlerting loads rules, alerts and webhooks from the state database and
// feeds the engine: readings from the pipeline (once durable), presence
// changes, device deletions. Call it before the broker starts.
func newAlerting(cfg config.Config, db *bolt.DB, registry *devices.Registry, presence *devices.Presence,
	pipe *ingest.Pipeline, hub *live.Hub, mr prometheus.Registerer, logger *slog.Logger) (*alerting, error) {
	al := &alerting{}
	var err error
	if al.notify, err = notify.New(cfg.Webhooks, notify.Deps{DB: db, Stream: hub, Metrics: mr,
		Logger: logger.With("component", "webhooks")}); err != nil {
		return nil, err
	}
	if al.rules, err = rules.New(cfg.Alerts, cfg.Rules, rules.Deps{DB: db, Devices: registry, Presence: presence,
		Live: hub, Metrics: mr, Logger: logger.With("component", "rules")}); err != nil {
		return nil, err
	}
	pipe.SetObserver(al.rules)
	presence.OnChange(al.rules.PresenceChanged)
	registry.OnChange(al.rules.DeviceChanged)
	return al, nil
}

// start starts the dispatcher first, so that it sees the alerts the engine
// restores or fires on start.
func (al *alerting) start(ctx context.Context) {
	al.notify.Start(ctx)
	al.rules.Start(ctx)
}

// stop writes the engine's last changes, then files every event published
// so far in the webhook outbox. Safe on a nil or half-built alerting.
func (al *alerting) stop() {
	if al == nil {
		return
	}
	if al.rules != nil {
		al.rules.Stop()
	}
	if al.notify != nil {
		al.notify.Stop()
	}
}

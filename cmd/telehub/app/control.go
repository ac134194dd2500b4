package app

import (
	"context"
	"log/slog"

	bolt "go.etcd.io/bbolt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/telehub/telehub/broker"
	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/devices"
	devcontrol "github.com/telehub/telehub/devices/control"
)

// control is the device control part of the hub: commands and their
// schemas, desired and reported state, and their broker side.
type control struct {
	schemas  *devcontrol.Schemas
	commands *devcontrol.Commands
	states   *devcontrol.States
	bridge   *broker.Control
	logger   *slog.Logger
}

// newControl loads commands, schemas and states from the state database.
func newControl(cfg config.Config, db *bolt.DB, reg devcontrol.DeviceLookup, pub devcontrol.LivePublisher,
	mr prometheus.Registerer, logger *slog.Logger) (*control, error) {
	c := &control{logger: logger}
	var err error
	if c.schemas, err = devcontrol.NewSchemas(db); err != nil {
		return nil, err
	}
	store, err := devcontrol.NewBoltCommandStore(db)
	if err != nil {
		return nil, err
	}
	if c.commands, err = devcontrol.NewCommands(cfg.Commands, store, reg, c.schemas, pub, mr,
		logger.With("component", "commands")); err != nil {
		return nil, err
	}
	if c.states, err = devcontrol.NewStates(cfg.State, db, reg, pub, mr, logger.With("component", "state")); err != nil {
		return nil, err
	}
	return c, nil
}

// attach adds the control hook to the broker (before it starts), makes
// devices coming online receive their queued commands, and drops the
// commands and state of deleted devices.
func (c *control) attach(b *broker.Broker, presence *devices.Presence, reg *devices.Registry) error {
	var err error
	if c.bridge, err = broker.NewControl(b, c.commands, c.states, c.logger.With("component", "control")); err != nil {
		return err
	}
	presence.OnChange(c.commands.OnPresence)
	reg.OnChange(func(ch devices.Change) {
		if ch.Kind == devices.Deleted {
			c.commands.Forget(ch.DeviceID)
			c.states.Forget(ch.DeviceID)
		}
	})
	return nil
}

// start runs the command loop and the state flusher, which publishes every
// desired state retained.
func (c *control) start(ctx context.Context) {
	c.commands.Start(ctx, c.bridge)
	c.states.Start(ctx, c.bridge)
}

// stop ends both after persisting what they changed; call it after the
// broker is closed and before the state database is.
func (c *control) stop() {
	if c == nil {
		return
	}
	c.commands.Stop()
	c.states.Stop()
}

package forward

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/control"
	"github.com/telehub/telehub/devices/topics"
	"github.com/telehub/telehub/internal/live"
)

// Routing commands down: the forwarder's connection subscribes upstream to
// the command topics of every device (the upstream's ACL decides which it
// gets). A command for a device registered here is submitted to this hub's
// command service, which keeps it (persisted, with its expiry), sends it
// when the device is connected and follows its delivery and answer, as for
// a command sent here. The upstream's command ID, kept in the local
// command's idempotency key, makes a redelivered command the same local
// command. When the local command succeeds or fails, the forwarder
// publishes the device's answer upstream on the upstream command's result
// topic. A command for a device not registered here is acknowledged and
// ignored: another edge may serve it.
const (
	// CommandFilter is the subscription made upstream.
	CommandFilter = topics.CommandsFilter
	// UpstreamKeyPrefix starts the idempotency key of a command from the
	// upstream; the upstream's command ID follows.
	UpstreamKeyPrefix = "upstream:"
)

// Commands is the command service of this hub that commands from the
// upstream are submitted to (control.Commands).
type Commands interface {
	Submit(req control.CommandRequest) (cmd control.Command, replayed bool, err error)
}

// commandMetrics count the commands routed down and the results sent up.
type commandMetrics struct {
	CommandsQueued  prometheus.Counter
	CommandsIgnored prometheus.Counter
	CommandsRefused prometheus.Counter
	Results         prometheus.Counter
	SubscribeDenied prometheus.Counter
	// ResultsRecovered counts answers sent from the pending list (answers.go).
	ResultsRecovered prometheus.Counter
}

func newCommandMetrics(r prometheus.Registerer) *commandMetrics {
	const routed = "Commands received from the upstream, by outcome: queued here, ignored (device not registered here) or refused (failed at once, the reason sent upstream)."
	f := promauto.With(r)
	commands := f.NewCounterVec(prometheus.CounterOpts{Name: "telehub_forward_commands_total", Help: routed}, []string{"outcome"})
	return &commandMetrics{
		CommandsQueued:   commands.WithLabelValues("queued"),
		CommandsIgnored:  commands.WithLabelValues("ignored"),
		CommandsRefused:  commands.WithLabelValues("refused"),
		Results:          f.NewCounter(prometheus.CounterOpts{Name: "telehub_forward_command_results_total", Help: "Results of commands from the upstream that the upstream acknowledged."}),
		SubscribeDenied:  f.NewCounter(prometheus.CounterOpts{Name: "telehub_forward_command_subscribe_denied_total", Help: "Connections on which the upstream refused the command subscription."}),
		ResultsRecovered: f.NewCounter(prometheus.CounterOpts{Name: "telehub_forward_command_results_recovered_total", Help: "Answers of commands from the upstream sent on a later connection than the one they were reached on, or after a restart (a subset of telehub_forward_command_results_total)."}),
	}
}

// RouteCommands makes the forwarder route commands from the upstream down
// to cmds. Call it once, before or after Start; without it (or with
// Config.Commands off) the forwarder does not subscribe upstream.
func (f *Forwarder) RouteCommands(cmds Commands) {
	if !f.cfg.Commands || cmds == nil {
		return
	}
	f.routeOnce.Do(func() {
		f.commands = cmds
		close(f.routed)
	})
}

// await waits for the upstream to acknowledge tok, at most AckTimeout.
func (f *Forwarder) await(ctx context.Context, tok paho.Token) error {
	t := time.NewTimer(f.cfg.AckTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return errAckTimeout
	case <-ctx.Done():
		return ctx.Err()
	}
}

// subscribeUpstream subscribes to filter and reports whether the upstream
// granted it. Otherwise it logs why (what the subscription brings, and
// for a refusal how to allow it) and counts a refusal in denied; the rest
// of the connection goes on.
func (f *Forwarder) subscribeUpstream(ctx context.Context, c paho.Client, filter string, h paho.MessageHandler,
	brings, name, allow string, denied prometheus.Counter) bool {
	tok := c.Subscribe(filter, 1, h)
	err := f.await(ctx, tok)
	switch {
	case ctx.Err() != nil:
		return false
	case errors.Is(err, errAckTimeout):
		f.logger.Warn("upstream did not answer the "+name+" subscription; "+brings+" wait for the next connection", "filter", filter)
		return false
	case err != nil:
		f.logger.Warn("subscribe upstream", "filter", filter, "err", err)
		return false
	}
	if st, ok := tok.(*paho.SubscribeToken); ok && st.Result()[filter] >= 0x80 {
		denied.Inc()
		f.logger.Warn("the upstream refused the "+name+" subscription: "+brings+" will not reach devices here. "+allow, "filter", filter)
		return false
	}
	return true
}

// subscribeCommands subscribes upstream once commands are routed. A refusal
// leaves the telemetry flowing: it is logged and counted.
func (f *Forwarder) subscribeCommands(ctx context.Context, c paho.Client) {
	select {
	case <-f.routed:
	case <-ctx.Done():
		return
	}
	if !f.subscribeUpstream(ctx, c, CommandFilter, f.onCommand, "commands from the upstream", "command",
		"On a Telehub upstream, let the integration subscribe to "+CommandFilter+" and publish to "+CommandFilter+"/result, "+
			"or set forward.commands: false", f.m.SubscribeDenied) {
		return
	}
	f.logger.Info("routing commands from the upstream to devices here", "filter", CommandFilter)
}

// upstreamCommand is the command message a Telehub publishes.
type upstreamCommand struct {
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Params    json.RawMessage `json:"params"`
	ExpiresAt time.Time       `json:"expires_at"`
}

// onCommand takes a command from the upstream. It runs on a goroutine of
// the MQTT client, which acknowledges the message when it returns: after
// the command is stored here (Submit is durable) or answered.
func (f *Forwarder) onCommand(c paho.Client, m paho.Message) {
	devID, cmdID, ok := topics.SplitCommand(m.Topic())
	if !ok {
		return
	}
	var msg upstreamCommand
	if err := json.Unmarshal(m.Payload(), &msg); err != nil {
		f.m.CommandsRefused.Inc()
		f.publishResult(c, devID, cmdID, resultPayload(false, nil, fmt.Sprintf("the edge hub could not decode the command: %v", err)))
		return
	}
	cmd, replayed, err := f.commands.Submit(control.CommandRequest{DeviceID: devID, Name: msg.Name, Params: msg.Params,
		ExpiresAt: msg.ExpiresAt, IdempotencyKey: UpstreamKeyPrefix + cmdID, By: "upstream " + f.cfg.Username})
	if err == nil {
		f.noteAnswer(devID, cmdID, cmd.ID) // before the PUBACK: the answer survives a restart
	}
	switch {
	case errors.Is(err, devices.ErrNotFound):
		f.m.CommandsIgnored.Inc()
		f.logger.Debug("command from the upstream for a device not registered here ignored", "device_id", devID, "command_id", cmdID)
	case err != nil:
		f.m.CommandsRefused.Inc()
		f.logger.Info("command from the upstream refused", "device_id", devID, "command_id", cmdID, "err", err)
		f.publishResult(c, devID, cmdID, resultPayload(false, nil, "refused by the edge hub: "+err.Error()))
	case replayed && cmd.Status.Final():
		// A redelivery of a command already answered: the answer may not
		// have reached the upstream, so it goes again (the upstream ignores
		// a second answer).
		if p, ok := finalResult(cmd); ok {
			f.publishResult(c, devID, cmdID, p)
		}
	case !replayed:
		f.m.CommandsQueued.Inc()
		f.logger.Debug("command from the upstream queued", "device_id", devID, "upstream_command_id", cmdID, "command_id", cmd.ID)
	}
}

// publishResult publishes an answer from the MQTT client's goroutine,
// waiting at most AckTimeout for the acknowledgement; a lost answer lets the
// upstream command expire.
func (f *Forwarder) publishResult(c paho.Client, devID, cmdID string, payload []byte) {
	tok := c.Publish(resultTopic(devID, cmdID), 1, false, payload)
	if !tok.WaitTimeout(f.cfg.AckTimeout) || tok.Error() != nil {
		f.logger.Warn("command result not acknowledged by the upstream", "device_id", devID, "command_id", cmdID, "err", tok.Error())
		return
	}
	f.m.Results.Inc()
	f.answered(devID, cmdID)
}

// forwardResult publishes upstream the answer of a command from the
// upstream that m (a command event of the live stream) shows final, and
// waits for the acknowledgement. Other events are skipped. An expired
// command is not answered: the upstream command expires at the same time.
func (f *Forwarder) forwardResult(ctx context.Context, c paho.Client, m live.Message) error {
	var ev struct {
		Command control.Command `json:"command"`
	}
	if err := json.Unmarshal(m.Body, &ev); err != nil {
		return nil // not a command event of this hub's making
	}
	cmdID, ok := strings.CutPrefix(ev.Command.IdempotencyKey, UpstreamKeyPrefix)
	if !ok || cmdID == "" {
		return nil
	}
	payload, ok := finalResult(ev.Command)
	if !ok {
		return nil
	}
	tok := c.Publish(resultTopic(ev.Command.DeviceID, cmdID), 1, false, payload)
	if err := f.await(ctx, tok); err != nil {
		return err
	}
	f.m.Results.Inc()
	f.answered(ev.Command.DeviceID, cmdID)
	return nil
}

// finalResult returns the answer to send upstream for a command that
// succeeded or failed.
func finalResult(cmd control.Command) ([]byte, bool) {
	switch cmd.Status {
	case control.StatusSucceeded:
		return resultPayload(true, cmd.Result, ""), true
	case control.StatusFailed:
		return resultPayload(false, nil, cmd.Error), true
	}
	return nil, false
}

// resultPayload encodes an answer in the result topic's format:
// {"status":"ok","result":...} or {"status":"error","error":"..."}.
func resultPayload(ok bool, result json.RawMessage, reason string) []byte {
	r := struct {
		Status string          `json:"status"`
		Result json.RawMessage `json:"result,omitempty"`
		Error  string          `json:"error,omitempty"`
	}{Status: "ok", Result: result}
	if !ok {
		r.Status, r.Error = "error", reason
		if r.Error == "" {
			r.Error = "the device reported an error without a reason"
		}
	}
	b, err := json.Marshal(r)
	if err != nil { // a result that is not valid JSON: keep the status
		b, _ = json.Marshal(struct {
			Status string `json:"status"`
		}{r.Status})
	}
	return b
}

// resultTopic is the result topic of a command.
func resultTopic(devID, cmdID string) string {
	return topics.Result(devID, cmdID)
}

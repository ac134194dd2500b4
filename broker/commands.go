package broker

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices/control"
	"github.com/telehub/telehub/devices/topics"
	"github.com/telehub/telehub/internal/wal"
)

// CommandEvents receives what the broker sees of commands: deliveries
// (PUBACKs, or publishes dropped before one), device answers, and
// subscriptions that may make queued commands deliverable. Result's commit
// completes once the answer is stored (also when it returns an error for
// a resend of an answer not yet stored); the answer is acknowledged only
// then.
type CommandEvents interface {
	Delivered(deviceID, commandID string, delivered bool)
	Result(deviceID, commandID string, r control.CommandResult) (wal.Commit, error)
	Subscribed(deviceID string)
}

// StateEvents receives devices' reported state and the expiry of retained
// desired state. Reported's commit completes once the report is stored;
// it is acknowledged only then.
type StateEvents interface {
	Reported(deviceID string, payload []byte, at time.Time) (wal.Commit, error)
	RetainedExpired(deviceID string)
}

const controlClientID = "telehub-control"

// flight names a command publish waiting for its PUBACK: packet IDs are per
// client connection.
type flightKey struct {
	client string
	id     uint16
}

type flight struct{ deviceID, commandID string }

// Control is the broker side of commands and state: it publishes commands
// and desired state through its own inline client, and its hook follows
// command deliveries and takes device answers and state reports. Safe for
// concurrent use.
type Control struct {
	srv      *mqtt.Server
	cl       *mqtt.Client
	sessions *sessions
	access   *accessHook
	commands CommandEvents
	states   StateEvents
	log      *slog.Logger

	// sendMu makes one command publish at a time, so that capture is
	// unambiguous. It is held across the inline publish, whose hooks never
	// send commands.
	sendMu  sync.Mutex
	mu      sync.Mutex
	flights map[flightKey]flight
	capture *sendCapture
	// unrouted holds devices a command found no route to (bounded by
	// maxUnrouted; beyond, the command service's retry sweep finds them):
	// a relay subscribing may be their route.
	unrouted map[string]struct{}
}

// maxUnrouted bounds Control.unrouted.
const maxUnrouted = 4096

// sendCapture records what happened to one command publish while it runs
// (mochi delivers inline publishes synchronously).
type sendCapture struct {
	topic   string
	tracked bool // went out QoS 1: a PUBACK will tell delivery
	dropped bool // the client's write queue was full
}

// NewControl attaches the control hook to b; call it before b.Start.
func NewControl(b *Broker, commands CommandEvents, states StateEvents, logger *slog.Logger) (*Control, error) {
	c := &Control{srv: b.srv, sessions: b.access.sessions, access: b.access, commands: commands, states: states, log: logger,
		flights: map[flightKey]flight{}, unrouted: map[string]struct{}{}}
	c.cl = b.srv.NewClient(nil, "local", controlClientID, true)
	if err := b.srv.AddHook(&controlHook{c: c}, nil); err != nil {
		return nil, fmt.Errorf("broker: add control hook: %w", err)
	}
	return c, nil
}

// SendCommand publishes a command QoS 1 on devices/{id}/commands/{cid},
// with the MQTT 5 response topic, correlation data (the command ID),
// content type and message expiry (the time left before the command
// expires). It returns control.ErrUnreachable unless the device, or a relay
// for it (see relays), is connected and subscribed to the topic and the
// broker took the publish.
func (c *Control) SendCommand(cmd control.Command) error {
	topic := cmd.Topic()
	if !topics.Owns(cmd.DeviceID, topic) { // inline publishes bypass the ACL
		return fmt.Errorf("command topic %q is not the device's", topic)
	}
	left := time.Until(cmd.ExpiresAt)
	if left <= 0 {
		return control.ErrUnreachable
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if !c.reachable(cmd.DeviceID, cmd.ID) {
		c.mu.Lock()
		if len(c.unrouted) < maxUnrouted {
			c.unrouted[cmd.DeviceID] = struct{}{}
		}
		c.mu.Unlock()
		return control.ErrUnreachable
	}
	capt := &sendCapture{topic: topic}
	c.mu.Lock()
	c.capture = capt
	c.mu.Unlock()
	err := c.srv.InjectPacket(c.cl, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   topic,
		Payload:     cmd.Message(),
		PacketID:    1, // inbound packet ID of the inline client; never acknowledged
		Properties: packets.Properties{
			ContentType:           "application/json",
			ResponseTopic:         topics.Responses(cmd.DeviceID),
			CorrelationData:       []byte(cmd.ID),
			MessageExpiryInterval: uint32(max(1, (left+time.Second-1)/time.Second)),
		},
	})
	c.mu.Lock()
	c.capture = nil
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("publish command: %w", err)
	}
	if capt.dropped {
		return control.ErrUnreachable
	}
	if !capt.tracked {
		c.log.Debug("command sent QoS 0 (the device subscribed QoS 0): no delivery confirmation", "device_id", cmd.DeviceID, "command_id", cmd.ID)
	}
	return nil
}

// reachable reports whether a connected client of the device, or a relay
// for it, subscribes to the command's topic. A persistent session of a
// disconnected device does not count: the hub keeps the command (durably)
// until the device is back.
func (c *Control) reachable(deviceID, commandID string) bool {
	subs := c.srv.Topics.Subscribers(topics.Command(deviceID, commandID))
	for clientID := range subs.Subscriptions {
		cl, ok := c.srv.Clients.Get(clientID)
		if ok && !cl.Closed() && c.routes(cl, deviceID, commandID) {
			return true
		}
	}
	return false
}

// routes reports whether a command of the device reaches it through cl:
// cl is the device, or a relay for it.
func (c *Control) routes(cl *mqtt.Client, deviceID, commandID string) bool {
	return c.deviceOf(cl) == deviceID || c.relays(cl, deviceID, commandID)
}

// relays reports whether cl is an integration that may answer the command
// for the device: one whose publish filters cover
// devices/{id}/commands/{cid}/result, such as an edge Telehub the device is
// connected to. Its PUBACK counts as the delivery and its result as the
// device's. An integration that may only read commands (a monitor) is not a
// relay: its copy of the publish neither delivers nor completes anything.
func (c *Control) relays(cl *mqtt.Client, deviceID, commandID string) bool {
	if cl.Net.Inline {
		return false
	}
	se := c.sessions.get(cl)
	if se == nil || se.who.kind != KindIntegration {
		return false
	}
	return c.access.allowed(se.who, topics.Result(deviceID, commandID), true)
}

// isIntegration reports whether cl is an integration client.
func (c *Control) isIntegration(cl *mqtt.Client) bool {
	if cl.Net.Inline {
		return false
	}
	se := c.sessions.get(cl)
	return se != nil && se.who.kind == KindIntegration
}

// deviceOf returns the device ID of a client that is a device, else "".
func (c *Control) deviceOf(cl *mqtt.Client) string {
	if cl.Net.Inline {
		return ""
	}
	id, _ := c.sessions.device(cl)
	return id
}

// PublishDesired publishes a device's desired state retained, QoS 1; an
// empty payload clears it.
func (c *Control) PublishDesired(deviceID string, payload []byte) error {
	topic := topics.Desired(deviceID)
	if !topics.Owns(deviceID, topic) {
		return fmt.Errorf("desired state topic %q is not the device's", topic)
	}
	return c.srv.InjectPacket(c.cl, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    1,
		Properties:  packets.Properties{ContentType: "application/json"},
	})
}

// controlHook is the Control's view of the broker. It runs on the clients'
// goroutines and does bounded work: map lookups and hand-offs.
type controlHook struct {
	mqtt.HookBase
	c *Control
}

var _ mqtt.Hook = (*controlHook)(nil)

func (h *controlHook) ID() string { return "telehub-control" }

func (h *controlHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnPacketRead, mqtt.OnQosPublish, mqtt.OnQosDropped,
		mqtt.OnPublishDropped, mqtt.OnSubscribed, mqtt.OnRetainedExpired:
		return true
	}
	return false
}

// OnQosPublish records a command publish going out QoS 1/2 to a device
// (first send, or resend when a persistent session resumes).
func (h *controlHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if pk.FixedHeader.Type != packets.Publish {
		return
	}
	devID, cmdID, ok := topics.SplitCommand(pk.TopicName)
	if !ok || !h.c.routes(cl, devID, cmdID) {
		return
	}
	h.c.mu.Lock()
	h.c.flights[flightKey{cl.ID, pk.PacketID}] = flight{devID, cmdID}
	if h.c.capture != nil && h.c.capture.topic == pk.TopicName {
		h.c.capture.tracked = true
	}
	h.c.mu.Unlock()
}

// OnPacketRead catches the device's PUBACKs. mochi shares one inflight map
// between both directions of a connection, so its OnQosComplete also fires
// for the broker's own PUBACKs to device publishes; a PUBACK read from the
// device is unambiguous: it acknowledges a publish of ours.
func (h *controlHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Puback {
		return pk, nil
	}
	key := flightKey{cl.ID, pk.PacketID}
	h.c.mu.Lock()
	f, ok := h.c.flights[key]
	delete(h.c.flights, key)
	h.c.mu.Unlock()
	switch {
	case !ok:
	case pk.ReasonCode >= packets.ErrUnspecifiedError.Code:
		// An MQTT 5 device refused the message: resending would be refused
		// again, so the command fails with the device's reason.
		h.answer(f.deviceID, f.commandID, control.CommandResult{
			Error: fmt.Sprintf("the device refused the command message: PUBACK reason 0x%02x", pk.ReasonCode)})
	default:
		h.c.commands.Delivered(f.deviceID, f.commandID, true)
	}
	return pk, nil
}

// OnQosDropped: the broker gave up a publish (clean session ended, session
// taken over cleanly, inflight expired); the command goes back to queued.
func (h *controlHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	h.dropped(cl, pk.PacketID)
}

// OnPublishDropped: the client's write queue was full.
func (h *controlHook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	if devID, cmdID, ok := topics.SplitCommand(pk.TopicName); ok && h.c.routes(cl, devID, cmdID) {
		h.c.mu.Lock()
		if h.c.capture != nil && h.c.capture.topic == pk.TopicName {
			h.c.capture.dropped, h.c.capture.tracked = true, false
		}
		h.c.mu.Unlock()
	}
	// mochi rolls back the inflight entry without OnQosDropped; the packet
	// ID it had assigned is not known here, so drop by topic.
	h.c.mu.Lock()
	for k, f := range h.c.flights {
		if k.client == cl.ID && topics.Command(f.deviceID, f.commandID) == pk.TopicName {
			delete(h.c.flights, k)
		}
	}
	h.c.mu.Unlock()
}

func (h *controlHook) dropped(cl *mqtt.Client, id uint16) {
	key := flightKey{cl.ID, id}
	h.c.mu.Lock()
	f, ok := h.c.flights[key]
	delete(h.c.flights, key)
	h.c.mu.Unlock()
	if ok {
		h.c.commands.Delivered(f.deviceID, f.commandID, false)
	}
}

// OnSubscribed: a device that subscribes may now receive queued commands;
// an integration that subscribes may be the relay of the devices that
// commands found no route to.
func (h *controlHook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) {
	if id := h.c.deviceOf(cl); id != "" {
		h.c.commands.Subscribed(id)
		return
	}
	if !h.c.isIntegration(cl) {
		return
	}
	h.c.mu.Lock()
	ids := h.c.unrouted
	h.c.unrouted = map[string]struct{}{}
	h.c.mu.Unlock()
	for id := range ids {
		h.c.commands.Subscribed(id) // does not block
	}
}

// OnRetainedExpired: mochi drops retained messages after its maximum
// message expiry; a desired state must stay, so it is published again.
func (h *controlHook) OnRetainedExpired(filter string) {
	if id, rest, ok := topics.Split(filter); ok && rest == topics.RestDesired {
		h.c.states.RetainedExpired(id)
	}
}

// OnPublish takes command results, MQTT 5 responses and state reports, and
// refuses device publishes on the topics only the hub may publish on (a
// device's command topics and its desired state).
//
// An integration relaying for devices (an edge Telehub) answers their
// commands on the result topic: the ACL has already allowed the publish
// (its publish filters cover the topic), so the answer counts as the
// device's. A device never answers for another: its ACL allows only its
// own topics, and its publishes on other devices' topics end here.
func (h *controlHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	id, rest, ok := topics.Split(pk.TopicName)
	if !ok {
		return pk, nil
	}
	if id != h.c.deviceOf(cl) {
		switch {
		case isResult(rest) && h.c.isIntegration(cl):
			return h.result(cl, pk, id, rest)
		case rest == topics.RestState && h.c.isIntegration(cl):
			return h.relayedState(cl, pk, id)
		}
		return pk, nil
	}
	switch {
	case rest == topics.RestState:
		c, err := h.c.states.Reported(id, pk.Payload, time.Now())
		if err != nil {
			h.c.log.Warn("reported state refused", "device_id", id, "err", err)
			return pk, refuse(h.c.srv, cl, pk, packets.ErrPayloadFormatInvalid)
		}
		return h.ackAfter(cl, pk, id, c)
	case rest == topics.RestResponses:
		cmdID := string(pk.Properties.CorrelationData)
		if cmdID == "" {
			h.c.log.Warn("command response without correlation data", "device_id", id)
			return pk, refuse(h.c.srv, cl, pk, packets.ErrProtocolViolation)
		}
		return h.ackAfter(cl, pk, id, h.answer(id, cmdID, control.ParseResponse(pk.Payload)))
	case isResult(rest):
		return h.result(cl, pk, id, rest)
	case rest == topics.RestDesired || strings.HasPrefix(rest, topics.RestCommands):
		h.c.log.Warn("device published on a hub topic", "device_id", id, "topic", pk.TopicName)
		if cl.Properties.ProtocolVersion < 5 && pk.FixedHeader.Qos > 0 {
			cl.Stop(packets.ErrNotAuthorized) // as mochi does for an ACL refusal
		}
		return pk, refuse(h.c.srv, cl, pk, packets.ErrNotAuthorized)
	}
	return pk, nil
}

// relayedState takes the reported state an integration relays for a device
// (an edge Telehub forwarding the state its devices report), as the device's
// own report. State of a device not registered here is dropped: the edge
// sends every device's state again on each connection.
func (h *controlHook) relayedState(cl *mqtt.Client, pk packets.Packet, id string) (packets.Packet, error) {
	if _, ok := h.c.access.reg.Get(id); !ok {
		h.c.log.Debug("relayed state of a device not registered here dropped", "device_id", clip(id), "client", cl.ID)
		return pk, packets.CodeSuccessIgnore
	}
	c, err := h.c.states.Reported(id, pk.Payload, time.Now())
	if err != nil {
		h.c.log.Warn("relayed reported state refused", "device_id", id, "client", cl.ID, "err", err)
		return pk, refuse(h.c.srv, cl, pk, packets.ErrPayloadFormatInvalid)
	}
	return h.ackAfter(cl, pk, id, c)
}

// isResult reports whether rest (after devices/{id}/) is a result topic.
func isResult(rest string) bool {
	return strings.HasPrefix(rest, topics.RestCommands) && strings.HasSuffix(rest, topics.ResultSuffix)
}

// result takes an answer on devices/{id}/commands/{cid}/result, rest being
// the part after devices/{id}/.
func (h *controlHook) result(cl *mqtt.Client, pk packets.Packet, id, rest string) (packets.Packet, error) {
	cmdID := strings.TrimSuffix(strings.TrimPrefix(rest, topics.RestCommands), topics.ResultSuffix)
	if strings.Contains(cmdID, "/") || cmdID == "" {
		return pk, nil
	}
	r, err := control.ParseResult(pk.Payload)
	if err != nil {
		h.c.log.Warn("command result refused", "device_id", id, "command_id", cmdID, "err", err)
		return pk, refuse(h.c.srv, cl, pk, packets.ErrPayloadFormatInvalid)
	}
	return h.ackAfter(cl, pk, id, h.answer(id, cmdID, r))
}

// answer hands a device's answer to the command service and returns the
// commit its acknowledgement must wait for.
func (h *controlHook) answer(deviceID, cmdID string, r control.CommandResult) wal.Commit {
	c, err := h.c.commands.Result(deviceID, cmdID, r)
	if err != nil {
		h.c.log.Info("command answer ignored", "device_id", deviceID, "command_id", cmdID, "err", err)
	}
	return c
}

// ackAfter makes the acknowledgement of a QoS 1/2 publish (a result, a
// response, a state report) wait until c, the state database's
// transaction holding what it said, is committed: a kill -9 after the
// PUBACK loses nothing. As for telemetry, the connection's ackHold holds
// the PUBACK back and the read goroutine goes on; a connection without one
// waits here. If the write failed, the publish is refused as telemetry is
// when the log fails (MQTT 5: 0x80; MQTT 3: disconnected, so it is resent).
func (h *controlHook) ackAfter(cl *mqtt.Client, pk packets.Packet, deviceID string, c wal.Commit) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 0 {
		return pk, nil
	}
	var err error
	if a, ok := cl.Net.Conn.(*ackHold); ok {
		err = a.hold(c)
	} else {
		_, err = c.Wait()
	}
	if err != nil {
		h.c.log.Warn("device message not stored, not acknowledged", "device_id", deviceID, "topic", pk.TopicName, "err", err)
		return pk, ingestRefusal(h.c.srv, cl, pk, err)
	}
	return pk, nil
}

// refuse answers an MQTT 5 QoS 1/2 publish with code (PUBACK, or PUBREC
// for QoS 2) and drops the message. Others are acknowledged (MQTT 3 has no
// negative PUBACK, and a resend would fail again) and dropped.
func refuse(srv *mqtt.Server, cl *mqtt.Client, pk packets.Packet, code packets.Code) error {
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
		return refusePublish(srv, cl, pk, code)
	}
	return packets.CodeSuccessIgnore
}

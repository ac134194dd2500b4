package control

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/oklog/ulid/v2"

	"github.com/telehub/telehub/devices/topics"
)

// CommandStatus is where a command is in its lifecycle.
type CommandStatus string

// Command statuses. queued, sent and delivered are pending; succeeded,
// failed and expired are final.
const (
	// StatusQueued: stored, waiting for the device to be connected and
	// subscribed (or to be sent again after a dropped delivery).
	StatusQueued CommandStatus = "queued"
	// StatusSent: published QoS 1 on the device's command topic.
	StatusSent CommandStatus = "sent"
	// StatusDelivered: the device acknowledged the publish (PUBACK).
	StatusDelivered CommandStatus = "delivered"
	// StatusSucceeded: the device answered with status "ok".
	StatusSucceeded CommandStatus = "succeeded"
	// StatusFailed: the device answered with status "error".
	StatusFailed CommandStatus = "failed"
	// StatusExpired: no answer came before the command's expiry.
	StatusExpired CommandStatus = "expired"
)

// Final reports whether no further change can happen.
func (s CommandStatus) Final() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusExpired
}

// ParseCommandStatus reads a status name.
func ParseCommandStatus(s string) (CommandStatus, error) {
	switch st := CommandStatus(s); st {
	case StatusQueued, StatusSent, StatusDelivered, StatusSucceeded, StatusFailed, StatusExpired:
		return st, nil
	}
	return "", fmt.Errorf("status %q: use queued, sent, delivered, succeeded, failed or expired", s)
}

// Transition is one step of a command's history.
type Transition struct {
	Status CommandStatus `json:"status"`
	At     time.Time     `json:"at"`
	Detail string        `json:"detail,omitempty"`
}

// maxHistory bounds a command's history; resends after dropped deliveries
// could otherwise grow it without end. The final transition is always kept.
const maxHistory = 32

// Command is a control command addressed to one device, with everything
// known about what happened to it.
type Command struct {
	ID             string          `json:"id"`
	DeviceID       string          `json:"device_id"`
	Name           string          `json:"name"`
	Params         json.RawMessage `json:"params"`
	Status         CommandStatus   `json:"status"`
	Revision       uint64          `json:"revision"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	CreatedBy      string          `json:"created_by"`
	CreatedAt      time.Time       `json:"created_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
	ExpiresAt      time.Time       `json:"expires_at"`
	SentAt         *time.Time      `json:"sent_at,omitempty"`
	DeliveredAt    *time.Time      `json:"delivered_at,omitempty"`
	CompletedAt    *time.Time      `json:"completed_at,omitempty"`
	Attempts       int             `json:"attempts"`
	Result         json.RawMessage `json:"result,omitempty"`
	Error          string          `json:"error,omitempty"`
	ResultVia      string          `json:"result_via,omitempty"`
	History        []Transition    `json:"history"`
}

// Topic returns the MQTT topic the command is published on.
func (c Command) Topic() string { return topics.Command(c.DeviceID, c.ID) }

// Message returns the payload published to the device:
// {"id":...,"name":...,"params":{...},"expires_at":...}.
func (c Command) Message() []byte {
	b, _ := json.Marshal(struct {
		ID        string          `json:"id"`
		Name      string          `json:"name"`
		Params    json.RawMessage `json:"params"`
		ExpiresAt time.Time       `json:"expires_at"`
	}{c.ID, c.Name, c.Params, c.ExpiresAt})
	return b
}

func (c Command) clone() Command {
	c.History = slices.Clone(c.History)
	return c
}

// How a result reached the hub.
const (
	ViaResultTopic   = "result_topic"
	ViaResponseTopic = "response_topic"
)

// CommandResult is a device's answer to a command.
type CommandResult struct {
	OK     bool
	Result json.RawMessage
	Error  string
	Via    string
}

const maxErrorLen = 1024

// ParseResult decodes an answer on devices/{id}/commands/{cid}/result:
// {"status":"ok"|"error","result":{...},"error":"..."}.
func ParseResult(payload []byte) (CommandResult, error) {
	var r struct {
		Status string          `json:"status"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(payload, &r); err != nil {
		return CommandResult{}, fmt.Errorf("command result: %w", err)
	}
	res := CommandResult{Result: r.Result, Error: truncate(r.Error, maxErrorLen), Via: ViaResultTopic}
	switch r.Status {
	case "ok":
		res.OK = true
	case "error":
		if res.Error == "" {
			res.Error = "the device reported an error without a reason"
		}
	default:
		return CommandResult{}, fmt.Errorf(`command result: status %q: use "ok" or "error"`, r.Status)
	}
	if bytes.Equal(bytes.TrimSpace(res.Result), []byte("null")) {
		res.Result = nil
	}
	return res, nil
}

// ParseResponse decodes an MQTT 5 response to a command. A payload in the
// result format is read as one; any other payload is the result of a
// success (kept as JSON, or as a JSON string when it is not JSON), so that
// generic request/response clients work.
func ParseResponse(payload []byte) CommandResult {
	if r, err := ParseResult(payload); err == nil {
		r.Via = ViaResponseTopic
		return r
	}
	res := CommandResult{OK: true, Via: ViaResponseTopic}
	trimmed := bytes.TrimSpace(payload)
	switch {
	case len(trimmed) == 0:
	case json.Valid(trimmed):
		res.Result = json.RawMessage(slices.Clone(trimmed))
	default:
		b, _ := json.Marshal(string(payload))
		res.Result = b
	}
	return res
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// newCommandID returns a 26-character ID that sorts by creation time: a
// ULID (48 bits of Unix milliseconds, 80 bits of entropy) from
// oklog/ulid, written as its 16 bytes in lower-case Crockford base32 (safe
// in MQTT topics). That text form is ours, not ULID's canonical one (which
// pads two zero bits in front): it is the form IDs have had since the
// first release, so stored IDs and new ones sort together. IDs made in the
// same millisecond take ulid.Monotonic's next value, and a clock stepped
// back keeps the last millisecond, so that IDs sort in creation order too:
// commands are reloaded and sent in ID order after a restart.
func newCommandID(now time.Time) string {
	idSource.mu.Lock()
	defer idSource.mu.Unlock()
	ms := max(ulid.Timestamp(now), idSource.ms)
	id, err := ulid.New(ms, idSource.entropy)
	if errors.Is(err, ulid.ErrMonotonicOverflow) {
		// 2^80 values used up in one millisecond would take the next one.
		ms++
		id, err = ulid.New(ms, idSource.entropy)
	}
	if err != nil {
		panic(err) // crypto/rand never fails on Linux; ms is far below ulid.MaxTime
	}
	idSource.ms = ms
	return idEncoding.EncodeToString(id[:])
}

// idSource is the entropy of command IDs; ulid.MonotonicEntropy is not safe
// for concurrent use, so mu guards it.
var idSource = struct {
	mu      sync.Mutex
	ms      uint64
	entropy *ulid.MonotonicEntropy
}{entropy: ulid.Monotonic(rand.Reader, 0)}

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > 128 {
		return false
	}
	for _, r := range k {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

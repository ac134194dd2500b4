package live

import (
	"encoding/json"
	"fmt"
	"time"
)

// Message kinds of the live stream.
const (
	KindReading  = "reading"
	KindPresence = "presence"
	KindAlert    = "alert"
	KindCommand  = "command"
	KindState    = "state"
)

// Event builds a message of a kind other than reading. Its body carries v
// under a key named like the kind:
//
//	{"kind":"alert","device_id":"t1","ts":"2026-11-23T10:00:00Z","alert":{...}}
func Event(kind, deviceID string, ts time.Time, v any) (Message, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return Message{}, fmt.Errorf("live: encode %s event: %w", kind, err)
	}
	body, err := json.Marshal(map[string]any{"kind": kind, "device_id": deviceID, "ts": ts.UTC(), kind: json.RawMessage(payload)})
	if err != nil {
		return Message{}, fmt.Errorf("live: encode %s event: %w", kind, err)
	}
	return Message{Kind: kind, DeviceID: deviceID, Body: body}, nil
}

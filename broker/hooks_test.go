package broker

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDeviceOwns(t *testing.T) {
	for _, tc := range []struct {
		id, topic string
		ok        bool
	}{
		{"d1", "devices/d1/telemetry", true},
		{"d1", "devices/d1/commands/+", true},
		{"d1", "devices/d1/#", true},
		{"d1", "devices/d1/", false},
		{"d1", "devices/d1", false},
		{"d1", "devices/d10/telemetry", false},
		{"d10", "devices/d1/telemetry", false},
		{"d1", "devices/+/telemetry", false},
		{"d1", "devices/#", false},
		{"d1", "#", false},
		{"d1", "other/d1/telemetry", false},
		{"", "devices//telemetry", false},
	} {
		t.Run(tc.id+" "+tc.topic, func(t *testing.T) {
			require.Equal(t, tc.ok, DeviceOwns(tc.id, tc.topic))
		})
	}
}

func TestSplitDeviceTopic(t *testing.T) {
	for _, tc := range []struct {
		topic, id, rest string
		ok              bool
	}{
		{"devices/d1/telemetry", "d1", "telemetry", true},
		{"devices/d1/commands/c1/result", "d1", "commands/c1/result", true},
		{"devices/d1", "", "", false},
		{"devices//telemetry", "", "", false},
		{"devices/d1/", "", "", false},
		{"x/d1/telemetry", "", "", false},
	} {
		t.Run(tc.topic, func(t *testing.T) {
			id, rest, ok := SplitDeviceTopic(tc.topic)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.id, id)
			require.Equal(t, tc.rest, rest)
		})
	}
}

func FuzzSplitDeviceTopic(f *testing.F) {
	for _, s := range []string{"devices/d1/telemetry", "devices//x", "devices/a/b/c", "", "devices/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		id, rest, ok := SplitDeviceTopic(topic)
		if !ok {
			return
		}
		if "devices/"+id+"/"+rest != topic || id == "" || rest == "" {
			t.Fatalf("split %q into %q, %q", topic, id, rest)
		}
		if DeviceOwns(id, topic) != (len(rest) > 0) {
			t.Fatalf("device %q must own %q", id, topic)
		}
	})
}

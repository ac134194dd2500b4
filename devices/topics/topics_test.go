package topics

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOwns(t *testing.T) {
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
			require.Equal(t, tc.ok, Owns(tc.id, tc.topic))
		})
	}
}

func TestSplit(t *testing.T) {
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
			id, rest, ok := Split(tc.topic)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.id, id)
			require.Equal(t, tc.rest, rest)
		})
	}
}

func FuzzSplit(f *testing.F) {
	for _, s := range []string{"devices/d1/telemetry", "devices//x", "devices/a/b/c", "", "devices/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		id, rest, ok := Split(topic)
		if !ok {
			return
		}
		if "devices/"+id+"/"+rest != topic || id == "" || rest == "" {
			t.Fatalf("split %q into %q, %q", topic, id, rest)
		}
		if Owns(id, topic) != (len(rest) > 0) {
			t.Fatalf("device %q must own %q", id, topic)
		}
	})
}

func TestSplitCommand(t *testing.T) {
	for _, tc := range []struct {
		topic, dev, cmd string
		ok              bool
	}{
		{"devices/d1/commands/c1", "d1", "c1", true},
		{"devices/d1/commands/c1/result", "", "", false},
		{"devices/d1/commands/", "", "", false},
		{"devices/d1/state", "", "", false},
		{"other/d1/commands/c1", "", "", false},
	} {
		dev, cmd, ok := SplitCommand(tc.topic)
		require.Equal(t, tc.ok, ok, tc.topic)
		require.Equal(t, tc.dev, dev, tc.topic)
		require.Equal(t, tc.cmd, cmd, tc.topic)
	}
}

func TestSplitCommandUpstream(t *testing.T) {
	tests := []struct {
		topic, dev, cid string
		ok              bool
	}{
		{"devices/t1/commands/abc", "t1", "abc", true},
		{"devices/t1/commands/abc/result", "", "", false},
		{"devices/t1/commands/", "", "", false},
		{"devices//commands/abc", "", "", false},
		{"site/t1/commands/abc", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.topic, func(t *testing.T) {
			dev, cid, ok := SplitCommand(tc.topic)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.dev, dev)
			require.Equal(t, tc.cid, cid)
		})
	}
}

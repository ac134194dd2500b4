package broker

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFilterCovers(t *testing.T) {
	for _, tc := range []struct {
		allowed, requested string
		ok                 bool
	}{
		{"devices/+/telemetry", "devices/d1/telemetry", true},
		{"devices/+/telemetry", "devices/+/telemetry", true},
		{"devices/+/telemetry", "devices/#", false},
		{"devices/+/telemetry", "devices/d1/state", false},
		{"devices/+/telemetry", "devices/d1/telemetry/x", false},
		{"devices/+/telemetry", "devices//telemetry", true}, // '+' matches an empty level
		{"site/#", "site", true},                            // "a/#" matches "a"
		{"site/#", "site/a/b", true},
		{"site/#", "site/#", true},
		{"site/#", "site/+/x", true},
		{"site/#", "sites/a", false},
		{"site/+", "site/#", false},
		{"site/a", "site/+", false},
		{"#", "anything/at/all", true},
		{"#", "$SYS/broker/uptime", false},
		{"+/broker/uptime", "$SYS/broker/uptime", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
		{"a/b", "a/b", true},
		{"a/b", "a/b/", false},
		{"a/b/", "a/b/", true},
		{"", "a", false},
		{"a", "", false},
	} {
		t.Run(tc.allowed+" "+tc.requested, func(t *testing.T) {
			require.Equal(t, tc.ok, filterCovers(tc.allowed, tc.requested))
		})
	}
}

func TestUnshareAndOutsideDevices(t *testing.T) {
	for _, tc := range []struct{ in, out string }{
		{"$share/g/site/#", "site/#"},
		{"$SHARE/g/devices/+/telemetry", "devices/+/telemetry"},
		{"$share/g", ""},
		{"site/#", "site/#"},
	} {
		f, _ := unshare(tc.in)
		require.Equal(t, tc.out, f, tc.in)
	}
	for _, tc := range []struct {
		topic string
		ok    bool
	}{
		{"site/a", true}, {"#", true}, {"+/x", true}, {"devicesx/a", true},
		{"devices", false}, {"devices/a", false}, {"$SYS/x", false}, {"$sys", false}, {"$share/g/x", false}, {"", false},
		{"$site/x", true}, {"$SYSTEM/x", false}, {"$sy", true},
	} {
		require.Equal(t, tc.ok, anonymousMayUse(tc.topic), tc.topic)
	}
}

// FuzzFilterCovers: a filter covers itself, '#' covers everything that does
// not start with '$', and covering a topic name is ordinary MQTT matching.
func FuzzFilterCovers(f *testing.F) {
	for _, s := range [][2]string{{"devices/+/telemetry", "devices/d1/telemetry"}, {"a/#", "a"}, {"#", "$SYS/x"}, {"+/+", "a//"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, allowed, topic string) {
		if allowed == "" || topic == "" {
			return
		}
		if validFilter(allowed) && !strings.ContainsAny(topic, "+#") {
			if got, want := filterCovers(allowed, topic), matches(allowed, topic); got != want {
				t.Fatalf("filterCovers(%q, %q) = %v, MQTT matching says %v", allowed, topic, got, want)
			}
		}
		if validFilter(allowed) && !filterCovers(allowed, allowed) {
			t.Fatalf("%q does not cover itself", allowed)
		}
		if topic[0] != '$' && !filterCovers("#", topic) {
			t.Fatalf("# does not cover %q", topic)
		}
	})
}

// matches is MQTT topic matching written the plain way, for the fuzz test.
func matches(filter, topic string) bool {
	if topic[0] == '$' && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, l := range fl {
		if l == "#" {
			return i == len(fl)-1
		}
		if i >= len(tl) || l != "+" && l != tl[i] {
			return false
		}
	}
	return len(fl) == len(tl)
}

func validFilter(f string) bool {
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if len(l) > 1 && strings.ContainsAny(l, "+#") || l == "#" && i != len(levels)-1 {
			return false
		}
	}
	return true
}

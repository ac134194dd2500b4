package broker

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// BenchmarkFloodMemory measures what one client can make the broker hold,
// with the default limits: each iteration connects one more device that
// floods the broker and stays connected; the heap (after a GC) and the
// resident memory are compared before and after, per client. Run it with
// a fixed count, e.g.
//
//	go test -run '^$' -bench FloodMemory -benchtime 4x ./broker/
//
// idle is the cost of a connected device that does nothing, the baseline
// the floods add to. alias binds every topic alias the broker allows to a
// topic of max_topic_bytes in a packet of 250 KiB, then sends 1,000
// publishes with 60 KB topics under aliases. retained publishes 150
// retained messages of 200 KiB. subscriptions sends 100 SUBSCRIBE packets
// of 240 KiB, each with one filter of max_topic_bytes the broker takes and
// 200 it refuses as too long.
func BenchmarkFloodMemory(b *testing.B) {
	for _, sc := range []struct {
		name  string
		flood func(b *testing.B, f *fixture, id string)
	}{
		{"idle", floodIdle},
		{"alias", floodAliases},
		{"retained", floodRetained},
		{"subscriptions", floodSubscriptions},
	} {
		b.Run(sc.name, func(b *testing.B) {
			f := newFixture(b, nil)
			heap0, rss0 := memoryNow()
			for i := range b.N {
				sc.flood(b, f, "flood-"+strconv.Itoa(i))
			}
			heap1, rss1 := memoryNow()
			b.ReportMetric(float64(heap1-heap0)/float64(b.N), "heap-B/client")
			b.ReportMetric(float64(rss1-rss0)/float64(b.N), "rss-B/client")
			b.ReportMetric(0, "ns/op") // a memory measurement, not a speed one
		})
	}
}

// memoryNow returns the live heap after a collection and the resident set.
func memoryNow() (heap, rss int64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			rss = pages * int64(os.Getpagesize())
		}
	}
	return int64(ms.HeapAlloc), rss
}

func floodIdle(b *testing.B, f *fixture, id string) {
	tok := f.device(b, id)
	_, err := f.dial(b, "", id, tok, nil)
	require.NoError(b, err)
}

func floodAliases(b *testing.B, f *fixture, id string) {
	tok := f.device(b, id)
	c, ack := dialRaw5(b, f.b.Addr(), id+"-c", id, tok)
	max := ack.Properties.TopicAliasMaximum
	if max == 0 {
		max = 1000 // not announced: the broker took whatever came
	}
	prefix := "devices/" + id + "/"
	fill := make([]byte, 250<<10) // the packet's room besides the topic: mochi's topic strings point into it
	for a := range max {
		name := strconv.Itoa(int(a)) + "/"
		c.publish(b, prefix+name+strings.Repeat("a", 1024-len(prefix)-len(name)), a+1, 0, 0, fill)
	}
	long := prefix + strings.Repeat("l", 60_000)
	for i := range 1000 {
		c.publish(b, long+strconv.Itoa(i), uint16(i)%max+1, 0, 0, []byte("x"))
	}
	// A QoS 1 publish: its acknowledgement (whatever its code) comes after
	// the broker has processed all of the above.
	c.publish(b, prefix+"end", 0, 1, 1, []byte("x"))
	for {
		pk, err := c.read(30 * time.Second)
		require.NoError(b, err)
		if pk.FixedHeader.Type == packets.Puback {
			return
		}
	}
}

func floodRetained(b *testing.B, f *fixture, id string) {
	tok := f.device(b, id)
	c, err := f.dial(b, "", id, tok, nil)
	require.NoError(b, err)
	payload := strings.Repeat("r", 200<<10)
	for i := range 150 {
		c.publish(b, "devices/"+id+"/r"+strconv.Itoa(i), 1, true, payload)
	}
}

func floodSubscriptions(b *testing.B, f *fixture, id string) {
	tok := f.device(b, id)
	c, err := f.dial(b, "", id, tok, nil)
	require.NoError(b, err)
	prefix := "devices/" + id + "/"
	for i := range 100 {
		name := strconv.Itoa(i) + "/"
		filters := map[string]byte{prefix + name + strings.Repeat("s", 1024-len(prefix)-len(name)): 0}
		for j := range 200 {
			filters[prefix+name+strconv.Itoa(j)+strings.Repeat("L", 1100)] = 0
		}
		tok := c.SubscribeMultiple(filters, nil)
		require.True(b, tok.WaitTimeout(30*time.Second))
		require.NoError(b, tok.Error())
	}
	cl, ok := f.b.srv.Clients.Get(id + "-c")
	require.True(b, ok)
	require.Equal(b, 100, cl.State.Subscriptions.Len())
}

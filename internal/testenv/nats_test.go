package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsConnect connects to all the URLs, reconnecting quickly to another
// server when one dies, and closes the connection when the test ends.
func natsConnect(t *testing.T, urls []string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(strings.Join(urls, ","), nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// createR3Stream creates a stream with a random name, replicated on the
// three servers in files, with a one-minute duplicate window.
func createR3Stream(t *testing.T, js jetstream.JetStream) jetstream.Stream {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	name := "T_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       name,
		Subjects:   []string{name + ".>"},
		Replicas:   3,
		Storage:    jetstream.FileStorage,
		Duplicates: time.Minute,
	})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	return s
}

func streamInfo(t *testing.T, s jetstream.Stream) *jetstream.StreamInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info
}

// TestNATSClusterDeduplicates: the shared cluster replicates a file stream
// on its three servers, stores a message published twice with one
// Nats-Msg-Id once, and a consumer reads back what was stored.
func TestNATSClusterDeduplicates(t *testing.T) {
	js := natsConnect(t, NATSCluster(t))
	s := createR3Stream(t, js)
	name := s.CachedInfo().Config.Name
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		js.DeleteStream(ctx, name)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	info := streamInfo(t, s)
	if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream is not replicated on three servers: %+v", info.Cluster)
	}

	first, err := js.Publish(ctx, name+".a", []byte("one"), jetstream.WithMsgID("m1"))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	again, err := js.Publish(ctx, name+".a", []byte("one"), jetstream.WithMsgID("m1"))
	if err != nil {
		t.Fatalf("publish again: %v", err)
	}
	if first.Duplicate || !again.Duplicate || again.Sequence != first.Sequence {
		t.Fatalf("first ack %+v, second ack %+v: want the second a duplicate of the first", first, again)
	}
	if _, err := js.Publish(ctx, name+".b", []byte("two"), jetstream.WithMsgID("m2")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if n := streamInfo(t, s).State.Msgs; n != 2 {
		t.Fatalf("stream holds %d messages, want 2", n)
	}

	cons, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	batch, err := cons.FetchNoWait(10)
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, fmt.Sprintf("%s=%s (%s)", m.Subject(), m.Data(), m.Headers().Get(jetstream.MsgIDHeader)))
		if err := m.Ack(); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	if err := batch.Error(); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	want := []string{name + ".a=one (m1)", name + ".b=two (m2)"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("read back %q, want %q", got, want)
	}
}

// TestNATSClusterLeaderKill: on a private cluster, killing the server that
// leads a stream stops nothing for long: a new leader is elected among the
// other two, publishes are acknowledged again and nothing acknowledged is
// lost; the killed server comes back and catches up.
func TestNATSClusterLeaderKill(t *testing.T) {
	c := StartNATSCluster(t)
	js := natsConnect(t, c.URLs())
	s := createR3Stream(t, js)
	name := s.CachedInfo().Config.Name

	acked := 0
	// publish tries until timeout, each attempt with the same message ID, so
	// that an attempt stored but not acknowledged is not stored twice.
	publish := func(timeout time.Duration) {
		t.Helper()
		id := fmt.Sprintf("m%d", acked)
		Eventually(t, timeout, "publish "+id+" acknowledged", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := js.Publish(ctx, name+".x", []byte(id), jetstream.WithMsgID(id))
			return err == nil
		})
		acked++
	}
	for range 5 {
		publish(10 * time.Second)
	}

	leader := streamInfo(t, s).Cluster.Leader
	c.Kill(c.Index(leader))
	// Raft elects a new leader after 4 to 9 s without heartbeats.
	for range 5 {
		publish(30 * time.Second)
	}
	info := streamInfo(t, s)
	if info.Cluster.Leader == leader || info.Cluster.Leader == "" {
		t.Fatalf("stream leader %q after killing %s", info.Cluster.Leader, leader)
	}
	if info.State.Msgs != uint64(acked) {
		t.Fatalf("stream holds %d messages, want the %d acknowledged", info.State.Msgs, acked)
	}

	c.Start(c.Index(leader))
	c.WaitHealthy(30 * time.Second)
	Eventually(t, 30*time.Second, leader+" current again in the stream's replicas", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil {
			return false
		}
		for _, p := range info.Cluster.Replicas {
			if p.Name == leader {
				return p.Current && !p.Offline
			}
		}
		return false
	})
	publish(10 * time.Second)
}

package forward

import (
	"context"
	"encoding/json"
	"fmt"

	paho "github.com/eclipse/paho.mqtt.golang"
	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/devices/control"
)

// Answers that outlive a restart: the forwarder notes every command from
// the upstream it accepted, durably and before the upstream's PUBACK, in a
// bucket of the hub's state database, and strikes it out once the upstream
// has acknowledged the command's answer (or the command expired or is gone
// here, since then there is nothing to answer). At the start of every
// connection it goes over what is left: a command that became final while
// the uplink was down, or just before the edge stopped, is answered then,
// whether or not the live stream still holds its completion. The live
// stream remains the prompt path while connected; an answer sent twice is
// ignored by the upstream.

// answerBucket holds the commands from the upstream not yet answered
// there: key device ID + "\x00" + upstream command ID, value a pendingAnswer.
var answerBucket = []byte("forward_answers")

// pendingAnswer is a command from the upstream whose answer the upstream
// has not acknowledged.
type pendingAnswer struct {
	DeviceID string `json:"device_id"`
	Upstream string `json:"upstream_id"` // the upstream's command ID
	Local    string `json:"local_id"`    // this hub's command ID
}

func answerKey(devID, upstreamID string) []byte { return []byte(devID + "\x00" + upstreamID) }

// answerBook is the durable list of pending answers. Safe for concurrent
// use (bbolt serialises writers).
type answerBook struct{ db *bolt.DB }

func (b *answerBook) add(p pendingAnswer) error {
	v, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(answerBucket).Put(answerKey(p.DeviceID, p.Upstream), v)
	})
}

func (b *answerBook) done(devID, upstreamID string) error {
	return b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(answerBucket).Delete(answerKey(devID, upstreamID)) })
}

func (b *answerBook) list() ([]pendingAnswer, error) {
	var out []pendingAnswer
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(answerBucket).ForEach(func(k, v []byte) error {
			var p pendingAnswer
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("pending answer %q: %w", k, err)
			}
			out = append(out, p)
			return nil
		})
	})
	return out, err
}

// KeepAnswers makes the answers to commands from the upstream survive a
// restart of this hub or of the uplink: the forwarder keeps its list of
// unanswered commands in db (the hub's state database). Call it once,
// before RouteCommands; without it an answer reached while the uplink is
// down is sent only while the live stream's replay buffer holds it, and
// not after a restart.
func (f *Forwarder) KeepAnswers(db *bolt.DB) error {
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(answerBucket)
		return err
	}); err != nil {
		return fmt.Errorf("forward: pending answers: %w", err)
	}
	f.answers = &answerBook{db: db}
	return nil
}

// book returns the pending answers once commands are routed (KeepAnswers
// is called before RouteCommands, which publishes it), else nil.
func (f *Forwarder) book() *answerBook {
	select {
	case <-f.routed:
		return f.answers
	default:
		return nil
	}
}

// noteAnswer records that the upstream command cmdID for devID is the local
// command localID and waits for its answer. It runs before the upstream's
// PUBACK; a failure is logged (the answer then goes only by the live
// stream).
func (f *Forwarder) noteAnswer(devID, cmdID, localID string) {
	b := f.book()
	if b == nil {
		return
	}
	if err := b.add(pendingAnswer{DeviceID: devID, Upstream: cmdID, Local: localID}); err != nil {
		f.logger.Error("note a command from the upstream as unanswered; its answer will not survive a restart", "device_id", devID, "command_id", cmdID, "err", err)
	}
}

// answered strikes out an answer the upstream acknowledged.
func (f *Forwarder) answered(devID, cmdID string) {
	b := f.book()
	if b == nil {
		return
	}
	if err := b.done(devID, cmdID); err != nil {
		f.logger.Warn("strike out an answered command; it is answered again after the next connection", "device_id", devID, "command_id", cmdID, "err", err)
	}
}

// Getter finds a command of this hub (control.Commands); the command
// service given to RouteCommands has it when answers are kept.
type Getter interface {
	Get(deviceID, id string) (control.Command, bool)
}

// relayPending answers, on a new connection, the commands from the
// upstream that became final and whose answer the upstream has not
// acknowledged; it then does the same whenever the live stream lost
// completions. It returns when ctx ends or a publish fails (the connection
// is then going down, and the next one tries again).
func (f *Forwarder) relayPending(ctx context.Context, c paho.Client) {
	select {
	case <-f.routed:
	case <-ctx.Done():
		return
	}
	get, ok := f.commands.(Getter)
	if f.answers == nil || !ok {
		return
	}
	for {
		if err := f.relayOnce(ctx, c, get); err != nil {
			if ctx.Err() == nil {
				f.logger.Warn("answer commands from the upstream; trying again on the next connection", "err", err)
			}
			return
		}
		select {
		case <-f.recheck:
		case <-ctx.Done():
			return
		}
	}
}

func (f *Forwarder) relayOnce(ctx context.Context, c paho.Client, get Getter) error {
	pending, err := f.answers.list()
	if err != nil {
		return err
	}
	for _, p := range pending {
		cmd, ok := get.Get(p.DeviceID, p.Local)
		switch {
		case !ok || cmd.Status == control.StatusExpired:
			f.answered(p.DeviceID, p.Upstream) // gone here, or expired upstream too: nothing to answer
			continue
		case !cmd.Status.Final():
			continue
		}
		payload, _ := finalResult(cmd)
		tok := c.Publish(resultTopic(p.DeviceID, p.Upstream), 1, false, payload)
		if err := f.await(ctx, tok); err != nil {
			return err
		}
		f.m.Results.Inc()
		f.m.ResultsRecovered.Inc()
		f.answered(p.DeviceID, p.Upstream)
	}
	return nil
}

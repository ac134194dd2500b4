package control

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

var commandBucket = []byte("commands")

// BoltCommandStore keeps commands in a bucket of the hub's state database,
// one JSON value per command ID. Safe for concurrent use.
type BoltCommandStore struct{ db *bolt.DB }

var _ CommandStore = (*BoltCommandStore)(nil)

// NewBoltCommandStore creates the bucket if needed.
func NewBoltCommandStore(db *bolt.DB) (*BoltCommandStore, error) {
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(commandBucket)
		return err
	}); err != nil {
		return nil, fmt.Errorf("create commands bucket: %w", err)
	}
	return &BoltCommandStore{db: db}, nil
}

// Put writes commands in one transaction.
func (s *BoltCommandStore) Put(cmds ...Command) error {
	vals := make([][]byte, len(cmds))
	for i, c := range cmds {
		v, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("encode command %s: %w", c.ID, err)
		}
		vals[i] = v
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(commandBucket)
		for i, c := range cmds {
			if err := b.Put([]byte(c.ID), vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Delete removes commands in one transaction.
func (s *BoltCommandStore) Delete(ids ...string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(commandBucket)
		for _, id := range ids {
			if err := b.Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Load calls fn for every stored command, in ID (creation) order.
func (s *BoltCommandStore) Load(fn func(Command) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(commandBucket).ForEach(func(k, v []byte) error {
			var c Command
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("command %s: %w", k, err)
			}
			return fn(c)
		})
	})
}

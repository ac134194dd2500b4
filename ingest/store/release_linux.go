package store

import (
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// releasePages drops this process's mappings of history.db's pages
// (MADV_DONTNEED on bbolt's read-only shared map): they stay in the page
// cache, and a later read maps them again. Without it a merge, which reads
// every page of the flushes it merges, left tens of MB of the file in the
// hub's resident memory until the kernel needed it back. The caller holds
// compactMu and flushMu, so no write transaction can remap the file
// meanwhile.
func (s *DB) releasePages() {
	var size int64
	if err := s.db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	}); err != nil || size == 0 {
		return
	}
	// bbolt maps at least the file's size; the address is not converted to
	// a Go pointer, only passed to the kernel.
	unix.Syscall(unix.SYS_MADVISE, s.db.Info().Data, uintptr(size), unix.MADV_DONTNEED) //nolint:errcheck // advice only
}

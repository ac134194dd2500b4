package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// SmallFS mounts a tmpfs with the given options (such as "size=1m" or
// "size=1m,nr_inodes=2") on dir (created if missing), for tests of what
// happens when the disk is full: a real file system that answers writes
// past its size, or new files past its inodes, with ENOSPC. Mounting
// needs CAP_SYS_ADMIN (root, as the tests run here); without it the test
// skips (fails under CI). The mount is removed when the test ends.
func SmallFS(t testing.TB, dir, opts string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		Missing(t, "mounting a small tmpfs ("+err.Error()+"; needs CAP_SYS_ADMIN)")
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// RemountFS changes the options of a SmallFS, e.g. to give it more inodes.
func RemountFS(t testing.TB, dir, opts string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT|syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		t.Fatalf("remount %s with %s: %v", dir, opts, err)
	}
}

// FillFS writes a file in dir until the file system is full (ENOSPC) and
// returns a function that removes it, making room again.
func FillFS(t testing.TB, dir string) (free func()) {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err = f.Write(buf); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling %s: %v, want ENOSPC", dir, err)
	}
	// A partial block may remain: fill it byte by byte.
	for _, err = f.Write(buf[:1]); err == nil; _, err = f.Write(buf[:1]) {
	}
	return func() {
		if err := os.Remove(p); err != nil {
			t.Errorf("free %s: %v", dir, err)
		}
	}
}

// Package flock takes advisory whole-file locks with flock(2) on lock files.
//
// A lock lives as long as its open file description: it is released by Unlock,
// and by the kernel when the process dies, so a crashed holder never leaves a
// lock behind. The lock file itself stays; it holds nothing.
package flock

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrBusy is returned by TryLock when another open file holds a conflicting
// lock.
var ErrBusy = errors.New("locked by another process")

// Lock is one held lock.
type Lock struct{ f *os.File }

// Exclusive blocks until it holds an exclusive lock on path, creating the file.
func Exclusive(path string) (*Lock, error) { return lock(path, unix.LOCK_EX) }

// Shared blocks until it holds a shared lock on path, creating the file.
func Shared(path string) (*Lock, error) { return lock(path, unix.LOCK_SH) }

// TryExclusive takes an exclusive lock on path without waiting: ErrBusy when
// someone else holds one.
func TryExclusive(path string) (*Lock, error) { return lock(path, unix.LOCK_EX|unix.LOCK_NB) }

func lock(path string, how int) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		_ = f.Close() // the lock failed; the close releases nothing
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock: %s: %w", path, ErrBusy)
		}
		return nil, &os.PathError{Op: "flock", Path: path, Err: err}
	}
	return &Lock{f: f}, nil
}

// Unlock releases the lock. A nil Lock is a no-op.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
	return err
}

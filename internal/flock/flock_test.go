package flock

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestLock(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.lock")
	l, err := Exclusive(p)
	if err != nil {
		t.Fatal(err)
	}
	// flock(2) locks belong to open file descriptions: a second open in
	// the same process conflicts like another process would.
	if _, err := TryExclusive(p); !errors.Is(err, ErrBusy) {
		t.Errorf("TryExclusive while held: got %v, want ErrBusy", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(); err != nil {
		t.Errorf("second Unlock: %v", err)
	}
	l2, err := TryExclusive(p)
	if err != nil {
		t.Fatalf("TryExclusive after Unlock: %v", err)
	}
	if err := l2.Unlock(); err != nil {
		t.Fatal(err)
	}
	s1, err := Shared(p)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Shared(p)
	if err != nil {
		t.Fatalf("two shared locks: %v", err)
	}
	if _, err := TryExclusive(p); !errors.Is(err, ErrBusy) {
		t.Errorf("TryExclusive under shared locks: got %v, want ErrBusy", err)
	}
	_ = s1.Unlock()
	_ = s2.Unlock()
}

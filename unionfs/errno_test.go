package unionfs

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

func TestToErrno(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"bare", syscall.ENOENT, syscall.ENOENT},
		{"wrapped", fmt.Errorf("copy-up a/b: %w", syscall.ENOSPC), syscall.ENOSPC},
		{"path error", &os.PathError{Op: "openat2", Path: "x", Err: syscall.ELOOP}, syscall.ELOOP},
		{"layer error", &fsError{op: "statx", rel: "a", err: syscall.EACCES}, syscall.EACCES},
		{"double wrapped", fmt.Errorf("x: %w", &os.PathError{Op: "o", Path: "p", Err: syscall.EXDEV}), syscall.EXDEV},
		{"joined", errors.Join(errors.New("a"), syscall.EROFS), syscall.EROFS},
		{"no errno", errors.New("odd"), syscall.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := toErrno(tc.err); got != tc.want {
				t.Errorf("toErrno(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestIdentities(t *testing.T) {
	var ids identities
	ids.init([]uint64{10, 10, 20})
	if got, want := ids.number(10, 5), uint64(5); got != want {
		t.Errorf("first device: got %d, want %d", got, want)
	}
	if got, want := ids.number(20, 5), uint64(1<<devShift|5); got != want {
		t.Errorf("second device: got %#x, want %#x", got, want)
	}
	if got, want := ids.number(30, 5), uint64(2<<devShift|5); got != want {
		t.Errorf("device found later: got %#x, want %#x", got, want)
	}
	big := ids.number(10, 1<<60)
	if big < synthBase || ids.number(10, 1<<60) != big {
		t.Errorf("large inode: got %#x, want a stable synthetic number", big)
	}
}

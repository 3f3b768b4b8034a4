package mounts

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// SetReadahead sets the readahead window, in KiB, of the file system mounted at
// mountpoint, through its backing device's sysfs entry
// (/sys/class/bdi/MAJOR:MINOR/read_ahead_kb). It needs root.
//
// A FUSE mount starts with the kernel's default of 128 KiB, which also caps
// how much one READ request asks for: a sequential read then costs a round
// trip to the daemon per 128 KiB. The INIT handshake can only lower the window,
// never raise it; sysfs can.
func SetReadahead(mountpoint string, kib int) error {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return &os.PathError{Op: "stat", Path: mountpoint, Err: err}
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strconv.Itoa(kib))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

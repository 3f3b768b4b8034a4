package fusedev

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestMountArgs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []string
		flags uintptr
		data  string
	}{
		{"defaults", nil, unix.MS_NOSUID | unix.MS_NODEV,
			"fd=7,rootmode=40000,user_id=0,group_id=0,max_read=1048576"},
		{"fuse options pass", []string{"default_permissions", "allow_other"}, unix.MS_NOSUID | unix.MS_NODEV,
			"fd=7,rootmode=40000,user_id=0,group_id=0,max_read=1048576,default_permissions,allow_other"},
		{"flags", []string{"ro", "noatime", "noexec"}, unix.MS_NOSUID | unix.MS_NODEV | unix.MS_RDONLY | unix.MS_NOATIME | unix.MS_NOEXEC,
			"fd=7,rootmode=40000,user_id=0,group_id=0,max_read=1048576"},
		{"suid and dev lift the defaults", []string{"suid", "dev"}, 0,
			"fd=7,rootmode=40000,user_id=0,group_id=0,max_read=1048576"},
		{"last word wins", []string{"ro", "rw"}, unix.MS_NOSUID | unix.MS_NODEV,
			"fd=7,rootmode=40000,user_id=0,group_id=0,max_read=1048576"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flags, data := mountArgs(Options{Options: tc.opts, MaxRead: 1 << 20}, 7, unix.S_IFDIR, 0, 0)
			if flags != tc.flags {
				t.Errorf("flags: got %#x, want %#x", flags, tc.flags)
			}
			if data != tc.data {
				t.Errorf("data: got %q, want %q", data, tc.data)
			}
		})
	}
}

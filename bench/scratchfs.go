package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ext4 without a journal keeps freed inodes from reuse for one to five
// minutes (RECENTCY_MIN and RECENTCY_DIRTY in fs/ext4/ialloc.c), and finds
// that out by scanning: every new inode walks past the recently freed ones
// of its block group, one buffer lookup each, before it takes a free one. A
// create after many deletes then costs in proportion to the deletes, and
// which system pays depends on where its files land, not on the system:
// untar rows swung 2x from run to run, and between systems, on such a disk.
// The bench cannot move the inodes; it says so.

// scratchNote returns a note on the file system of dir when it makes create
// rows unsteady, or "".
func scratchNote(dir string) string {
	var sfs unix.Statfs_t
	if unix.Statfs(dir, &sfs) != nil || sfs.Type != unix.EXT4_SUPER_MAGIC {
		return ""
	}
	dev, ok := blockDevName(dir)
	if !ok {
		return ""
	}
	task, err := os.ReadFile(filepath.Join("/sys/fs/ext4", dev, "journal_task"))
	if err != nil || strings.TrimSpace(string(task)) != "<none>" {
		return ""
	}
	return fmt.Sprintf("the scratch dir is on ext4 without a journal (%s), which scans past the inodes "+
		"freed in the last minutes at every create: the create rows after deletes (small-files, untar) "+
		"vary with where each system's files land; --dir on a journaled file system or a tmpfs steadies them", dev)
}

// blockDevName returns the kernel's name of the block device holding dir
// ("vda", "loop0").
func blockDevName(dir string) (string, bool) {
	var st unix.Stat_t
	if unix.Stat(dir, &st) != nil {
		return "", false
	}
	link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)))
	if err != nil {
		return "", false
	}
	return filepath.Base(link), true
}

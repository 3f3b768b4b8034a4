package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
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
// So the workloads that create and delete thousands of files (a fixture
// marked journaled) run, there, on an ext4 with a journal that the bench
// makes in the scratch dir, on a loop device; where it cannot, it says so.

// unjournaledExt4 returns the name of the block device of dir when dir is on
// ext4 without a journal, or "".
func unjournaledExt4(dir string) string {
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
	return dev
}

// scratchNote returns a note on the file system of dir when it makes create
// rows unsteady, or "".
func scratchNote(dir string) string {
	dev := unjournaledExt4(dir)
	if dev == "" {
		return ""
	}
	return fmt.Sprintf("the scratch dir is on ext4 without a journal (%s), which scans past the inodes "+
		"freed in the last minutes at every create: the create rows after deletes (small-files, untar) "+
		"vary with where each system's files land; --dir on a journaled file system or a tmpfs steadies them", dev)
}

// journaledDir returns a directory for a journaled fixture in dir: dir
// itself, unless it is on ext4 without a journal; then the root of a
// journaled ext4 of size bytes, made in dir and mounted through a loop device
// by mount(8), which mounted reports (to be taken off, last). note says what
// was done, or why not.
func journaledDir(ctx context.Context, dir string, size int64, mounted func(string)) (root, note string) {
	dev := unjournaledExt4(dir)
	if dev == "" {
		return dir, ""
	}
	img, mnt := filepath.Join(dir, "journaled.img"), filepath.Join(dir, "fs")
	err := func() error {
		if os.Geteuid() != 0 {
			return errors.New("not root")
		}
		f, err := os.OpenFile(img, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		err = errors.Join(f.Truncate(size), f.Close())
		if err != nil {
			return err
		}
		// Lazy init: the inode tables are zeroed in the background,
		// not for seconds before the first run.
		if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", img).CombinedOutput(); err != nil {
			return fmt.Errorf("mkfs.ext4: %w: %s", err, bytes.TrimSpace(out))
		}
		if err := os.Mkdir(mnt, 0o755); err != nil {
			return err
		}
		mounted(mnt) // before: an interrupted mount(8) may have mounted all the same
		if out, err := exec.CommandContext(ctx, "mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
			return fmt.Errorf("mount -o loop: %w: %s", err, bytes.TrimSpace(out))
		}
		return nil
	}()
	if err != nil {
		return dir, fmt.Sprintf("%s; a journaled ext4 for them could not be made (%v)", scratchNote(dir), err)
	}
	return mnt, fmt.Sprintf("the scratch dir is on ext4 without a journal (%s), which scans past the inodes "+
		"freed in the last minutes at every create: small-files and untar ran on a journaled ext4 "+
		"made for them in the scratch dir, through a loop device, so that their rows measure the systems", dev)
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

package cgroups

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// destroyTimeout bounds how long Destroy waits for the processes to die and
// the directories to go. A process that does not die on SIGKILL is in an
// uninterruptible sleep (a dead NFS server, a FUSE server that does not
// answer); waiting longer would not help.
const destroyTimeout = 10 * time.Second

// writeFile writes data to the interface file name of the cgroup dir in one
// write(2), as the kernel wants, without creating it: a file that is not
// there is a controller that is not there.
func writeFile(dir, name, data string) error {
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("write %q: %w", data, err)
	}
	_, err = f.WriteString(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", data, p, err)
	}
	return nil
}

// readFile reads the interface file name of the cgroup dir.
func readFile(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("read cgroup file: %w", err)
	}
	return string(b), nil
}

// exists tells whether the cgroup dir has the interface file name: which
// optional parts of a controller the kernel has (memory.memsw.* needs swap
// accounting, cgroup.kill Linux 5.14).
func exists(dir, name string) bool {
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

// readKey reads the number after key in a flat-keyed file: the lines
// "KEY VALUE" of memory.stat, memory.events or memory.oom_control. A key that
// is not there is fs.ErrNotExist.
func readKey(dir, name, key string) (int64, error) {
	s, err := readFile(dir, name)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s in %s: %w", key, filepath.Join(dir, name), err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s in %s: %w", key, filepath.Join(dir, name), fs.ErrNotExist)
}

// readInt reads a file that holds one number (memory.current).
func readInt(dir, name string) (int64, error) {
	s, err := readFile(dir, name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
	}
	return n, nil
}

// usage is a memory use figure less the inactive file pages of stat, which
// the kernel reclaims before it would OOM-kill anything (what `docker stats`
// shows).
func usage(dir, current, stat, inactiveKey string) (int64, error) {
	n, err := readInt(dir, current)
	if err != nil {
		return 0, err
	}
	inactive, err := readKey(dir, stat, inactiveKey)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	if inactive < n {
		n -= inactive
	}
	return n, nil
}

// procs reads the union of the cgroup.procs of dirs, sorted. A directory that
// is not there has no processes.
func procs(dirs []string) ([]int, error) {
	set := map[int]bool{}
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list processes: %w", err)
		}
		for _, f := range bytes.Fields(b) {
			pid, err := strconv.Atoi(string(f))
			if err != nil {
				return nil, fmt.Errorf("list processes: %s: %q: %w", filepath.Join(d, "cgroup.procs"), f, err)
			}
			set[pid] = true
		}
	}
	pids := make([]int, 0, len(set))
	for p := range set {
		pids = append(pids, p)
	}
	sort.Ints(pids)
	return pids, nil
}

// add moves pid into each of dirs.
func add(dirs []string, pid int) error {
	for _, d := range dirs {
		if err := writeFile(d, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("add process %d: %w", pid, err)
		}
	}
	return nil
}

// destroy kills what is in dirs, waits until they are empty and removes them
// and, if nothing else is in it, their parent.
//
// killDir, if not "", is a v2 cgroup, whose cgroup.kill (Linux 5.14) kills
// every process in it at once: none can fork away meanwhile. Otherwise, or
// on an older kernel, the processes are killed one by one, round after round,
// until none is left: a process that forked before it died has its child
// killed in the next round.
func (h *Host) destroy(dirs []string, killDir string) error {
	deadline := time.Now().Add(destroyTimeout)
	if killDir != "" && exists(killDir, "cgroup.kill") {
		if err := writeFile(killDir, "cgroup.kill", "1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("destroy cgroup: %w", err)
		}
	}
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		pids, err := procs(dirs)
		if err != nil {
			return fmt.Errorf("destroy cgroup: %w", err)
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("destroy cgroup %s: processes %v still alive after SIGKILL for %v", dirs[0], pids, destroyTimeout)
		}
		if err := killProcs(dirs, pids); err != nil {
			return fmt.Errorf("destroy cgroup: %w", err)
		}
		time.Sleep(wait)
	}
	for _, d := range dirs {
		if err := h.rmdirWait(d, deadline); err != nil {
			return fmt.Errorf("destroy cgroup: %w", err)
		}
		// The parent goes when the last container's cgroup does. Another
		// one in it (EBUSY, ENOTEMPTY) is why it stays: not an error.
		_ = h.doRmdir(filepath.Dir(d))
	}
	return nil
}

// killProcs sends SIGKILL to the processes pids, which were in dirs. A pid
// may have been freed and reused by an unrelated process since: each is
// pinned first with a pidfd, then the list is read again, and only a process
// still in the cgroup after it was pinned is killed. (Without pidfd_open,
// before Linux 5.3, the pid is killed as it is.)
func killProcs(dirs []string, pids []int) error {
	fds := map[int]int{}
	defer func() {
		for _, fd := range fds {
			_ = unix.Close(fd) // a pidfd: nothing to flush
		}
	}()
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		switch {
		case err == nil:
			fds[pid] = fd
		case errors.Is(err, unix.ESRCH):
			// gone already
		case errors.Is(err, unix.ENOSYS):
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("kill %d: %w", pid, err)
			}
		default:
			return fmt.Errorf("pidfd_open %d: %w", pid, err)
		}
	}
	if len(fds) == 0 {
		return nil
	}
	still, err := procs(dirs)
	if err != nil {
		return err
	}
	for _, pid := range still {
		fd, ok := fds[pid]
		if !ok {
			continue // new since the first list: the next round kills it
		}
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill %d: %w", pid, err)
		}
	}
	return nil
}

// rmdirWait removes the cgroup directory dir, which has no processes left. A
// process killed a moment ago may hold it busy (EBUSY) until it has finished
// exiting, so EBUSY is retried until the deadline. A directory that is not
// there is fine: Destroy is idempotent.
func (h *Host) rmdirWait(dir string, deadline time.Time) error {
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		err := h.doRmdir(dir)
		switch {
		case err == nil, errors.Is(err, fs.ErrNotExist):
			return nil
		case errors.Is(err, unix.EBUSY) && time.Now().Before(deadline):
			time.Sleep(wait)
		default:
			return err
		}
	}
}

// mkdirParent makes the strata parent under root, unless it is there.
func (h *Host) mkdirParent(root string) (string, error) {
	p := filepath.Join(root, h.parent())
	if err := h.doMkdir(p); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("make parent cgroup: %w", err)
	}
	return p, nil
}

// mkdirCgroup makes the cgroup name under the strata parent of the hierarchy
// mounted at root: the parent first, unless it is there, then prepare(parent)
// (v2 enables controllers there), then the cgroup itself. A Destroy of the
// last other container may remove the parent in between; then it is made
// again. A cgroup of that name that is there already is fs.ErrExist.
func (h *Host) mkdirCgroup(root, name string, prepare func(parent string) error) (string, error) {
	for try := 0; ; try++ {
		parent, err := h.mkdirParent(root)
		if err != nil {
			return "", err
		}
		if prepare != nil {
			err = prepare(parent)
		}
		dir := filepath.Join(parent, name)
		if err == nil {
			err = h.doMkdir(dir)
		}
		switch {
		case err == nil:
			return dir, nil
		case errors.Is(err, fs.ErrNotExist) && try < 3:
			continue
		case errors.Is(err, fs.ErrExist):
			return "", fmt.Errorf("make cgroup %s: %w (in use, or left by a strata that crashed: strata rm)", name, err)
		default:
			return "", fmt.Errorf("make cgroup %s: %w", name, err)
		}
	}
}

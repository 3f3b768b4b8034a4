package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// v2Controllers are the controllers strata enables for its cgroups on a v2
// host, whether a limit needs them or not: memory.current and
// memory.events exist only where the memory controller is enabled.
var v2Controllers = []string{"memory", "cpu", "pids"}

// v2Cgroup is a container's cgroup on a pure v2 host: one directory.
type v2Cgroup struct {
	h         *Host
	name, dir string

	mu sync.Mutex
	fd int // O_PATH descriptor of dir, -1 once closed
}

var _ Cgroup = (*v2Cgroup)(nil)

// createV2 is Create on a pure v2 host.
func (h *Host) createV2(name string, l Limits) (_ Cgroup, err error) {
	root := h.Unified
	s, err := readFile(root, "cgroup.controllers")
	if err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", name, err)
	}
	avail := strings.Fields(s)
	need := map[string]bool{"memory": l.Memory > 0, "cpu": l.CPUs > 0, "pids": l.Pids > 0}
	var enable []string
	for _, ctl := range v2Controllers {
		switch {
		case slices.Contains(avail, ctl):
			enable = append(enable, ctl)
		case need[ctl]:
			return nil, fmt.Errorf("%s limit: %w: the cgroup v2 hierarchy at %s has no %s controller (it has: %s)",
				ctl, ErrNoController, root, ctl, strings.Join(avail, ", "))
		}
	}
	// A v2 cgroup may use a controller only if its parent passes it down
	// (cgroup.subtree_control), and the parent its own: the root, then
	// strata's parent, then the container's cgroup, which is a leaf.
	if err := enableControllers(root, enable, need); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", name, err)
	}
	dir, err := h.mkdirCgroup(root, name, func(parent string) error {
		return enableControllers(parent, enable, need)
	})
	if err != nil {
		return nil, err
	}
	c := &v2Cgroup{h: h, name: name, dir: dir, fd: -1}
	defer func() {
		if err != nil {
			// Nothing is in it yet: destroy only removes it. Its error
			// is less telling than err.
			_ = c.Destroy()
		}
	}()
	if err := c.set(l); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", name, err)
	}
	if err := c.open(); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", name, err)
	}
	return c, nil
}

// enableControllers writes "+memory +cpu..." to dir's cgroup.subtree_control
// for each of ctls not enabled there yet. If the kernel refuses, it tries
// them one by one, to fail naming the controller that a limit needs; one
// that no limit needs is let go: the cgroup only lacks its statistics.
//
// The usual refusal is EBUSY: v2 lets a cgroup pass controllers down only if
// it has no processes of its own (the no-internal-process rule). The root is
// exempt, but the root of a cgroup namespace (strata in a container) is not.
func enableControllers(dir string, ctls []string, need map[string]bool) error {
	s, err := readFile(dir, "cgroup.subtree_control")
	if err != nil {
		return err
	}
	on := strings.Fields(s)
	var add []string
	for _, c := range ctls {
		if !slices.Contains(on, c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := writeFile(dir, "cgroup.subtree_control", strings.Join(add, " ")); err == nil {
		return nil
	}
	for _, a := range add {
		err := writeFile(dir, "cgroup.subtree_control", a)
		if err == nil || !need[a[1:]] {
			continue
		}
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%s limit: enable the controller: %w (the cgroup has processes of its own, and cgroup v2 passes controllers down only from cgroups without)", a[1:], err)
		}
		return fmt.Errorf("%s limit: enable the controller: %w", a[1:], err)
	}
	return nil
}

// set writes the limits l.
func (c *v2Cgroup) set(l Limits) error {
	if l.Memory > 0 {
		if err := writeFile(c.dir, "memory.max", strconv.FormatInt(l.Memory, 10)); err != nil {
			return err
		}
		// Unlike v1's memsw, memory.swap.max counts swap alone: 0 is no
		// swap. It exists only with swap accounting.
		if exists(c.dir, "memory.swap.max") {
			if err := writeFile(c.dir, "memory.swap.max", "0"); err != nil {
				return err
			}
		}
	}
	if l.CPUs > 0 {
		v := fmt.Sprintf("%d %d", quota(l.CPUs), cpuPeriod)
		if err := writeFile(c.dir, "cpu.max", v); err != nil {
			return err
		}
	}
	if l.Pids > 0 {
		if err := writeFile(c.dir, "pids.max", strconv.FormatInt(l.Pids, 10)); err != nil {
			return err
		}
	}
	return nil
}

// open opens the descriptor FD returns. O_PATH is enough for clone3.
func (c *v2Cgroup) open() error {
	fd, err := unix.Open(c.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: c.dir, Err: err}
	}
	c.fd = fd
	return nil
}

// loadV2 is Load on a pure v2 host.
func (h *Host) loadV2(name string) (Cgroup, error) {
	c := &v2Cgroup{h: h, name: name, dir: filepath.Join(h.Unified, h.parent(), name), fd: -1}
	if !isDir(c.dir) {
		return nil, fmt.Errorf("load cgroup %s: %w", name, fs.ErrNotExist)
	}
	if err := c.open(); err != nil {
		return nil, fmt.Errorf("load cgroup %s: %w", name, err)
	}
	return c, nil
}

func (c *v2Cgroup) Name() string { return c.name }

func (c *v2Cgroup) Add(pid int) error { return add([]string{c.dir}, pid) }

func (c *v2Cgroup) FD() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fd, c.fd >= 0
}

// OOMKilled reads oom_kill in memory.events: the kills in this cgroup and
// its children.
func (c *v2Cgroup) OOMKilled() (bool, error) {
	n, err := readKey(c.dir, "memory.events", "oom_kill")
	if err != nil {
		return false, fmt.Errorf("cgroup %s: oom kills: %w", c.name, err)
	}
	return n > 0, nil
}

// MemoryUsage is memory.current less the inactive file pages.
func (c *v2Cgroup) MemoryUsage() (int64, error) {
	n, err := usage(c.dir, "memory.current", "memory.stat", "inactive_file")
	if err != nil {
		return 0, fmt.Errorf("cgroup %s: memory usage: %w", c.name, err)
	}
	return n, nil
}

func (c *v2Cgroup) Pids() ([]int, error) { return procs([]string{c.dir}) }

func (c *v2Cgroup) Destroy() error {
	if err := c.Close(); err != nil {
		return err
	}
	if err := c.h.destroy([]string{c.dir}, c.dir); err != nil {
		return fmt.Errorf("cgroup %s: %w", c.name, err)
	}
	return nil
}

func (c *v2Cgroup) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	if err != nil {
		return &os.PathError{Op: "close", Path: c.dir, Err: err}
	}
	return nil
}

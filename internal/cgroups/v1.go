package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// v1Controllers are the v1 controllers a container's cgroup is made in: the
// three that strata limits with. Other hierarchies (cpuset, devices,
// freezer...) are left alone: the container stays in strata's own cgroups
// there.
var v1Controllers = []string{"memory", "cpu", "pids"}

// v1Cgroup is a container's cgroup on a v1 or hybrid host: a directory in
// each v1 hierarchy of v1Controllers that the host has, and on a hybrid host
// one in the unified hierarchy too.
type v1Cgroup struct {
	h    *Host
	name string
	// dirs maps a controller to the cgroup's directory in its hierarchy.
	dirs map[string]string
	// unified is the directory in the unified hierarchy of a hybrid host,
	// "" on a pure v1 host. It holds no limits; it is there so that every
	// process of the container is in one v2 cgroup, for cgroup.kill.
	unified string
}

var _ Cgroup = (*v1Cgroup)(nil)

// noV1Controller is the error for a limit whose controller no v1 hierarchy
// of h has.
func (h *Host) noV1Controller(ctl string) error {
	var have []string
	for c := range h.V1 {
		have = append(have, c)
	}
	sort.Strings(have)
	hint := ""
	if h.Unified != "" {
		hint = "; on a hybrid host strata limits through v1 only, not the unified hierarchy at " + h.Unified
	}
	return fmt.Errorf("%s limit: %w: no cgroup v1 hierarchy has the %s controller (mounted: %s)%s",
		ctl, ErrNoController, ctl, strings.Join(have, ", "), hint)
}

// createV1 is Create on a v1 or hybrid host.
func (h *Host) createV1(name string, l Limits) (_ Cgroup, err error) {
	asked := map[string]bool{"memory": l.Memory > 0, "cpu": l.CPUs > 0, "pids": l.Pids > 0}
	for _, ctl := range v1Controllers {
		if asked[ctl] && h.V1[ctl] == "" {
			return nil, h.noV1Controller(ctl)
		}
	}
	c := &v1Cgroup{h: h, name: name, dirs: map[string]string{}}
	defer func() {
		if err != nil {
			// Nothing is in the directories yet: destroy only removes
			// them. Its error is less telling than err.
			_ = h.destroy(c.all(), "")
		}
	}()
	made := map[string]string{} // mount point → directory, for co-mounted controllers
	for _, ctl := range v1Controllers {
		root := h.V1[ctl]
		if root == "" {
			continue
		}
		if made[root] == "" {
			dir, err := h.mkdirCgroup(root, name, nil)
			if err != nil {
				return nil, err
			}
			made[root] = dir
		}
		c.dirs[ctl] = made[root]
	}
	if h.Unified != "" {
		// The unified directory holds no limit; it only lets Destroy
		// use cgroup.kill. Where the unified hierarchy is not writable
		// (mounted read-only into a container), Destroy does without.
		c.unified, err = h.mkdirCgroup(h.Unified, name, nil)
		if errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			c.unified, err = "", nil
		}
		if err != nil {
			return nil, err
		}
	}
	if err := c.set(l); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", name, err)
	}
	return c, nil
}

// set writes the limits l.
func (c *v1Cgroup) set(l Limits) error {
	if l.Memory > 0 {
		dir, v := c.dirs["memory"], strconv.FormatInt(l.Memory, 10)
		if err := writeFile(dir, "memory.limit_in_bytes", v); err != nil {
			return err
		}
		// memsw is memory plus swap: the same figure allows no swap. It
		// exists only with swap accounting (CONFIG_MEMCG_SWAP,
		// swapaccount=1); without it a host with swap lets the container
		// swap past its limit. It must be written after
		// memory.limit_in_bytes, which may never exceed it.
		if exists(dir, "memory.memsw.limit_in_bytes") {
			if err := writeFile(dir, "memory.memsw.limit_in_bytes", v); err != nil {
				return err
			}
		}
	}
	if l.CPUs > 0 {
		dir := c.dirs["cpu"]
		if err := writeFile(dir, "cpu.cfs_period_us", strconv.Itoa(cpuPeriod)); err != nil {
			return err
		}
		if err := writeFile(dir, "cpu.cfs_quota_us", strconv.FormatInt(quota(l.CPUs), 10)); err != nil {
			return err
		}
	}
	if l.Pids > 0 {
		if err := writeFile(c.dirs["pids"], "pids.max", strconv.FormatInt(l.Pids, 10)); err != nil {
			return err
		}
	}
	return nil
}

// loadV1 is Load on a v1 or hybrid host.
func (h *Host) loadV1(name string) (Cgroup, error) {
	c := &v1Cgroup{h: h, name: name, dirs: map[string]string{}}
	for _, ctl := range v1Controllers {
		if root := h.V1[ctl]; root != "" {
			if dir := filepath.Join(root, h.parent(), name); isDir(dir) {
				c.dirs[ctl] = dir
			}
		}
	}
	if h.Unified != "" {
		if dir := filepath.Join(h.Unified, h.parent(), name); isDir(dir) {
			c.unified = dir
		}
	}
	if len(c.all()) == 0 {
		return nil, fmt.Errorf("load cgroup %s: %w", name, fs.ErrNotExist)
	}
	return c, nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// all lists the cgroup's directories, each once.
func (c *v1Cgroup) all() []string {
	var ds []string
	seen := map[string]bool{}
	for _, ctl := range v1Controllers {
		if d := c.dirs[ctl]; d != "" && !seen[d] {
			seen[d] = true
			ds = append(ds, d)
		}
	}
	if c.unified != "" {
		ds = append(ds, c.unified)
	}
	return ds
}

func (c *v1Cgroup) Name() string { return c.name }

func (c *v1Cgroup) Add(pid int) error { return add(c.all(), pid) }

// FD is false: a v1 cgroup cannot be entered by clone3. (On a hybrid host
// the unified directory could, but that would put the child in one
// hierarchy of several, and it is Add that puts it in all of them.)
func (c *v1Cgroup) FD() (int, bool) { return -1, false }

// OOMKilled reads oom_kill in memory.oom_control (Linux 4.13): the kills in
// this cgroup and, v1 memory being hierarchical, its children.
func (c *v1Cgroup) OOMKilled() (bool, error) {
	dir := c.dirs["memory"]
	if dir == "" {
		return false, fmt.Errorf("cgroup %s: %w: no memory hierarchy", c.name, ErrNoController)
	}
	n, err := readKey(dir, "memory.oom_control", "oom_kill")
	if err != nil {
		return false, fmt.Errorf("cgroup %s: oom kills: %w", c.name, err)
	}
	return n > 0, nil
}

// MemoryUsage is memory.usage_in_bytes less the inactive file pages; in v1's
// memory.stat, the total_ figures count the children too.
func (c *v1Cgroup) MemoryUsage() (int64, error) {
	dir := c.dirs["memory"]
	if dir == "" {
		return 0, fmt.Errorf("cgroup %s: %w: no memory hierarchy", c.name, ErrNoController)
	}
	n, err := usage(dir, "memory.usage_in_bytes", "memory.stat", "total_inactive_file")
	if err != nil {
		return 0, fmt.Errorf("cgroup %s: memory usage: %w", c.name, err)
	}
	return n, nil
}

func (c *v1Cgroup) Pids() ([]int, error) { return procs(c.all()) }

func (c *v1Cgroup) Destroy() error {
	if err := c.h.destroy(c.all(), c.unified); err != nil {
		return fmt.Errorf("cgroup %s: %w", c.name, err)
	}
	return nil
}

func (c *v1Cgroup) Close() error { return nil }

// Package container keeps strata's containers: their state on disk, and the
// life of each one, from the union it runs on to its exit.
//
// # On disk
//
// Each container is one directory under the store root:
//
//	containers/NAME/
//	  config.json   what it was made from (image, layers, command, limits);
//	                written once, before anything runs
//	  state.json    status, pids, exit code, times; rewritten by rename(2)
//	  lock          flock'd exclusively by the supervisor for its whole life
//	  init/         the init layer: /etc/hostname, /etc/hosts,
//	                /etc/resolv.conf and the mount points /proc, /sys, /dev
//	  upper/ work/  the container's writable layer and its work dir
//	  rootfs/       the mount point of the merged tree
//	  log           the output of a detached container
//
// The name is claimed by mkdir(2) of its directory: two runs of one name
// cannot both win. A container also has an id, random, which names its cgroup,
// so that two stores (two --root) never share one.
//
// # The supervisor
//
// Run is the supervisor: the process that mounts the union (the image's
// layers, the init layer on them, the upper on top) on rootfs/, serves it,
// starts the container in its namespaces and cgroup (package sandbox), waits
// for it, and takes everything down again: unmount, cgroup, state. It holds
// the lock meanwhile. A status of "running" whose lock anybody can take is a
// supervisor that died (SIGKILL, a crash): its container died with it (the
// init has Pdeathsig SIGKILL, and the union it ran on is gone), and Clean
// removes what it left: a dead FUSE mount (detached) and the cgroup
// (destroyed). List and Remove call it, so `strata ps` and `strata rm` tidy
// up after a crashed strata.
//
// The init layer sits between the image's layers and the upper, as Docker's
// "-init" layer does: the files that belong to this run of the container and
// not to its image live there, so the upper, which `strata commit` turns into
// a layer, does not get them unless the container writes them (and commit
// leaves those three files out even then).
package container

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/strata-fs/strata/internal/cgroups"
	"github.com/strata-fs/strata/internal/flock"
	"github.com/strata-fs/strata/internal/mounts"
)

// Errors of the package, for errors.Is.
var (
	// ErrNotFound: no container of that name.
	ErrNotFound = errors.New("no such container")
	// ErrNameInUse: a container of that name exists already.
	ErrNameInUse = errors.New("name in use")
	// ErrInvalid: input that does not make sense (a bad name, no command).
	ErrInvalid = errors.New("invalid")
	// ErrRunning: the container runs, and the operation needs it stopped.
	ErrRunning = errors.New("container is running")
	// ErrNotRunning: the container does not run, and the operation needs it
	// to.
	ErrNotRunning = errors.New("container is not running")
)

// Status is where a container is in its life.
type Status string

// The statuses. A container is "created" from the moment its name is claimed
// until its command runs.
const (
	Created Status = "created"
	Running Status = "running"
	Exited  Status = "exited"
)

// Config is what a container was made from; it does not change.
type Config struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Image is the image as the user named it ("" for --layer
	// directories), ImageID its id.
	Image   string `json:"image,omitempty"`
	ImageID string `json:"imageID,omitempty"`
	// Lowers are the image's layer directories, top first; the init layer
	// goes on top of them.
	Lowers []string `json:"lowers"`
	// Args, Env, Cwd and User are the command's, with the image's defaults
	// applied.
	Args     []string       `json:"args"`
	Env      []string       `json:"env"`
	Cwd      string         `json:"cwd,omitempty"`
	User     string         `json:"user,omitempty"`
	Hostname string         `json:"hostname"`
	NetHost  bool           `json:"netHost,omitempty"`
	Limits   cgroups.Limits `json:"limits"`
	Init     bool           `json:"init,omitempty"`
	Tty      bool           `json:"tty,omitempty"`
	// AutoRemove removes the container when it exits (--rm).
	AutoRemove bool      `json:"autoRemove,omitempty"`
	Created    time.Time `json:"created"`
}

// State is what changes over a container's life.
type State struct {
	Status Status `json:"status"`
	// Pid is the host pid of the container's first process while it runs;
	// Supervisor the pid of the strata process that serves it.
	Pid        int       `json:"pid,omitempty"`
	Supervisor int       `json:"supervisor,omitempty"`
	Started    time.Time `json:"started,omitzero"`
	Finished   time.Time `json:"finished,omitzero"`
	// ExitCode is the command's (128+N for signal N); -1 when its
	// supervisor died and nobody saw it end.
	ExitCode  int  `json:"exitCode"`
	OOMKilled bool `json:"oomKilled,omitempty"`
}

// Container is one container directory.
type Container struct {
	dir    string
	Config Config
}

// names are Docker's: a letter or digit, then letters, digits, _ . and -.
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// CheckName refuses a name that cannot be a container's.
func CheckName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("container name %q: %w: want a letter or digit, then letters, digits, '_', '.' or '-'", name, ErrInvalid)
	}
	return nil
}

// NewID returns a fresh random container id (32 hex digits).
func NewID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail (Go 1.24+)
	return hex.EncodeToString(b)
}

func containersDir(root string) string { return filepath.Join(root, "containers") }

// Dir is the directory of container name under the store root.
func Dir(root, name string) string { return filepath.Join(containersDir(root), name) }

func (c *Container) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

// Dir is the container's directory.
func (c *Container) Dir() string { return c.dir }

// Upper is the container's writable layer.
func (c *Container) Upper() string { return c.path("upper") }

// Rootfs is the mount point of its merged tree.
func (c *Container) Rootfs() string { return c.path("rootfs") }

// LogPath is where a detached container's output goes.
func (c *Container) LogPath() string { return c.path("log") }

// create claims cfg.Name under root and writes the container's directories
// and config. On error nothing is left.
func create(root string, cfg Config) (_ *Container, err error) {
	if err := CheckName(cfg.Name); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(containersDir(root), 0o700); err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	c := &Container{dir: Dir(root, cfg.Name), Config: cfg}
	if err := os.Mkdir(c.dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("container %s: %w", cfg.Name, ErrNameInUse)
		}
		return nil, fmt.Errorf("create container: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(c.dir) // ours, just made; err says what failed
		}
	}()
	for _, d := range []string{"upper", "work", "init", "rootfs"} {
		if err := os.Mkdir(c.path(d), 0o755); err != nil {
			return nil, fmt.Errorf("create container: %w", err)
		}
	}
	if err := writeJSON(c.path("config.json"), cfg); err != nil {
		return nil, err
	}
	if err := c.writeState(State{Status: Created}); err != nil {
		return nil, err
	}
	return c, nil
}

// Open opens container name under root.
func Open(root, name string) (*Container, error) {
	if err := CheckName(name); err != nil {
		return nil, fmt.Errorf("container %s: %w", name, ErrNotFound)
	}
	c := &Container{dir: Dir(root, name)}
	b, err := os.ReadFile(c.path("config.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("container %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read container: %w", err)
	}
	if err := json.Unmarshal(b, &c.Config); err != nil {
		return nil, fmt.Errorf("read container: %s: %w", c.path("config.json"), err)
	}
	return c, nil
}

// List opens every container under root, sorted by creation, newest first.
// A container whose supervisor died is cleaned up on the way (see Clean).
func List(root string) ([]*Container, error) {
	ents, err := os.ReadDir(containersDir(root))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var cs []*Container
	for _, e := range ents {
		c, err := Open(root, e.Name())
		if errors.Is(err, ErrNotFound) {
			continue // being created or removed right now
		}
		if err != nil {
			return nil, err
		}
		cs = append(cs, c)
	}
	slices.SortFunc(cs, func(a, b *Container) int { return b.Config.Created.Compare(a.Config.Created) })
	return cs, nil
}

// State reads the container's state. A "running" or "created" container
// whose supervisor is gone is cleaned up first (see Clean) and reported as
// exited with code -1.
func (c *Container) State() (State, error) {
	st, err := c.readState()
	if err != nil || st.Status == Exited {
		return st, err
	}
	l, err := flock.TryExclusive(c.path("lock"))
	if errors.Is(err, flock.ErrBusy) {
		return st, nil // its supervisor holds it: alive
	}
	if err != nil {
		return st, err
	}
	defer func() { _ = l.Unlock() }() // nothing was written under it but state.json
	// Read again under the lock: the supervisor may have ended cleanly
	// between the two looks.
	if st, err = c.readState(); err != nil || st.Status == Exited {
		return st, err
	}
	if err := c.clean(); err != nil {
		return st, err
	}
	st.Status, st.ExitCode, st.Finished = Exited, -1, time.Now()
	return st, c.writeState(st)
}

func (c *Container) readState() (State, error) {
	var st State
	b, err := os.ReadFile(c.path("state.json"))
	if err != nil {
		return st, fmt.Errorf("read container state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("read container state: %s: %w", c.path("state.json"), err)
	}
	return st, nil
}

func (c *Container) writeState(st State) error { return writeJSON(c.path("state.json"), st) }

// clean takes down what a dead supervisor left: the union's mount (dead:
// detached, never touched) and the cgroup. The caller holds the lock.
func (c *Container) clean() error {
	var errs []error
	if _, mounted, err := mounts.Lookup(c.Rootfs()); err != nil {
		errs = append(errs, err)
	} else if mounted {
		errs = append(errs, mounts.Detach(c.Rootfs()))
	}
	if h, err := cgroups.Detect(); err == nil {
		cg, err := h.Load(c.Config.ID)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			errs = append(errs, err)
		default:
			errs = append(errs, cg.Destroy())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up container %s: %w", c.Config.Name, err)
	}
	return nil
}

// Remove removes a container that does not run: its upper, work dir, init
// layer, cgroup, and directory. A running one is refused with ErrRunning.
func (c *Container) Remove() error {
	l, err := flock.TryExclusive(c.path("lock"))
	if errors.Is(err, flock.ErrBusy) {
		return fmt.Errorf("container %s: %w: stop it first", c.Config.Name, ErrRunning)
	}
	if err != nil {
		return err
	}
	defer func() { _ = l.Unlock() }() // the file goes with the directory
	if err := c.clean(); err != nil {
		return err
	}
	// Rename first, so that a half-removed directory is never taken for a
	// container, then remove.
	gone := filepath.Join(filepath.Dir(c.dir), ".rm-"+c.Config.ID)
	if err := os.Rename(c.dir, gone); err != nil {
		return fmt.Errorf("remove container %s: %w", c.Config.Name, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("remove container %s: %w", c.Config.Name, err)
	}
	return nil
}

// writeJSON writes v to path through a temp file and a rename: readers see
// the old state or the new one.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

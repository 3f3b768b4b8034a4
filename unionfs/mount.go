package unionfs

import (
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/internal/fusedev"
	"github.com/strata-fs/strata/internal/mounts"
	"github.com/strata-fs/strata/whiteout"
)

// Config describes one union: its layers and how to serve it.
type Config struct {
	// Lowers are the read-only layer directories, top layer first (the kernel
	// overlay's lowerdir order).
	Lowers []string
	// Upper is the writable layer directory; "" makes a read-only union.
	Upper string
	// Work is a directory on the upper's filesystem where changes are staged.
	Work string
	// Whiteout is the format written to the upper; nil means whiteout.OCI. Both
	// formats are read from every layer.
	Whiteout whiteout.Format
	// Volatile skips the fsync of copied-up files (overlayfs's "volatile").
	Volatile bool
	// LowerPassthrough hands lower files of a writable union to the kernel
	// (FUSE passthrough), as upper files are and as lower files of a
	// read-only union always are: reads of them then never reach this
	// daemon. The price: a descriptor opened on a lower file before its
	// copy-up keeps reading the lower file as it was, as overlayfs did before
	// Linux 4.19. Without it such a descriptor reads the copy, as overlayfs
	// (since 4.19) and fuse-overlayfs do, and lower files are read through
	// this daemon into the kernel's page cache.
	LowerPassthrough bool
	// Metacopy makes a change of only the attributes of a lower regular
	// file (chmod, chown, utimes, xattrs) copy up no data: the upper file
	// names the lower one that holds it until the first write (overlayfs's
	// metacopy; the format is strata's own, see whiteout.MetacopyXattr).
	// Leave it off where another program reads the upper directly (the
	// fuse-overlayfs drop-in mode: podman does). Metacopy files already in
	// the upper are read either way.
	Metacopy bool
	// Options are extra FUSE mount options (-o), e.g. "ro", "noatime".
	Options []string
	// FsName is the source shown in /proc/mounts; "" means "strata".
	FsName string
	// Debug logs every FUSE request.
	Debug bool
	// IDs translates owners between the layers and the merged tree; nil
	// shows them as stored.
	IDs IDMapper
	// StatOverride names the xattr that holds the owner and permission bits
	// files show, as fuse-overlayfs's xattr_permissions= does (see
	// statoverride.go: OverrideXattrPrivileged, OverrideXattrUser); "" shows
	// the disk's.
	StatOverride string
	// Logger receives diagnostics (passthrough refused, and the like); nil
	// means the standard logger.
	Logger *log.Logger
	// Trace receives every decision the union makes (trace.go); nil traces
	// nothing, at no cost.
	Trace Tracer
	// Names label the lowers, top first as Lowers, in traces and in the
	// mount's StackXattr: a short diff_id for an image layer, say. A
	// missing or empty one is the directory's base name.
	Names []string
}

// Server is a mounted union.
type Server struct {
	dev        *fusedev.Dev
	loop       *serveLoop
	mountpoint string
	union      *union
	closeOnce  sync.Once
}

// maxIO is the largest READ and WRITE request: 1 MiB, the kernel's limit (256
// pages). Fewer, bigger requests are fewer round trips.
const maxIO = 1 << 20

// cacheTimeout is how long the kernel may trust entries and attributes. strata
// is the only writer of the upper while mounted and lower layers never change,
// so the kernel's own view stays true; the timeout only bounds memory.
const cacheTimeout = time.Hour

// Mount mounts the union described by cfg on mountpoint and returns once the
// kernel answers requests for it. The union is served until Unmount. On error
// nothing is mounted and every descriptor is closed.
func Mount(mountpoint string, cfg Config) (_ *Server, err error) {
	if len(cfg.Lowers) == 0 {
		return nil, errors.New("mount: no lower layer")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = log.Default()
	}
	u := &union{layers: make([]*layer, 1+len(cfg.Lowers)), selinux: selinuxEnabled(), tracer: cfg.Trace,
		metacopy: cfg.Metacopy, lowerPassthrough: cfg.LowerPassthrough}
	defer func() {
		if err != nil {
			u.close()
		}
	}()
	var devs []uint64
	if cfg.Upper != "" {
		f := cfg.Whiteout
		if f == nil {
			f = whiteout.OCI
		}
		if u.upper, err = cow.Open(cfg.Upper, cfg.Work, f, !cfg.Volatile); err != nil {
			return nil, err
		}
		l, err := openLayer(cfg.Upper)
		if err != nil {
			return nil, err
		}
		u.layers[upperLayer] = l
		devs = append(devs, l.dev)
	}
	for i, p := range cfg.Lowers {
		l, err := openLayer(p)
		if err != nil {
			return nil, err
		}
		u.layers[1+i] = l
		if u.upper != nil {
			if l.files, err = readOnlyView(l.root); err != nil {
				// Not fatal: a user namespace may not own the layer's
				// mount. The rules of addFile still keep writers away.
				logger.Printf("strata: lower layer %s: no read-only view of its mount: %v", p, err)
				l.files, err = l.root, nil
			}
		}
		devs = append(devs, l.dev)
	}
	u.ids.init(devs)
	u.ids.mapper = cfg.IDs
	if err := u.initStatOverride(cfg.StatOverride); err != nil {
		return nil, err
	}
	u.names = layerNames(cfg)
	if u.stack, err = stackInfo(cfg, u.names, u.upper).marshal(); err != nil {
		return nil, err
	}

	top := 1
	if u.upper != nil {
		top = upperLayer
	}
	var st unix.Statx_t
	if err := u.statx(top, "", &st); err != nil {
		return nil, err
	}
	rootID := u.ids.of(top, &st, 0, "")
	root := &node{u: u, layer: top, dirLayers: u.allLayers()}

	timeout := cacheTimeout
	fsname := cfg.FsName
	if fsname == "" {
		fsname = "strata"
	}
	options := append([]string{"default_permissions"}, cfg.Options...)
	if os.Geteuid() == 0 {
		options = append(options, "allow_other")
	}
	if u.upper == nil {
		options = append(options, "ro")
	}
	// A READ is spliced whole or not at all (splice.go): where pipes stay
	// at 1 MiB (no CAP_SYS_RESOURCE), READs stop two pages short of it.
	splicer := newSplicer(maxIO)
	maxRead := maxIO
	if splicer != nil {
		maxRead = min(maxRead, splicer.max&^(pageSize-1))
	}
	dev, err := fusedev.Mount(mountpoint, fusedev.Options{
		Source:  fsname,
		Subtype: "strata",
		Options: options,
		MaxRead: maxRead,
	})
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	defer func() {
		if err != nil {
			_ = fusedev.Unmount(mountpoint, 0) // already failing; the error says why
			_ = dev.Close()
		}
	}()

	kernel := kernelCalls{dev: dev}
	mopts := fuse.MountOptions{
		MaxWrite:     maxIO,
		MaxReadAhead: maxIO,
		// go-fuse's own splicing needs its serving loop; strata's loop
		// splices big reads itself (splice.go).
		DisableSplice:        true,
		EnableSymlinkCaching: true,
		EnableAcl:            true,
		Debug:                cfg.Debug,
		Logger:               logger,
	}
	opts := &fs.Options{
		MountOptions:    mopts,
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: rootID.Ino, Gen: rootID.Gen},
		Logger:          logger,
		ServerCallbacks: kernel,
	}
	raw := &rawFS{RawFileSystem: fs.NewNodeFS(root, opts), kernel: kernel, splicer: splicer}
	loop := newServeLoop(dev, fuse.NewProtocolServer(raw, &opts.MountOptions), logger, cfg.Debug)
	loop.extraCaps = capHandleKillprivV2
	loop.splicer = raw.splicer
	flags, err := loop.init()
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	raw.negotiated(flags)
	u.killpriv = raw.killpriv.Load()
	loop.start()
	if err := refusePoll(mountpoint); err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}

	u.passthrough.Store(probePassthrough(kernel, logger))
	if os.Geteuid() == 0 {
		if err := mounts.SetReadahead(mountpoint, maxRead>>10); err != nil {
			logger.Printf("strata: readahead stays at the kernel's default: %v", err)
		}
	}
	return &Server{dev: dev, loop: loop, mountpoint: mountpoint, union: u}, nil
}

// probePassthrough registers a throw-away backing file to learn whether the
// kernel takes them. go-fuse would otherwise find out at the first open and turn
// passthrough off silently for the whole mount.
func probePassthrough(k kernelCalls, logger *log.Logger) bool {
	exe, err := os.Executable()
	if err != nil {
		return false
	}
	f, err := os.Open(exe)
	if err != nil {
		return false
	}
	defer f.Close()
	id, errno := k.RegisterBackingFd(&fuse.BackingMap{Fd: int32(f.Fd())})
	if errno != 0 {
		logger.Printf("strata: FUSE passthrough unavailable (%v): file data goes through the daemon", errno)
		return false
	}
	_ = k.UnregisterBackingFd(id) // a probe; the id was never handed out
	return true
}

// selinuxEnabled reports whether the host runs SELinux, as libselinux decides:
// by its file system being mounted.
func selinuxEnabled() bool {
	var st unix.Statfs_t
	return unix.Statfs("/sys/fs/selinux", &st) == nil && st.Type == unix.SELINUX_MAGIC
}

func openLayer(path string) (*layer, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open layer", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd) // already failing
		return nil, &os.PathError{Op: "stat layer", Path: path, Err: err}
	}
	return &layer{path: path, root: fd, files: fd, dev: st.Dev}, nil
}

// readOnlyView returns the directory root on a detached, read-only copy of its
// mounts: the root lower files are opened from. The kernel reopens a
// passthrough backing file with each opener's flags, so a lower file opened
// there can never be reopened for writing (EROFS), whatever the daemon hands
// the kernel: a second fence behind addFile's rules.
func readOnlyView(root int) (int, error) {
	fd, err := unix.OpenTree(root, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("open_tree: %w", err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		_ = unix.Close(fd) // already failing
		return -1, fmt.Errorf("mount_setattr: %w", err)
	}
	return fd, nil
}

func (u *union) close() error {
	u.open.closeAll()
	var errs []error
	for _, l := range u.layers {
		if l != nil {
			errs = append(errs, unix.Close(l.root))
			if l.files != l.root {
				errs = append(errs, unix.Close(l.files))
			}
		}
	}
	if u.upper != nil {
		errs = append(errs, u.upper.Close())
	}
	return errors.Join(errs...)
}

// Unmount unmounts the union; it fails with EBUSY while a process uses it.
//
// A process that has just closed its last file on the union may still hold
// it for a moment (the kernel sends RELEASE after close(2) returns), so EBUSY
// is retried a few times before it is returned.
func (s *Server) Unmount() error {
	delay := 5 * time.Millisecond
	for try := 0; ; try++ {
		err := fusedev.Unmount(s.mountpoint, 0)
		if err == nil || !errors.Is(err, unix.EBUSY) || try == 4 {
			return err
		}
		time.Sleep(delay)
		delay *= 2
	}
}

// Passthrough reports whether the kernel reads and writes the layers' files
// itself (FUSE passthrough), or file data goes through this daemon.
func (s *Server) Passthrough() bool { return s.union.passthrough.Load() }

// Wait returns when the union has been unmounted, and releases its layers.
func (s *Server) Wait() {
	s.loop.wait()
	s.closeOnce.Do(func() {
		// Descriptors only; nothing to report after unmount.
		_ = s.dev.Close()
		_ = s.union.close()
		if s.loop.splicer != nil {
			s.loop.splicer.close()
		}
	})
}

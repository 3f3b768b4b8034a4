package unionfs

import (
	"github.com/hanwen/go-fuse/v2/fuse"

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
	// Options are extra FUSE mount options (-o), e.g. "ro", "noatime".
	Options []string
	// FsName is the source shown in /proc/mounts; "" means "strata".
	FsName string
	// Debug logs every FUSE request.
	Debug bool
}

// Server is a mounted union.
type Server struct {
	fuse *fuse.Server
}

// Mount mounts the union described by cfg on mountpoint and returns once the
// kernel answers requests for it. The union is served until Unmount.
func Mount(mountpoint string, cfg Config) (*Server, error) { panic("TODO") }

// Unmount unmounts the union; it fails with EBUSY while a process uses it.
func (s *Server) Unmount() error { return s.fuse.Unmount() }

// Wait returns when the union has been unmounted.
func (s *Server) Wait() { s.fuse.Wait() }

package unionfs

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/whiteout"
)

// StackXattr is a read-only virtual xattr of a union's root directory: the
// stack behind the mount, as JSON (StackInfo). It is how `strata layers
// MOUNTPOINT` learns the stack of a mount that another strata process serves,
// whichever command started it: the answer comes from the server itself, so it
// cannot outlive the mount or describe another one, and it needs no state
// file to clean up after a crash. It is never listed, and cannot be set or
// removed; the same name in a layer is hidden like overlay's own xattrs.
const StackXattr = "user.strata.stack"

// StackInfo describes a mounted union.
type StackInfo struct {
	// Pid is the process serving the union.
	Pid int `json:"pid"`
	// Layers are the layers by index: the upper first (index 0) if there
	// is one, then the lowers, top first.
	Layers []LayerInfo `json:"layers"`
	// Work is the work directory; "" without an upper.
	Work string `json:"work,omitempty"`
	// Whiteout is the format written to the upper: "oci" or "overlay"
	// (both are read); "" without an upper.
	Whiteout string `json:"whiteout,omitempty"`
	// OpaqueXattr is the xattr that marks an opaque directory in the
	// overlay format: trusted.overlay.opaque, or user.overlay.opaque
	// without privilege.
	OpaqueXattr string `json:"opaque_xattr,omitempty"`
	// Volatile is set when copy-ups are not synced.
	Volatile bool `json:"volatile,omitempty"`
}

// LayerInfo is one layer of a mounted union.
type LayerInfo struct {
	Index int    `json:"index"`
	Role  string `json:"role"` // "upper" or "lower"
	Name  string `json:"name"`
	Path  string `json:"path"`
}

// layerNames labels every layer by index: "upper" for the upper, cfg.Names or
// the directory's base name for the lowers.
func layerNames(cfg Config) []string {
	names := make([]string, 1+len(cfg.Lowers))
	names[upperLayer] = "upper"
	for i, p := range cfg.Lowers {
		if i < len(cfg.Names) && cfg.Names[i] != "" {
			names[1+i] = cfg.Names[i]
		} else {
			names[1+i] = filepath.Base(p)
		}
	}
	return names
}

func stackInfo(cfg Config, names []string, upper *cow.Upper) StackInfo {
	info := StackInfo{Pid: os.Getpid(), Volatile: cfg.Volatile && upper != nil}
	if upper != nil {
		info.Layers = append(info.Layers, LayerInfo{Index: upperLayer, Role: "upper", Name: names[upperLayer], Path: cfg.Upper})
		info.Work = cfg.Work
		info.Whiteout = upper.Format.String()
		info.OpaqueXattr = whiteout.OpaqueFor(whiteout.Overlay, upper.Privileged).XattrName
	}
	for i, p := range cfg.Lowers {
		info.Layers = append(info.Layers, LayerInfo{Index: 1 + i, Role: "lower", Name: names[1+i], Path: p})
	}
	return info
}

func (s StackInfo) marshal() ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("describe stack: %w", err)
	}
	if len(b) > xattrSizeMax {
		// Hundreds of long paths: the mount works, only `strata layers`
		// cannot tell (getxattr says E2BIG).
		return nil, nil
	}
	return b, nil
}

// xattrSizeMax is the largest xattr value the kernel passes (XATTR_SIZE_MAX).
const xattrSizeMax = 64 << 10

// getStackXattr answers a getxattr of StackXattr on the root.
func (u *union) getStackXattr(dest []byte) (uint32, syscall.Errno) {
	if u.stack == nil {
		return 0, syscall.E2BIG
	}
	if len(dest) < len(u.stack) {
		return uint32(len(u.stack)), syscall.ERANGE
	}
	return uint32(copy(dest, u.stack)), 0
}

package layers_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/strata-fs/strata/layers"
)

// The command lines containers/storage gives its mount_program, and the
// fuse-overlayfs options around them.
func TestParseFuseOverlay(t *testing.T) {
	base := func() layers.FuseOverlay { return layers.FuseOverlay{SquashUID: -1, SquashGID: -1} }
	with := func(f func(*layers.FuseOverlay)) layers.FuseOverlay { fo := base(); f(&fo); return fo }
	tests := []struct {
		name string
		opts string
		want layers.FuseOverlay
	}{
		{"podman rootful",
			"lowerdir=/s/l/AAA:/s/l/BBB,upperdir=/s/o/ID/diff,workdir=/s/o/ID/work,context=\"system_u:object_r:container_file_t:s0:c1,c2\"",
			with(func(fo *layers.FuseOverlay) {
				fo.Lowers = []string{"/s/l/AAA", "/s/l/BBB"}
				fo.Upper, fo.Work = "/s/o/ID/diff", "/s/o/ID/work"
				fo.Context = "system_u:object_r:container_file_t:s0:c1,c2"
			})},
		{"volatile, harmless options",
			"lowerdir=/a,upperdir=/u,workdir=/w,volatile,noatime,nodev,fsync=0,static_nlink,noacl",
			with(func(fo *layers.FuseOverlay) {
				fo.Lowers, fo.Upper, fo.Work, fo.Volatile = []string{"/a"}, "/u", "/w", true
			})},
		{"lowerdir only: read-only", "lowerdir=/a:/b",
			with(func(fo *layers.FuseOverlay) { fo.Lowers = []string{"/a", "/b"} })},
		{"escaped comma and colon", `lowerdir=/a\,b:/c\:d,upperdir=/u\,1,workdir=/w`,
			with(func(fo *layers.FuseOverlay) {
				fo.Lowers, fo.Upper, fo.Work = []string{"/a,b", "/c:d"}, "/u,1", "/w"
			})},
		{"rootless mappings, leading colon",
			"uidmapping=:0:100000:65536,gidmapping=0:1000:1:1:110000:65536,lowerdir=/a,upperdir=/u,workdir=/w",
			with(func(fo *layers.FuseOverlay) {
				fo.Lowers, fo.Upper, fo.Work = []string{"/a"}, "/u", "/w"
				fo.UIDMap = []layers.IDMap{{Stored: 0, Shown: 100000, Count: 65536}}
				fo.GIDMap = []layers.IDMap{{Stored: 0, Shown: 1000, Count: 1}, {Stored: 1, Shown: 110000, Count: 65536}}
			})},
		{"squash and xattr permissions",
			"lowerdir=/a,squash_to_root,squash_to_uid=5,squash_to_gid=6,xattr_permissions=2",
			with(func(fo *layers.FuseOverlay) {
				fo.Lowers = []string{"/a"}
				fo.SquashToRoot, fo.SquashUID, fo.SquashGID, fo.XattrPermissions = true, 5, 6, 2
			})},
		{"FUSE options passed on", "lowerdir=/a,ro,allow_other",
			with(func(fo *layers.FuseOverlay) { fo.Lowers, fo.Options = []string{"/a"}, []string{"ro", "allow_other"} })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := layers.ParseFuseOverlay(tt.opts)
			if err != nil {
				t.Fatalf("ParseFuseOverlay(%q): %v", tt.opts, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseFuseOverlay(%q)\n got %+v\nwant %+v", tt.opts, got, tt.want)
			}
		})
	}
}

func TestParseFuseOverlayRefuses(t *testing.T) {
	for _, opts := range []string{
		"lowerdir=/a,bogus",
		"lowerdir=/a,uidmapping=0:1",
		"lowerdir=/a,uidmapping=0:1:0",
		"lowerdir=/a,uidmapping=0:x:1",
		"lowerdir=/a,uidmapping=0:10:5:3:100:5", // inside ranges overlap
		"lowerdir=/a,gidmapping=",
		"lowerdir=/a,squash_to_uid=root",
		"lowerdir=/a,xattr_permissions=3",
		"lowerdir=/a,metacopy=on",
		"lowerdir=/a:,upperdir=/u",
	} {
		_, err := layers.ParseFuseOverlay(opts)
		if !errors.Is(err, layers.ErrBadOption) {
			t.Errorf("ParseFuseOverlay(%q) = %v, want ErrBadOption", opts, err)
		}
	}
}

func TestIDMaps(t *testing.T) {
	// The example of fuse-overlayfs(1): files stored as 0 and 1 show as
	// 1000 and 110000, which a user namespace mapping 0 and 1 to those
	// shows as 0 and 1 again.
	m := []layers.IDMap{{Stored: 0, Shown: 1000, Count: 1}, {Stored: 1, Shown: 110000, Count: 65536}}
	for _, tt := range []struct {
		stored, shown uint32
	}{{0, 1000}, {1, 110000}, {65536, 175535}} {
		if got, ok := layers.ToShown(m, tt.stored); !ok || got != tt.shown {
			t.Errorf("ToShown(%d) = %d, %v; want %d", tt.stored, got, ok, tt.shown)
		}
		if got, ok := layers.ToStored(m, tt.shown); !ok || got != tt.stored {
			t.Errorf("ToStored(%d) = %d, %v; want %d", tt.shown, got, ok, tt.stored)
		}
	}
	if _, ok := layers.ToShown(m, 70000); ok {
		t.Error("ToShown(70000): an id no range maps was mapped")
	}
	if got, ok := layers.ToStored(nil, 42); !ok || got != 42 {
		t.Errorf("ToStored(no map, 42) = %d, %v", got, ok)
	}
}

// xattr_permissions= takes 0, 1 or 2, fuse-overlayfs's values; anything else
// is refused with the option's name.
func TestParseFuseOverlayXattrPermissions(t *testing.T) {
	for _, tt := range []struct {
		opt  string
		want int
		ok   bool
	}{
		{"xattr_permissions=0", 0, true},
		{"xattr_permissions=1", 1, true},
		{"xattr_permissions=2", 2, true},
		{"xattr_permissions=3", 0, false},
		{"xattr_permissions=-1", 0, false},
		{"xattr_permissions=two", 0, false},
		{"xattr_permissions=", 0, false},
		{"xattr_permissions", 0, false},
	} {
		fo, err := layers.ParseFuseOverlay("lowerdir=/a," + tt.opt)
		switch {
		case tt.ok && err != nil:
			t.Errorf("%s: %v", tt.opt, err)
		case tt.ok && fo.XattrPermissions != tt.want:
			t.Errorf("%s: XattrPermissions %d, want %d", tt.opt, fo.XattrPermissions, tt.want)
		case !tt.ok && (!errors.Is(err, layers.ErrBadOption) || !strings.Contains(err.Error(), "xattr_permissions")):
			t.Errorf("%s: %v, want ErrBadOption naming the option", tt.opt, err)
		}
	}
}

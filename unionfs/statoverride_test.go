package unionfs

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

func TestParseStatOverride(t *testing.T) {
	for _, tt := range []struct {
		v    string
		want statOverride
		ok   bool
	}{
		{"5:6:4751", statOverride{5, 6, 0o4751}, true},
		{"0:0:0755", statOverride{0, 0, 0o755}, true},     // containers/storage's leading 0
		{"0:0:40755", statOverride{0, 0, 0o755}, true},    // fuse-overlayfs 1.10's type bits
		{"1:2:644:file", statOverride{1, 2, 0o644}, true}, // newer containers/storage's type
		{"100000:100000:600\n", statOverride{100000, 100000, 0o600}, true},
		{"5:6", statOverride{}, false},
		{"-1:6:644", statOverride{}, false},
		{"a:b:c", statOverride{}, false},
		{"1:2:999", statOverride{}, false},
		{"", statOverride{}, false},
	} {
		got, ok := parseStatOverride([]byte(tt.v))
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseStatOverride(%q) = %+v, %v; want %+v, %v", tt.v, got, ok, tt.want, tt.ok)
		}
		if ok {
			back, _ := parseStatOverride(got.value())
			if back != got {
				t.Errorf("%+v does not read back from %q", got, got.value())
			}
		}
	}
	// apply keeps the file type.
	a := fuse.Attr{Mode: 0o40755, Owner: fuse.Owner{Uid: 1, Gid: 1}}
	statOverride{7, 8, 0o1700}.apply(&a)
	if a.Mode != 0o41700 || a.Uid != 7 || a.Gid != 8 {
		t.Errorf("apply: mode %o owner %d:%d", a.Mode, a.Uid, a.Gid)
	}
}

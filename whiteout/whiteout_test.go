package whiteout_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/strata-fs/strata/whiteout"
)

// st_mode file types, spelled out here so that the tests check the package's
// own constants against the numbers Linux uses.
const (
	sIFREG  = 0o100000
	sIFDIR  = 0o040000
	sIFCHR  = 0o020000
	sIFBLK  = 0o060000
	sIFLNK  = 0o120000
	sIFIFO  = 0o010000
	sIFSOCK = 0o140000
)

// mkdev builds a Linux dev_t the way makedev(3) does.
func mkdev(major, minor uint64) uint64 {
	return (major&0xfff)<<8 | (major&^0xfff)<<32 | minor&0xff | (minor&^0xff)<<12
}

func TestClassify(t *testing.T) {
	long := strings.Repeat("x", 255)
	tests := []struct {
		name       string
		entry      string
		mode       uint32
		rdev       uint64
		wantKind   whiteout.Kind
		wantTarget string
	}{
		// Plain names of every type show under their own name.
		{"plain file", "a", sIFREG | 0o644, 0, whiteout.Plain, "a"},
		{"plain dir", "a", sIFDIR | 0o755, 0, whiteout.Plain, "a"},
		{"plain symlink", "a", sIFLNK | 0o777, 0, whiteout.Plain, "a"},
		{"plain fifo", "a", sIFIFO | 0o644, 0, whiteout.Plain, "a"},
		{"plain socket", "a", sIFSOCK | 0o755, 0, whiteout.Plain, "a"},
		{"dot name", ".profile", sIFREG | 0o644, 0, whiteout.Plain, ".profile"},
		{"wh without trailing dot", ".wh", sIFREG | 0o644, 0, whiteout.Plain, ".wh"},
		{"whx", ".whx", sIFREG | 0o644, 0, whiteout.Plain, ".whx"},
		{"prefix not at start", "x.wh.y", sIFREG | 0o644, 0, whiteout.Plain, "x.wh.y"},
		{"wh. without leading dot", "wh.x", sIFREG | 0o644, 0, whiteout.Plain, "wh.x"},
		{"unicode", "ünï €", sIFREG | 0o644, 0, whiteout.Plain, "ünï €"},
		{"255 bytes", long, sIFREG | 0o644, 0, whiteout.Plain, long},
		{"empty file named like a dev", "null", sIFREG | 0o644, 0, whiteout.Plain, "null"},

		// OCI whiteouts: the prefix decides, whatever the entry's type.
		{"oci whiteout", ".wh.x", sIFREG | 0o644, 0, whiteout.Whiteout, "x"},
		{"oci whiteout mode 0", ".wh.x", sIFREG, 0, whiteout.Whiteout, "x"},
		{"oci whiteout that is a dir", ".wh.x", sIFDIR | 0o755, 0, whiteout.Whiteout, "x"},
		{"oci whiteout that is a char 0/0", ".wh.x", sIFCHR, 0, whiteout.Whiteout, "x"},
		{"oci whiteout of dot name", ".wh..x", sIFREG | 0o644, 0, whiteout.Whiteout, ".x"},
		{"oci whiteout of .wh", ".wh..wh", sIFREG | 0o644, 0, whiteout.Whiteout, ".wh"},
		{"oci whiteout of dots", ".wh....", sIFREG | 0o644, 0, whiteout.Whiteout, "..."},
		{"oci whiteout of long name", ".wh." + long, sIFREG | 0o644, 0, whiteout.Whiteout, long},

		// Opaque marker and aufs metadata name no entry.
		{"opaque marker", ".wh..wh..opq", sIFREG | 0o644, 0, whiteout.OpaqueMark, ""},
		{"opaque marker mode 0", ".wh..wh..opq", sIFREG, 0, whiteout.OpaqueMark, ""},
		{"opaque marker as dir", ".wh..wh..opq", sIFDIR | 0o755, 0, whiteout.OpaqueMark, ""},
		{"plnk", ".wh..wh.plnk", sIFDIR | 0o700, 0, whiteout.Meta, ""},
		{"aufs", ".wh..wh.aufs", sIFREG | 0o644, 0, whiteout.Meta, ""},
		{"orph", ".wh..wh.orph", sIFDIR | 0o700, 0, whiteout.Meta, ""},
		{"bare meta prefix", ".wh..wh.", sIFREG | 0o644, 0, whiteout.Meta, ""},
		{"opq with suffix", ".wh..wh..opqx", sIFREG | 0o644, 0, whiteout.Meta, ""},
		{"nested meta", ".wh..wh..wh.x", sIFREG | 0o644, 0, whiteout.Meta, ""},
		{"meta that is a char 0/0", ".wh..wh.x", sIFCHR, 0, whiteout.Meta, ""},

		// OCI whiteouts whose target is no valid name hide nothing.
		{"empty target", ".wh.", sIFREG | 0o644, 0, whiteout.Meta, ""},
		{"target dot", ".wh..", sIFREG | 0o644, 0, whiteout.Meta, ""},
		{"target dotdot", ".wh...", sIFREG | 0o644, 0, whiteout.Meta, ""},
		{"target with slash", ".wh.a/b", sIFREG | 0o644, 0, whiteout.Meta, ""},
		{"target with NUL", ".wh.a\x00", sIFREG | 0o644, 0, whiteout.Meta, ""},

		// Overlay whiteouts: a char device 0/0, and nothing else.
		{"overlay whiteout", "a", sIFCHR, 0, whiteout.Whiteout, "a"},
		{"overlay whiteout with perms", "a", sIFCHR | 0o644, 0, whiteout.Whiteout, "a"},
		{"overlay whiteout with setuid bits", "a", sIFCHR | 0o7777, 0, whiteout.Whiteout, "a"},
		{"overlay whiteout of dot name", ".a", sIFCHR, 0, whiteout.Whiteout, ".a"},
		{"char 1/3", "null", sIFCHR | 0o666, mkdev(1, 3), whiteout.Plain, "null"},
		{"char 0/1", "a", sIFCHR | 0o666, mkdev(0, 1), whiteout.Plain, "a"},
		{"char 1/0", "a", sIFCHR | 0o666, mkdev(1, 0), whiteout.Plain, "a"},
		{"char 0/256", "a", sIFCHR | 0o666, mkdev(0, 256), whiteout.Plain, "a"},
		{"char 4096/0", "a", sIFCHR | 0o666, mkdev(4096, 0), whiteout.Plain, "a"},
		{"block 0/0", "a", sIFBLK | 0o660, 0, whiteout.Plain, "a"},
		{"regular rdev 0", "a", sIFREG, 0, whiteout.Plain, "a"},
		{"dir rdev 0", "a", sIFDIR, 0, whiteout.Plain, "a"},
		{"fifo rdev 0", "a", sIFIFO, 0, whiteout.Plain, "a"},
		{"socket rdev 0", "a", sIFSOCK, 0, whiteout.Plain, "a"},
		{"symlink rdev 0", "a", sIFLNK, 0, whiteout.Plain, "a"},
		{"no type bits", "a", 0, 0, whiteout.Plain, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, target := whiteout.Classify(tt.entry, tt.mode, tt.rdev)
			if k != tt.wantKind || target != tt.wantTarget {
				t.Errorf("Classify(%q, %#o, %#x) = %v, %q; want %v, %q",
					tt.entry, tt.mode, tt.rdev, k, target, tt.wantKind, tt.wantTarget)
			}
		})
	}
}

func TestIsOverlayWhiteout(t *testing.T) {
	tests := []struct {
		name string
		mode uint32
		rdev uint64
		want bool
	}{
		{"char 0/0", sIFCHR, 0, true},
		{"char 0/0 with perms", sIFCHR | 0o600, 0, true},
		{"char 1/3", sIFCHR, mkdev(1, 3), false},
		{"char 0/1", sIFCHR, mkdev(0, 1), false},
		{"block 0/0", sIFBLK, 0, false},
		{"regular", sIFREG, 0, false},
		{"dir", sIFDIR, 0, false},
		{"fifo", sIFIFO, 0, false},
		{"symlink", sIFLNK, 0, false},
		{"socket", sIFSOCK, 0, false},
		{"no type", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := whiteout.IsOverlayWhiteout(tt.mode, tt.rdev); got != tt.want {
				t.Errorf("IsOverlayWhiteout(%#o, %#x) = %v, want %v", tt.mode, tt.rdev, got, tt.want)
			}
		})
	}
}

func TestMayHideEntries(t *testing.T) {
	tests := []struct {
		name  string
		entry string
		mode  uint32
		want  bool
	}{
		{"plain file", "a", sIFREG, false},
		{"plain dir", "a", sIFDIR, false},
		{"symlink", "a", sIFLNK, false},
		{"block device", "a", sIFBLK, false},
		{"fifo", "a", sIFIFO, false},
		{"socket", "a", sIFSOCK, false},
		{"char device", "a", sIFCHR, true},
		{"char device with perms", "a", sIFCHR | 0o666, true},
		{"oci whiteout", ".wh.a", sIFREG, true},
		{"opaque marker", ".wh..wh..opq", sIFREG, true},
		{"meta dir", ".wh..wh.plnk", sIFDIR, true},
		{"invalid target", ".wh.", sIFREG, true},
		{"near miss .wh", ".wh", sIFREG, false},
		{"near miss wh.", "wh.a", sIFREG, false},
		{"prefix inside", "a.wh.b", sIFREG, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := whiteout.MayHideEntries(tt.entry, tt.mode); got != tt.want {
				t.Errorf("MayHideEntries(%q, %#o) = %v, want %v", tt.entry, tt.mode, got, tt.want)
			}
		})
	}
}

// TestMayHideEntriesCoversClassify checks the promise of MayHideEntries: an entry
// for which it says false is always Plain.
func TestMayHideEntriesCoversClassify(t *testing.T) {
	names := []string{"a", ".wh", ".wh.", ".wh.a", ".wh..wh..opq", ".wh..wh.x", "x.wh.y", ".wh..", "wh.a"}
	modes := []uint32{sIFREG, sIFDIR, sIFCHR, sIFBLK, sIFLNK, sIFIFO, sIFSOCK, 0}
	rdevs := []uint64{0, mkdev(1, 3)}
	for _, n := range names {
		for _, m := range modes {
			for _, r := range rdevs {
				if whiteout.MayHideEntries(n, m) {
					continue
				}
				if k, target := whiteout.Classify(n, m, r); k != whiteout.Plain || target != n {
					t.Errorf("MayHideEntries(%q, %#o) = false but Classify = %v, %q; want %v, %q",
						n, m, k, target, whiteout.Plain, n)
				}
			}
		}
	}
}

func TestIsOpaqueXattr(t *testing.T) {
	tests := []struct {
		name  string
		xattr string
		value []byte
		want  bool
	}{
		{"trusted y", "trusted.overlay.opaque", []byte("y"), true},
		{"user y", "user.overlay.opaque", []byte("y"), true},
		{"trusted n", "trusted.overlay.opaque", []byte("n"), false},
		{"user n", "user.overlay.opaque", []byte("n"), false},
		{"trusted Y", "trusted.overlay.opaque", []byte("Y"), false},
		{"trusted x", "trusted.overlay.opaque", []byte("x"), false},
		{"trusted empty", "trusted.overlay.opaque", []byte{}, false},
		{"trusted nil", "trusted.overlay.opaque", nil, false},
		{"trusted y NUL", "trusted.overlay.opaque", []byte("y\x00"), false},
		{"trusted yes", "trusted.overlay.opaque", []byte("yes"), false},
		{"trusted y newline", "trusted.overlay.opaque", []byte("y\n"), false},
		{"redirect y", "trusted.overlay.redirect", []byte("y"), false},
		{"origin y", "trusted.overlay.origin", []byte("y"), false},
		{"opaque2", "trusted.overlay.opaque2", []byte("y"), false},
		{"security namespace", "security.overlay.opaque", []byte("y"), false},
		{"no namespace", "overlay.opaque", []byte("y"), false},
		{"upper case", "TRUSTED.overlay.opaque", []byte("y"), false},
		{"user other", "user.opaque", []byte("y"), false},
		{"empty name", "", []byte("y"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := whiteout.IsOpaqueXattr(tt.xattr, tt.value); got != tt.want {
				t.Errorf("IsOpaqueXattr(%q, %q) = %v, want %v", tt.xattr, tt.value, got, tt.want)
			}
		})
	}
}

func TestIsPrivateXattr(t *testing.T) {
	tests := []struct {
		xattr string
		want  bool
	}{
		{"trusted.overlay.opaque", true},
		{"trusted.overlay.origin", true},
		{"trusted.overlay.impure", true},
		{"trusted.overlay.redirect", true},
		{"trusted.overlay.metacopy", true},
		{"trusted.overlay.", true},
		{"user.overlay.opaque", true},
		{"user.overlay.origin", true},
		{"user.overlay.", true},
		{"trusted.overlay", false},
		{"user.overlay", false},
		{"trusted.overlayx", false},
		{"user.overlayfoo.x", false},
		{"trusted.foo", false},
		{"user.foo", false},
		{"user.mime_type", false},
		{"security.capability", false},
		{"security.overlay.opaque", false},
		{"system.posix_acl_access", false},
		{"TRUSTED.overlay.opaque", false},
		{"x.trusted.overlay.opaque", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.xattr, func(t *testing.T) {
			if got := whiteout.IsPrivateXattr(tt.xattr); got != tt.want {
				t.Errorf("IsPrivateXattr(%q) = %v, want %v", tt.xattr, got, tt.want)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name  string
		entry string
		ok    bool
	}{
		{"plain", "a", true},
		{"dot name", ".a", true},
		{"three dots", "...", true},
		{"space", " ", true},
		{"spaces inside", "a b c", true},
		{"unicode", "日本語", true},
		{"255 bytes", strings.Repeat("n", 255), true},
		{"256 bytes", strings.Repeat("n", 256), true}, // the length limit is the filesystem's
		{"newline", "a\nb", true},
		{"backslash", `a\b`, true},
		{"wh without dot", ".wh", true},
		{"whx", ".whx", true},
		{"wh. not leading", "a.wh.b", true},
		{"wh. without leading dot", "wh.a", true},
		{"empty", "", false},
		{"dot", ".", false},
		{"dotdot", "..", false},
		{"slash", "/", false},
		{"slash inside", "a/b", false},
		{"trailing slash", "a/", false},
		{"NUL", "\x00", false},
		{"NUL inside", "a\x00b", false},
		{"oci whiteout", ".wh.a", false},
		{"bare prefix", ".wh.", false},
		{"opaque marker", ".wh..wh..opq", false},
		{"meta", ".wh..wh.plnk", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := whiteout.ValidName(tt.entry)
			if tt.ok {
				if err != nil {
					t.Errorf("ValidName(%q) = %v, want nil", tt.entry, err)
				}
				return
			}
			if !errors.Is(err, whiteout.ErrInvalidName) {
				t.Errorf("ValidName(%q) = %v, want %v", tt.entry, err, whiteout.ErrInvalidName)
			}
		})
	}
}

func TestFormatString(t *testing.T) {
	tests := []struct {
		f    whiteout.Format
		want string
	}{
		{whiteout.OCI, "oci"},
		{whiteout.Overlay, "overlay"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.f.String(); got != tt.want {
				t.Errorf("String() = %v, want %v", got, tt.want)
			}
			got, err := whiteout.ParseFormat(tt.f.String())
			if err != nil || got != tt.f {
				t.Errorf("ParseFormat(%q) = %v, %v; want %v, nil", tt.f.String(), got, err, tt.f)
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	tests := []struct {
		in      string
		want    whiteout.Format
		wantErr bool
	}{
		{"oci", whiteout.OCI, false},
		{"aufs", whiteout.OCI, false},
		{"overlay", whiteout.Overlay, false},
		{"kernel", whiteout.Overlay, false},
		{"", nil, true},
		{"OCI", nil, true},
		{"Overlay", nil, true},
		{"overlayfs", nil, true},
		{" oci", nil, true},
		{"oci ", nil, true},
		{"docker", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := whiteout.ParseFormat(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseFormat(%q) = %v, nil; want an error", tt.in, got)
				}
				if got != nil {
					t.Errorf("ParseFormat(%q) format = %v, want nil", tt.in, got)
				}
				if want := `"` + tt.in + `"`; !strings.Contains(err.Error(), want) {
					t.Errorf("ParseFormat(%q) error = %q, want it to quote the input %s", tt.in, err, want)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseFormat(%q) = %v, %v; want %v, nil", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestWhiteoutFor(t *testing.T) {
	tests := []struct {
		name  string
		f     whiteout.Format
		entry string
		want  whiteout.Object
	}{
		{"overlay", whiteout.Overlay, "a", whiteout.Object{Name: "a", Mode: sIFCHR, Rdev: 0}},
		{"overlay dot name", whiteout.Overlay, ".a", whiteout.Object{Name: ".a", Mode: sIFCHR, Rdev: 0}},
		{"oci", whiteout.OCI, "a", whiteout.Object{Name: ".wh.a", Mode: sIFREG | 0o644, Rdev: 0}},
		{"oci dot name", whiteout.OCI, ".a", whiteout.Object{Name: ".wh..a", Mode: sIFREG | 0o644, Rdev: 0}},
		{"oci longest prefixable name", whiteout.OCI, strings.Repeat("n", 251), whiteout.Object{Name: ".wh." + strings.Repeat("n", 251), Mode: sIFREG | 0o644}},
		{"oci name too long to prefix", whiteout.OCI, strings.Repeat("n", 252), whiteout.Object{Name: strings.Repeat("n", 252), Mode: sIFCHR}},
		{"oci name of NAME_MAX", whiteout.OCI, strings.Repeat("n", 255), whiteout.Object{Name: strings.Repeat("n", 255), Mode: sIFCHR}},
		{"overlay name of NAME_MAX", whiteout.Overlay, strings.Repeat("n", 255), whiteout.Object{Name: strings.Repeat("n", 255), Mode: sIFCHR}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := whiteout.WhiteoutFor(tt.f, tt.entry)
			if got != tt.want {
				t.Fatalf("WhiteoutFor(%v, %q) = %+v, want %+v", tt.f, tt.entry, got, tt.want)
			}
			// What a format writes, every reader takes for a whiteout of the name.
			if k, target := whiteout.Classify(got.Name, got.Mode, got.Rdev); k != whiteout.Whiteout || target != tt.entry {
				t.Errorf("Classify(WhiteoutFor(%v, %q)) = %v, %q; want %v, %q",
					tt.f, tt.entry, k, target, whiteout.Whiteout, tt.entry)
			}
		})
	}
}

func TestOpaqueFor(t *testing.T) {
	tests := []struct {
		name       string
		f          whiteout.Format
		privileged bool
		wantEntry  *whiteout.Object
		wantXattr  string
		wantValue  string
	}{
		{"overlay privileged", whiteout.Overlay, true, nil, "trusted.overlay.opaque", "y"},
		{"overlay unprivileged", whiteout.Overlay, false, nil, "user.overlay.opaque", "y"},
		{"oci privileged", whiteout.OCI, true, &whiteout.Object{Name: ".wh..wh..opq", Mode: sIFREG | 0o644}, "", ""},
		{"oci unprivileged", whiteout.OCI, false, &whiteout.Object{Name: ".wh..wh..opq", Mode: sIFREG | 0o644}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := whiteout.OpaqueFor(tt.f, tt.privileged)
			switch {
			case tt.wantEntry == nil && got.Entry != nil:
				t.Errorf("OpaqueFor(%v, %v).Entry = %+v, want nil", tt.f, tt.privileged, *got.Entry)
			case tt.wantEntry != nil && got.Entry == nil:
				t.Errorf("OpaqueFor(%v, %v).Entry = nil, want %+v", tt.f, tt.privileged, *tt.wantEntry)
			case tt.wantEntry != nil && *got.Entry != *tt.wantEntry:
				t.Errorf("OpaqueFor(%v, %v).Entry = %+v, want %+v", tt.f, tt.privileged, *got.Entry, *tt.wantEntry)
			}
			if got.XattrName != tt.wantXattr || string(got.XattrValue) != tt.wantValue {
				t.Errorf("OpaqueFor(%v, %v) xattr = %q=%q, want %q=%q",
					tt.f, tt.privileged, got.XattrName, got.XattrValue, tt.wantXattr, tt.wantValue)
			}
			// What a format writes, every reader takes for an opaque mark.
			if got.Entry != nil {
				if k, target := whiteout.Classify(got.Entry.Name, got.Entry.Mode, got.Entry.Rdev); k != whiteout.OpaqueMark || target != "" {
					t.Errorf("Classify(OpaqueFor(%v).Entry) = %v, %q; want %v, %q", tt.f, k, target, whiteout.OpaqueMark, "")
				}
			} else {
				if !whiteout.IsOpaqueXattr(got.XattrName, got.XattrValue) {
					t.Errorf("IsOpaqueXattr(OpaqueFor(%v, %v)) = false, want true", tt.f, tt.privileged)
				}
				if !whiteout.IsPrivateXattr(got.XattrName) {
					t.Errorf("IsPrivateXattr(%q) = false, want true", got.XattrName)
				}
			}
		})
	}
}

// TestOpaqueForValueNotShared checks that a caller changing the returned value
// cannot change what the next call returns.
func TestOpaqueForValueNotShared(t *testing.T) {
	o := whiteout.OpaqueFor(whiteout.Overlay, true)
	o.XattrValue[0] = 'n'
	if got := string(whiteout.OpaqueFor(whiteout.Overlay, true).XattrValue); got != "y" {
		t.Errorf("OpaqueFor after caller's change: value %q, want %q", got, "y")
	}
}

func TestIsDirMode(t *testing.T) {
	tests := []struct {
		name string
		mode uint32
		want bool
	}{
		{"dir", sIFDIR, true},
		{"dir 0755", sIFDIR | 0o755, true},
		{"dir sticky", sIFDIR | 0o1777, true},
		{"regular", sIFREG | 0o755, false},
		{"block", sIFBLK, false}, // shares the 0o040000 bit with dir
		{"socket", sIFSOCK, false},
		{"char", sIFCHR, false},
		{"symlink", sIFLNK, false},
		{"fifo", sIFIFO, false},
		{"no type", 0o755, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := whiteout.IsDirMode(tt.mode); got != tt.want {
				t.Errorf("IsDirMode(%#o) = %v, want %v", tt.mode, got, tt.want)
			}
		})
	}
}

func TestKindString(t *testing.T) {
	tests := []struct {
		k    whiteout.Kind
		want string
	}{
		{whiteout.Plain, "plain"},
		{whiteout.Whiteout, "whiteout"},
		{whiteout.OpaqueMark, "opaque"},
		{whiteout.Meta, "meta"},
		{whiteout.Kind(42), "Kind(42)"},
		{whiteout.Kind(-1), "Kind(-1)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.k.String(); got != tt.want {
				t.Errorf("Kind.String() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestConstants(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"Prefix", whiteout.Prefix, ".wh."},
		{"MetaPrefix", whiteout.MetaPrefix, ".wh..wh."},
		{"OpaqueMarker", whiteout.OpaqueMarker, ".wh..wh..opq"},
		{"TrustedOpaqueXattr", whiteout.TrustedOpaqueXattr, "trusted.overlay.opaque"},
		{"UserOpaqueXattr", whiteout.UserOpaqueXattr, "user.overlay.opaque"},
		{"OpaqueValue", whiteout.OpaqueValue, "y"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestIsOwnXattr(t *testing.T) {
	tests := []struct {
		xattr      string
		privileged bool
		want       bool
	}{
		{"trusted.overlay.opaque", true, true},
		{"trusted.overlay.opaque", false, true},
		{"trusted.overlay.origin", true, true},
		{"trusted.overlay.origin", false, true},
		{"trusted.overlay.", true, true},
		{"user.overlay.opaque", true, false},
		{"user.overlay.opaque", false, true},
		{"user.overlay.origin", true, false},
		{"user.overlay.origin", false, true},
		{"user.overlay.", false, true},
		{"trusted.strata.metacopy", true, true},
		{"trusted.strata.metacopy", false, true},
		{"user.strata.metacopy", false, true},
		{"user.strata.metacopy", true, false},
		{"user.strata.other", false, false},
		{"user.overlay", false, false},
		{"user.overlayfoo.x", false, false},
		{"user.other", false, false},
		{"user.other", true, false},
		{"trusted.other", true, false},
		{"security.capability", true, false},
		{"security.overlay.opaque", false, false},
		{"trusted.overlayx", true, false},
		{"trusted.overlay", false, false},
		{"TRUSTED.overlay.opaque", true, false},
		{"", false, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/privileged=%v", tt.xattr, tt.privileged), func(t *testing.T) {
			if got := whiteout.IsOwnXattr(tt.xattr, tt.privileged); got != tt.want {
				t.Errorf("IsOwnXattr(%q, %v) = %v, want %v", tt.xattr, tt.privileged, got, tt.want)
			}
		})
	}
}

// TestIsOwnXattrCoversIsPrivateXattr checks that the two agree where they must:
// what a union keeps to itself in either mode is private, and an unprivileged
// union keeps every private xattr to itself.
func TestIsOwnXattrCoversIsPrivateXattr(t *testing.T) {
	names := []string{"trusted.overlay.opaque", "user.overlay.opaque", "user.x", "trusted.x", "security.capability", "user.overlay"}
	for _, n := range names {
		for _, priv := range []bool{true, false} {
			if whiteout.IsOwnXattr(n, priv) && !whiteout.IsPrivateXattr(n) {
				t.Errorf("IsOwnXattr(%q, %v) = true but IsPrivateXattr = false", n, priv)
			}
		}
		if got, want := whiteout.IsOwnXattr(n, false), whiteout.IsPrivateXattr(n); got != want {
			t.Errorf("IsOwnXattr(%q, false) = %v, want %v (IsPrivateXattr)", n, got, want)
		}
	}
}

package whiteout

import (
	"strings"
	"testing"
)

// FuzzClassify holds the name rules to their promises for any name and mode:
// an OCI whiteout hides exactly one valid name of its own directory, never "",
// "." or "..", nor a path; what a format writes for a name reads back as a
// whiteout of that name; and nothing but the ".wh." prefix or a 0/0 character
// device makes an entry more than plain.
func FuzzClassify(f *testing.F) {
	for _, name := range []string{"a", ".wh.a", ".wh..wh..opq", ".wh..wh.plnk", ".wh.", ".wh..", ".wh...", ".wh.a/b", ".wh.\x00", ".wh..wh.", "..", "."} {
		f.Add(name, uint32(0o100644), uint64(0))
	}
	f.Add("c", uint32(0o020000), uint64(0))
	f.Add("c", uint32(0o020000), uint64(259))
	f.Fuzz(func(t *testing.T, name string, mode uint32, rdev uint64) {
		k, target := Classify(name, mode, rdev)
		switch k {
		case Whiteout:
			// An overlay whiteout hides its own name, which a directory
			// listing gives and the caller vouches for; an OCI one hides
			// what its name spells, which must be a name.
			if target != name && name != Prefix+target {
				t.Fatalf("Classify(%q) = whiteout of %q, not its own name or its .wh. target", name, target)
			}
			if err := ValidName(target); err != nil {
				if name != target {
					t.Fatalf("Classify(%q) = whiteout of %q, not a valid name: %v", name, target, err)
				}
				return
			}
			for _, fm := range []Format{OCI, Overlay} {
				o := WhiteoutFor(fm, target)
				if k2, t2 := Classify(o.Name, o.Mode, o.Rdev); k2 != Whiteout || t2 != target {
					t.Fatalf("%s whiteout of %q (%q) reads back as %v %q", fm, target, o.Name, k2, t2)
				}
			}
		case OpaqueMark:
			if name != OpaqueMarker {
				t.Fatalf("Classify(%q) = opaque mark", name)
			}
		case Meta:
			if !strings.HasPrefix(name, Prefix) {
				t.Fatalf("Classify(%q) = meta without the prefix", name)
			}
		case Plain:
			if strings.HasPrefix(name, Prefix) || IsOverlayWhiteout(mode, rdev) {
				t.Fatalf("Classify(%q, %o, %d) = plain", name, mode, rdev)
			}
			if target != name {
				t.Fatalf("Classify(%q) = plain %q", name, target)
			}
		default:
			t.Fatalf("Classify(%q) = kind %v", name, k)
		}
		if ValidName(name) == nil && MayHideEntries(name, mode) != (k != Plain || mode&modeType == modeChar) {
			t.Fatalf("MayHideEntries(%q, %o) disagrees with Classify (%v)", name, mode, k)
		}
	})
}

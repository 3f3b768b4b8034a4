package cmd

import (
	"slices"
	"testing"
)

func TestAlias(t *testing.T) {
	for _, tt := range []struct{ in, want []string }{
		{[]string{"strata", "mount", "x"}, []string{"strata", "mount", "x"}},
		{[]string{"/usr/bin/strata-overlayfs", "-o", "lowerdir=/a", "/m"}, []string{"/usr/bin/strata-overlayfs", "overlay", "-o", "lowerdir=/a", "/m"}},
		{[]string{"fuse-overlayfs", "--version"}, []string{"fuse-overlayfs", "overlay", "--version"}},
		{[]string{"/sbin/mount.fuse.strata", "strata", "/m", "-o", "rw,lowerdir=/a"}, []string{"/sbin/mount.fuse.strata", "overlay", "-o", "rw,lowerdir=/a", "/m"}},
		{[]string{"mount.fuse.strata", "src", "/m", "-n", "-orw,lowerdir=/a"}, []string{"mount.fuse.strata", "overlay", "-o", "rw,lowerdir=/a", "/m"}},
		{nil, nil},
	} {
		if got := Alias(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("Alias(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

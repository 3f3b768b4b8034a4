package container

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// InitFiles are the files of the init layer that belong to one run of a
// container, not to its image: commit leaves them out of the layer it makes
// even when the container wrote them.
var InitFiles = []string{"etc/hostname", "etc/hosts", "etc/resolv.conf"}

// writeInitLayer fills dir, the init layer: the files of InitFiles, and empty
// directories where the kernel's file systems are mounted, which hide
// whatever the image has there (a symbolic link, say).
func writeInitLayer(dir, hostname string, netHost bool) error {
	for _, d := range []string{"proc", "sys", "dev", "etc"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("init layer: %w", err)
		}
	}
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n", hostname)
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if errors.Is(err, fs.ErrNotExist) || !netHost {
		// A container of its own network has only a loopback: no name
		// server it could reach.
		resolv, err = []byte("# strata: --net none, no name server\n"), nil
	}
	if err != nil {
		return fmt.Errorf("init layer: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"etc/hostname", []byte(hostname + "\n")},
		{"etc/hosts", []byte(hosts)},
		{"etc/resolv.conf", bytes.Clone(resolv)},
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o644); err != nil {
			return fmt.Errorf("init layer: %w", err)
		}
	}
	return nil
}

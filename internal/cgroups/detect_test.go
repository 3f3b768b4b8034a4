package cgroups

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

// This build machine: v1 controllers, each on its own mount, and an empty
// unified hierarchy beside them (systemd's "hybrid").
const hybridMountinfo = `22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

const hybridCgroup = `9:name=systemd:/
8:pids:/
4:memory:/process_api/e56c
2:cpuacct:/
1:cpu:/
0::/
`

func TestDetect(t *testing.T) {
	tests := []struct {
		name, mountinfo, cgroup string
		want                    Host
		mode                    Mode
	}{{
		name: "hybrid", mountinfo: hybridMountinfo, cgroup: hybridCgroup,
		want: Host{V1: map[string]string{
			"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct",
			"memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids",
		}, Unified: "/sys/fs/cgroup/unified"},
		mode: Hybrid,
	}, {
		name: "v2",
		mountinfo: `25 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`,
		cgroup: "0::/user.slice/user-1000.slice/session-2.scope\n",
		want:   Host{V1: map[string]string{}, Unified: "/sys/fs/cgroup"},
		mode:   V2,
	}, {
		// Co-mounted controllers share a mount; the hierarchy's root
		// is preferred to a bind mount of part of it; a hierarchy this
		// mount namespace does not show (freezer) is left out.
		name: "v1",
		mountinfo: `30 22 0:27 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
33 30 0:31 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 30 0:31 / /mnt/memory\040root rw - cgroup cgroup rw,memory
35 30 0:32 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
`,
		cgroup: "3:freezer:/\n2:cpu,cpuacct:/\n1:memory:/docker/abc\n4:pids:/\n",
		want: Host{V1: map[string]string{
			"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
			"memory": "/mnt/memory root", "pids": "/sys/fs/cgroup/pids",
		}},
		mode: V1,
	}, {
		// In a container: only part of the hierarchy is mounted, the
		// one that holds this process.
		name: "v1 part",
		mountinfo: `33 30 0:31 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
34 30 0:31 /other /mnt/other rw - cgroup cgroup rw,memory
`,
		cgroup: "1:memory:/docker/abc\n",
		want:   Host{V1: map[string]string{"memory": "/sys/fs/cgroup/memory"}},
		mode:   V1,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := detect(strings.NewReader(tt.mountinfo), strings.NewReader(tt.cgroup))
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(h.V1, tt.want.V1) || h.Unified != tt.want.Unified {
				t.Errorf("got V1 %v, Unified %q; want V1 %v, Unified %q", h.V1, h.Unified, tt.want.V1, tt.want.Unified)
			}
			if h.Parent != DefaultParent {
				t.Errorf("got parent %q, want %q", h.Parent, DefaultParent)
			}
			if got := h.Mode(); got != tt.mode {
				t.Errorf("got mode %v, want %v", got, tt.mode)
			}
		})
	}
}

func TestDetectNothing(t *testing.T) {
	// Only the named systemd hierarchy: nothing to limit with.
	mi := "39 30 0:36 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
	_, err := detect(strings.NewReader(mi), strings.NewReader("1:name=systemd:/\n"))
	if !errors.Is(err, ErrNoController) {
		t.Errorf("got %v, want ErrNoController", err)
	}
	_, err = detect(strings.NewReader(""), strings.NewReader("garbage\n"))
	if err == nil || !strings.Contains(err.Error(), "garbage") {
		t.Errorf("malformed /proc/self/cgroup: got %v, want an error quoting the line", err)
	}
}

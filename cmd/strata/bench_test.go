package main

import (
	"bytes"
	"errors"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/bench"
	"github.com/strata-fs/strata/internal/mounts"
)

func TestBenchRefusesBadInput(t *testing.T) {
	d := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--systems", "strata,zfs"}, `unknown system "zfs"`},
		{[]string{"--workloads", "fsck"}, `unknown workload "fsck"`},
		{[]string{"--runs", "0"}, "at least one run"},
		{[]string{"--chart", filepath.Join(d, "out.jpg")}, ".svg or .png"},
		{[]string{"--json", filepath.Join(d, "nope", "out.json")}, "no directory"},
		{[]string{"--dir", filepath.Join(d, "nope")}, "no such directory"},
		{[]string{"extra"}, "unknown command"},
	} {
		code, stdout, stderr := strata(t, append([]string{"bench"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) || stdout != "" {
			t.Errorf("bench %q: got exit %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
	if ents, _ := os.ReadDir(d); len(ents) != 0 {
		t.Errorf("bench wrote into %s: %v", d, ents)
	}
}

// TestBenchNoRoom runs bench with its scratch dir on a 4 MiB tmpfs: refused,
// exit 2, nothing written.
func TestBenchNoRoom(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	small := t.TempDir()
	if err := unix.Mount("tmpfs", small, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(small, 0); err != nil {
			t.Error(err)
		}
	})
	code, _, stderr := strata(t, "bench", "--quick", "--systems", "disk", "--workloads", "seqread", "--dir", small)
	if code != 2 || !strings.Contains(stderr, "free") {
		t.Errorf("got exit %d, stderr %q; want 2 and a word on free space", code, stderr)
	}
	if ents, _ := os.ReadDir(small); len(ents) != 0 {
		t.Errorf("bench wrote into %s: %v", small, ents)
	}
}

// TestBench runs a short bench on disk and strata: a table on stdout, a JSON
// report and a PNG chart, and nothing left in the scratch dir.
func TestBench(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	d := t.TempDir()
	scratch := filepath.Join(d, "scratch")
	if err := os.Mkdir(scratch, 0o755); err != nil {
		t.Fatal(err)
	}
	jsonPath, chartPath := filepath.Join(d, "out.json"), filepath.Join(d, "out.png")
	code, stdout, stderr := strata(t, "bench", "--quick", "--runs", "1", "--systems", "disk,overlay,strata",
		"--workloads", "readdir,metadata-ops", "--dir", scratch, "--json", jsonPath, "--chart", chartPath)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	for _, want := range []string{"readdir cold", "readdir warm", "metadata-ops", "strata", "×overlay"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout has no %q:\n%s", want, stdout)
		}
	}
	if stderr != "" {
		t.Errorf("stderr (not a terminal: no progress line): %q", stderr)
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := bench.ReadJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 3*3 {
		t.Errorf("JSON: %d rows, want 9", len(rep.Rows))
	}
	for _, r := range rep.Rows {
		if r.Error != "" || len(r.Seconds) != 1 {
			t.Errorf("%s on %s: %d times, error %q", r.Measure, r.System, len(r.Seconds), r.Error)
		}
	}
	f, err := os.Open(chartPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // opened for reading; nothing to lose
	if _, err := png.Decode(f); err != nil {
		t.Errorf("chart: %v", err)
	}
	if ents, _ := os.ReadDir(scratch); len(ents) != 0 {
		t.Errorf("left in the scratch dir: %v", ents)
	}
}

// TestBenchInterrupted sends SIGINT to a bench while its systems are
// mounted: it exits 1, with nothing mounted and its scratch data removed.
func TestBenchInterrupted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	scratch := t.TempDir()
	c := exec.Command(binary, "bench", "--quick", "--systems", "disk,overlay,strata", "--workloads", "small-files,untar", "--runs", "50", "--dir", scratch)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for the strata mount, then interrupt.
	deadline := time.Now().Add(30 * time.Second)
	for !mountedUnder(t, scratch) {
		if time.Now().After(deadline) {
			_ = c.Process.Kill()
			_ = c.Wait()
			t.Fatalf("nothing mounted under %s after 30 s; stderr %q", scratch, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if err := c.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := c.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("got %v, want exit 1; stderr %q", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("stderr %q does not say it was interrupted", stderr.String())
	}
	if mountedUnder(t, scratch) {
		t.Errorf("still mounted under %s", scratch)
	}
	if ents, _ := os.ReadDir(scratch); len(ents) != 0 {
		t.Errorf("left in the scratch dir: %v", ents)
	}
}

func mountedUnder(t *testing.T, dir string) bool {
	t.Helper()
	ms, err := mounts.Self()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if strings.HasPrefix(m.Mountpoint, dir+"/") && m.FSType == "fuse.strata" {
			return true
		}
	}
	return false
}

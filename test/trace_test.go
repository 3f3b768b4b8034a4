package test

// The trace of a scripted session on a three-layer stack, against golden files
// (testdata/trace.txt, testdata/trace.jsonl; go test -run TestTraceGolden
// -update rewrites them). Durations and the copy method, which depend on the
// machine and its file systems, are masked.

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/unionfs"
	"github.com/strata-fs/strata/whiteout"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestTraceGolden")

// traceStack makes the three layers of the session, bottom first: base, app
// (which deletes /etc/gone and makes /var/cache opaque), fix (a new /etc/hosts).
func traceStack(t testing.TB) stack {
	t.Helper()
	return newStack(t, 3, func(i int, d string) {
		switch i {
		case 0: // base
			writeFiles(t, d, map[string]string{
				"etc/motd":     string(bytes.Repeat([]byte("m"), 4200)),
				"etc/gone":     "gone",
				"etc/hosts":    "base hosts",
				"tmp/x":        "x",
				"var/cache/c1": "c1",
				"a/sub/f":      "f",
			})
		case 1: // app
			writeFiles(t, d, map[string]string{
				"etc/app.conf":                       "app",
				"etc/" + whiteout.Prefix + "gone":    "",
				"var/cache/" + whiteout.OpaqueMarker: "",
				"var/cache/c2":                       "c2",
			})
		case 2: // fix
			writeFiles(t, d, map[string]string{"etc/hosts": "fix hosts"})
		}
	})
}

func writeFiles(t testing.TB, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// traceSession is what a person would do to the union, one system call after
// the other, so that the kernel asks for the same things in the same order.
func traceSession(t *testing.T, mnt string) {
	t.Helper()
	p := func(n string) string { return filepath.Join(mnt, n) }
	var st unix.Stat_t
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	mustNot := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: succeeded, want ENOENT", what)
		}
	}
	_, err := os.ReadFile(p("etc/motd"))
	must("read /etc/motd", err)
	mustNot("stat /etc/gone", unix.Lstat(p("etc/gone"), &st))
	mustNot("stat /var/cache/c1", unix.Lstat(p("var/cache/c1"), &st))
	mustNot("stat /nope", unix.Lstat(p("nope"), &st))
	must("stat /etc/hosts", unix.Lstat(p("etc/hosts"), &st))
	f, err := os.OpenFile(p("etc/motd"), os.O_WRONLY|os.O_APPEND, 0)
	must("open /etc/motd for append", err)
	_, err = f.WriteString("more\n")
	must("append to /etc/motd", err)
	must("close /etc/motd", f.Close())
	must("rm /tmp/x", os.Remove(p("tmp/x")))
	must("mkdir /tmp/x", os.Mkdir(p("tmp/x"), 0o755))
	must("mv /a /b", os.Rename(p("a"), p("b")))
	must("create /new", os.WriteFile(p("new"), []byte("new"), 0o644))
	must("rm /new", os.Remove(p("new")))
}

// Masks for what varies from run to run and machine to machine.
var (
	textMask = []struct {
		re   *regexp.Regexp
		with string
	}{
		{regexp.MustCompile(`\d+\.\d ms`), "X ms"},
		{regexp.MustCompile(`reflink|copy_file_range|read-write`), "METHOD"},
	}
	jsonMask = []struct {
		re   *regexp.Regexp
		with string
	}{
		{regexp.MustCompile(`"ms":[0-9.e+-]+`), `"ms":0`},
		{regexp.MustCompile(`"method":"(reflink|copy_file_range|read-write)"`), `"method":"METHOD"`},
	}
)

func TestTraceGolden(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name, golden string
		json         bool
	}{
		{"text", "trace.txt", false},
		{"json", "trace.jsonl", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := traceStack(t)
			var buf bytes.Buffer
			tw := unionfs.NewTraceWriter(&buf, tc.json)
			mnt := mountTraced(t, s, tw)
			traceSession(t, mnt)
			if err := tw.Err(); err != nil {
				t.Fatal(err)
			}
			got := buf.String()
			masks := textMask
			if tc.json {
				masks = jsonMask
			}
			for _, m := range masks {
				got = m.re.ReplaceAllString(got, m.with)
			}
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("trace differs from %s (-update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}

// mountTraced mounts s with strata, tracing to tr, its layers named fix, app,
// base (top first), and unmounts it when the test ends.
func mountTraced(t testing.TB, s stack, tr unionfs.Tracer) string {
	t.Helper()
	requireRoot(t)
	cfg := unionfs.Config{Lowers: s.Lowers, Upper: s.Upper, Work: s.Work, Trace: tr, Names: []string{"fix", "app", "base"}}
	if tr == nil {
		cfg.Trace = nil // a nil interface, not a typed nil
	}
	return mountConfig(t, cfg)
}

// BenchmarkLookupTrace measures a LOOKUP that reaches strata (a name the kernel
// has not cached yet) with tracing off and on: off must cost what it cost
// before tracing existed, a nil check. The mount is renewed, timer stopped,
// whenever its names run out, since the kernel caches every answer.
func BenchmarkLookupTrace(b *testing.B) {
	requireRoot(b)
	const names = 2000
	s := newStack(b, 2, func(i int, d string) {
		if i != 0 {
			return
		}
		dir := filepath.Join(d, "d")
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for j := 0; j < names; j++ {
			if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(j)), nil, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, tc := range []struct {
		name string
		tr   unionfs.Tracer
	}{
		{"off", nil},
		{"on", unionfs.NewTraceWriter(io.Discard, false)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var (
				srv    *unionfs.Server
				mnt    string
				mounts int
			)
			base := b.TempDir() // before the Cleanup below, so removed after it
			remount := func() {
				if srv != nil {
					if err := srv.Unmount(); err != nil {
						_ = unix.Unmount(mnt, unix.MNT_DETACH)
					}
					srv.Wait()
				}
				mounts++
				mnt = filepath.Join(base, strconv.Itoa(mounts))
				if err := os.Mkdir(mnt, 0o755); err != nil {
					b.Fatal(err)
				}
				var err error
				if srv, err = unionfs.Mount(mnt, unionfs.Config{Lowers: s.Lowers, Trace: tc.tr}); err != nil {
					b.Fatal(err)
				}
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(mnt, "d"), &st); err != nil { // build d's index outside the timer
					b.Fatal(err)
				}
			}
			b.Cleanup(func() {
				if srv != nil {
					if err := srv.Unmount(); err != nil {
						_ = unix.Unmount(mnt, unix.MNT_DETACH)
					}
					srv.Wait()
				}
			})
			// The CPU time of this process, which serves the mount too, is
			// steadier than wall time on a busy machine: it is reported
			// as cpu-ns/op, remounts left out.
			var st unix.Stat_t
			var cpu, segment time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%names == 0 {
					b.StopTimer()
					if i > 0 {
						cpu += cpuTime(b) - segment
					}
					remount()
					segment = cpuTime(b)
					b.StartTimer()
				}
				if err := unix.Lstat(filepath.Join(mnt, "d", strconv.Itoa(i%names)), &st); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu += cpuTime(b) - segment
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the user and system time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

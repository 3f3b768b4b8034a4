package test

// `strata run --trace` and `strata diff CONTAINER` (issue 10 on a container):
// the trace of a run shows the copy-up and the whiteout of what the container
// did, its layers named "init" and by diff_id; the diff of a container is what
// it changed, without the init layer's files unless it changed them.

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The container's work on the image "app": delete a file of a lower layer,
// change one, add one.
const traceWork = `rm /data/old.txt && echo more >> /data/keep.txt && echo new > /data/new.txt`

func TestRunTrace(t *testing.T) {
	e := newRunEnv(t)
	// Foreground, text, to a file.
	file := filepath.Join(t.TempDir(), "trace.log")
	e.must("run", "--rm", "--trace="+file, "app", "sh", "-c", traceWork)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^lookup /etc -> layer 1 \(init\), merged with layer 3 \([0-9a-f]{12}\)$`),
		regexp.MustCompile(`(?m)^lookup /data/old.txt -> layer 2 \([0-9a-f]{12}\)$`),
		regexp.MustCompile(`(?m)^copy-up /data/keep.txt \(5 B, [0-9.]+ ms, \w+, from layer 2\)$`),
		regexp.MustCompile(`(?m)^whiteout /data/old.txt \(\.wh\. format\)$`),
	} {
		if !want.MatchString(text) {
			t.Errorf("trace lacks %s:\n%s", want, text)
		}
	}

	// Detached, JSON, to a file named relative to the working directory:
	// the background supervisor traces.
	dir := t.TempDir()
	t.Chdir(dir)
	e.must("run", "-d", "--name", "tr", "--trace=trace.jsonl", "--trace-format", "json", "app", "sh", "-c",
		traceWork+" && touch /tmp/done && exec sleep 100")
	e.must("exec", "tr", "sh", "-c", "while [ ! -e /tmp/done ]; do sleep 0.05; done")
	e.must("stop", "-t", "1", "tr")
	f, err := os.Open(filepath.Join(dir, "trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // read-only
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev struct{ Op, Path string }
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		seen[ev.Op+" "+ev.Path] = true
	}
	for _, want := range []string{"copy-up /data/keep.txt", "whiteout /data/old.txt"} {
		if !seen[want] {
			t.Errorf("the -d trace lacks %q: %v", want, seen)
		}
	}

	// Bad input: one line, exit 2, no container.
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"run", "-d", "--trace", "app", "true"}, "give a file"},
		{[]string{"run", "--rm", "--trace-format", "xml", "app", "true"}, `"xml"`},
		{[]string{"run", "--rm", "--trace=/nonexistent/dir/t.log", "app", "true"}, "/nonexistent/dir/t.log"},
		{[]string{"run", "-d", "--trace=/nonexistent/dir/t.log", "app", "true"}, "/nonexistent/dir/t.log"},
	} {
		code, _, errs := e.strata(c.args...)
		if code != 2 || !strings.Contains(errs, c.msg) || strings.Count(errs, "\n") > 1 {
			t.Errorf("strata %s: exit %d, %q; want 2 and one line with %q", strings.Join(c.args, " "), code, errs, c.msg)
		}
	}
	if got := e.names(); len(got) != 1 || got[0] != "tr" {
		t.Errorf("containers: %v; want [tr]", got)
	}
}

func TestRunDiff(t *testing.T) {
	e := newRunEnv(t)
	e.must("run", "--name", "work", "app", "sh", "-c", traceWork)
	want := "C /data\nC /data/keep.txt\nA /data/new.txt\nD /data/old.txt\n"
	if got := e.must("diff", "work"); got != want {
		t.Errorf("diff work:\n%s\nwant:\n%s", got, want)
	}
	var changes []struct{ Kind, Path string }
	if err := json.Unmarshal([]byte(e.must("diff", "--format", "json", "work")), &changes); err != nil || len(changes) != 4 ||
		changes[3].Kind != "D" || changes[3].Path != "/data/old.txt" {
		t.Errorf("diff --format json: %v, %v", changes, err)
	}
	// A container that only reads shows nothing: the init layer's
	// /etc/hostname, /etc/hosts and /etc/resolv.conf are below the upper.
	e.must("run", "--name", "idle", "app", "cat", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf")
	if got := e.must("diff", "idle"); got != "" {
		t.Errorf("diff of a container that changed nothing:\n%s", got)
	}
	// One that changes /etc/hosts shows it, and only it of the three.
	e.must("run", "--name", "hosts", "app", "sh", "-c", "echo '10.0.0.1 db' >> /etc/hosts")
	if got, want := e.must("diff", "hosts"), "C /etc\nC /etc/hosts\n"; got != want {
		t.Errorf("diff hosts:\n%s\nwant:\n%s", got, want)
	}
	// A running container: the diff of the moment.
	e.must("run", "-d", "--name", "live", "app", "sh", "-c", "echo x > /data/live.txt && exec sleep 100")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.must("diff", "live"), "A /data/live.txt") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := e.must("diff", "live"); got != "C /data\nA /data/live.txt\n" {
		t.Errorf("diff of a running container:\n%s", got)
	}
	e.must("stop", "-t", "1", "live")

	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"diff", "nope"}, "no such container"},
		{[]string{"diff", "--upper", "/tmp", "work"}, "not both"},
		{[]string{"diff", "--format", "xml", "work"}, `"xml"`},
	} {
		code, _, errs := e.strata(c.args...)
		if code != 2 || !strings.Contains(errs, c.msg) || strings.Count(errs, "\n") > 1 {
			t.Errorf("strata %s: exit %d, %q; want 2 and one line with %q", strings.Join(c.args, " "), code, errs, c.msg)
		}
	}
}

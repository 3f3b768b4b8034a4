package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/strata-fs/strata/internal/cgroups"
	"github.com/strata-fs/strata/internal/container"
	"github.com/strata-fs/strata/internal/hostimage"
	"github.com/strata-fs/strata/layers"
)

// The container part (`strata demo run`) builds an image from this host's
// binaries, runs a container on it, and shows what the container's changes
// left in its upper and what they left in the image: nothing. Unlike the
// union part, this process starts a subprocess: the container's init stage,
// which is this program's own file (/proc/self/exe, on the host), never one
// of the union it serves; the init stage execs into the union itself.

// demoApp is the image's top layer, as an application's Dockerfile step
// would add it.
var demoApp = []hostimage.File{
	{Path: "app/config.txt", Content: "color=blue\n"},
	{Path: "app/old-cache.txt", Content: "stale data\n"},
	{Path: "app/README", Content: "The demo app.\n"},
}

// demoScript is what the container runs.
const demoScript = `echo "I am PID $$ on host $(hostname), with $(ls -d /proc/[0-9]* | wc -l) processes in sight";
rm /app/old-cache.txt;
echo color=green > /app/config.txt;
echo "written in the container" > /app/new.txt;
ls /app`

// RunContainer is `strata demo run`: the container part of the demo. It
// needs root, /dev/fuse and cgroups with a memory controller; on return
// nothing is mounted, no cgroup is left, and the temp dir (its own image
// store) is gone unless opts.Keep.
func RunContainer(ctx context.Context, w io.Writer, opts Options) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("demo: containers need root (try: sudo strata demo run)")
	}
	d := &demo{w: w}
	cleanup, err := d.tempRoot(opts, "strata-demo-run-", "(an image store) for you to look at; nothing is mounted there")
	if err != nil {
		return err
	}
	defer func() { err = cleanup(err) }()
	start := time.Now()

	d.step("An image built from this host, with no download")
	s, err := layers.OpenStore(d.root)
	if err != nil {
		return err
	}
	if _, err := hostimage.Import(ctx, s, "demo", demoApp); err != nil {
		return err
	}
	st, err := s.Stack("demo")
	if err != nil {
		return err
	}
	app, system := st.Lowers[0], st.Lowers[1]
	d.say("Layer 1 (bottom): %s, /etc/passwd, /tmp", hostimage.Source())
	d.say("Layer 2 (top):    the app's files, as a Dockerfile step would add them:")
	for _, f := range demoApp {
		d.say("  /%-20s %q", f.Path, f.Content)
	}
	d.say("Imported into the store %s as demo:latest; each layer unpacked once, read-only.", d.root)

	d.step("Run a container on it")
	d.say("  $ strata run --name demo --memory 64M --hostname box demo sh -c '...'")
	d.say("It deletes a file of the image, rewrites one, and writes a new one:")
	for _, l := range strings.Split(demoScript, "\n") {
		d.say("    %s", l)
	}
	d.say("Its root is the union of the image's layers, an init layer (/etc/hostname,")
	d.say("/etc/hosts, /etc/resolv.conf) and an empty upper of its own; it runs in new")
	d.say("namespaces, in a cgroup with a 64 MiB memory limit. Its output:")
	r, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(&indent{w: w}, r)
		copied <- err
	}()
	res, err := container.Run(ctx, s, container.Options{
		Name: "demo", Image: "demo", Hostname: "box", Args: []string{"sh", "-c", demoScript},
		Limits: limits64M, Stdout: pw, Stderr: pw,
	})
	_ = pw.Close() // the container's copies are closed; this ends the copy
	if cerr := <-copied; err == nil && cerr != nil {
		err = fmt.Errorf("demo: container output: %w", cerr)
	}
	_ = r.Close() // read to its end
	if err != nil {
		return err
	}
	c, err := container.Open(d.root, "demo")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Remove()) }()
	d.say("It exited with code %d; strata unmounted its union and removed its cgroup.", res.ExitCode)
	d.say("(%.1f s from an empty store to here.)", time.Since(start).Seconds())

	d.step("What the container changed: its upper")
	upper := c.Upper()
	if err := d.list("upper/app/ (in "+c.Dir()+")", filepath.Join(upper, "app")); err != nil {
		return err
	}
	d.say("The deletion is a whiteout; config.txt is a copy made at the first write")
	d.say("(copy-up), then changed; new.txt is new. Nothing else is there: not even")
	d.say("/etc/hostname, which the init layer holds.")

	d.step("What it changed in the image: nothing")
	if err := d.list("the image's top layer, app/", filepath.Join(app, "app")); err != nil {
		return err
	}
	d.say("The layer is as it was imported, and so is the bottom one (%d files);", countFiles(system))
	d.say("the next container of the image starts from it again. 'strata commit demo -t NEW'")
	d.say("would make the upper a third layer, an image of its own.")
	return nil
}

// limits64M is the demo container's memory limit.
var limits64M = cgroups.Limits{Memory: 64 << 20}

// countFiles counts the entries under dir.
func countFiles(dir string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(string, fs.DirEntry, error) error { n++; return nil }) // a count for a person
	return n - 1
}

// indent writes each line with two spaces before it.
type indent struct {
	w   io.Writer
	mid bool
}

func (in *indent) Write(p []byte) (int, error) {
	var b strings.Builder
	for _, c := range string(p) {
		if !in.mid {
			b.WriteString("  | ")
		}
		b.WriteRune(c)
		in.mid = c != '\n'
	}
	if _, err := io.WriteString(in.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}

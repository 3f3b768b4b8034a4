// Package demo is `strata demo`: it builds a stack of three layers in a temp
// dir, mounts it in this process, and shows, step by step, what a union does:
// a merged read, a copy-up, a whiteout and an opaque directory. It then
// unmounts and removes everything. `strata demo run` (container.go) runs a
// container on an image built from this host instead.
//
// This process serves the union, so it touches the mount only with its own file
// operations, served by other goroutines. The union part starts no subprocess:
// a process forked while this one serves could block on the mount with no one
// left to answer it (go-fuse fs/api.go). The container part starts one, the
// container's init stage, from this program's own file on the host.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/mounts"
	"github.com/strata-fs/strata/layers"
	"github.com/strata-fs/strata/unionfs"
	"github.com/strata-fs/strata/whiteout"
)

// Options tune the demo.
type Options struct {
	// Whiteout is the format the union writes; nil means OCI.
	Whiteout whiteout.Format
	// Dir is where the demo's temp dir goes; "" means os.TempDir().
	Dir string
	// Keep leaves the temp dir (unmounted) for a look afterwards.
	Keep bool
}

// The stack: three layers, as three Dockerfile steps would leave them, bottom
// first. Names ending in "/" are directories.
var stack = []struct {
	name  string
	files map[string]string
}{
	{"base", map[string]string{
		"etc/motd":           "Welcome! (from base)\n",
		"etc/hosts":          "127.0.0.1 localhost\n",
		"bin/hello":          "hello v1 (from base)\n",
		"docs/guide.txt":     "How to use this image.\n",
		"docs/old-notes.txt": "Notes nobody needs.\n",
		"cache/a.tmp":        "a\n",
		"cache/b.tmp":        "b\n",
	}},
	{"app", map[string]string{
		"bin/hello":     "hello v2 (from app)\n",
		"app/main.conf": "port=8080\n",
	}},
	{"config", map[string]string{
		"etc/motd":    "Welcome! (from config)\n",
		"cache/c.tmp": "c\n",
	}},
}

// Run runs the demo, writing its story to w. It needs root and /dev/fuse. On
// return nothing is mounted, and the temp dir is gone unless opts.Keep.
func Run(ctx context.Context, w io.Writer, opts Options) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("demo: mounting needs root (try: sudo strata demo)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("demo: FUSE is not available: %w", err)
	}
	format := opts.Whiteout
	if format == nil {
		format = whiteout.OCI
	}
	d := &demo{w: w, format: format}

	cleanup, err := d.tempRoot(opts, "strata-demo-", "for you to look at (nothing is mounted there)")
	if err != nil {
		return err
	}
	defer func() { err = cleanup(err) }()

	for _, step := range []func(context.Context) error{
		d.build, d.mount, d.mergedRead, d.copyUp, d.delete, d.opaque,
	} {
		if ctx.Err() != nil || d.werr != nil {
			break
		}
		if err = step(ctx); err != nil {
			break
		}
	}
	if d.srv != nil {
		err = errors.Join(err, d.unmount())
	}
	if err == nil {
		err = ctx.Err()
	}
	if err == nil && d.werr == nil {
		err = d.summary()
	}
	return errors.Join(err, d.werr)
}

type demo struct {
	w      io.Writer
	format whiteout.Format
	root   string // the temp dir
	srv    *unionfs.Server
	mnt    string
	steps  int
	werr   error // the first error writing to w
}

func (d *demo) path(rel ...string) string { return filepath.Join(append([]string{d.root}, rel...)...) }

func (d *demo) step(title string) {
	d.steps++
	d.print("\n== %d. %s ==\n", d.steps, title)
}

func (d *demo) say(format string, args ...any) { d.print(format+"\n", args...) }

// tempRoot makes the demo's temp dir, d.root. cleanup, deferred with the
// demo's error, removes it, or, with opts.Keep, says where it stays (kept
// tells what it holds).
func (d *demo) tempRoot(opts Options, prefix, kept string) (cleanup func(error) error, err error) {
	root, err := os.MkdirTemp(opts.Dir, prefix)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	d.root = root
	return func(err error) error {
		if opts.Keep {
			d.say("\nKept %s %s.", root, kept)
			return err
		}
		err = errors.Join(err, os.RemoveAll(root))
		if err == nil {
			d.say("\nRemoved %s. That's all!", root)
		}
		return err
	}, nil
}

// print writes to the demo's output and keeps the first error, which Run
// returns: `strata demo | head` should stop the demo, not run it blind.
func (d *demo) print(format string, args ...any) {
	if _, err := fmt.Fprintf(d.w, format, args...); err != nil && d.werr == nil {
		d.werr = fmt.Errorf("demo: write output: %w", err)
	}
}

// show prints a file's content, or what stands in its way.
func (d *demo) show(label, p string) {
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		d.say("  %-34s (no such file)", label)
	case err != nil:
		d.say("  %-34s (%v)", label, err)
	default:
		d.say("  %-34s %q", label, string(b))
	}
}

func (d *demo) build(context.Context) error {
	d.step("Three layers, an upper and a work directory")
	d.say("In %s:", d.root)
	for i, l := range stack {
		var names []string
		for name, content := range l.files {
			p := d.path(l.name, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return fmt.Errorf("demo: build %s: %w", l.name, err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				return fmt.Errorf("demo: build %s: %w", l.name, err)
			}
			names = append(names, name)
		}
		sort.Strings(names)
		where := ""
		switch i {
		case 0:
			where = " (bottom)"
		case len(stack) - 1:
			where = " (top)"
		}
		d.say("  %-16s %s", l.name+"/"+where, strings.Join(names, ", "))
	}
	for _, dir := range []string{"upper", "work", "merged"} {
		if err := os.Mkdir(d.path(dir), 0o755); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	d.say("  %-16s empty: every change made through the union lands here", "upper/")
	d.say("  %-16s empty: strata stages each change here, then renames it into upper/", "work/")
	d.say("  %-16s empty: the mount point", "merged/")
	d.say("The layers are read-only to the union: nothing below will change them.")
	return nil
}

func (d *demo) mount(context.Context) error {
	d.step("Mount the union")
	s := layers.Stack{Upper: d.path("upper"), Work: d.path("work")}
	var flags []string
	for _, l := range stack {
		s.Lowers = append([]string{d.path(l.name)}, s.Lowers...) // top first
		flags = append(flags, "--layer "+l.name)
	}
	r, err := s.Resolve()
	if err != nil {
		return err
	}
	mnt, err := layers.CheckMountpoint(d.path("merged"), r)
	if err != nil {
		return err
	}
	d.say("This is what the command line would be, top layer last:")
	d.say("  $ strata mount %s --upper upper --work work --whiteout %s merged", strings.Join(flags, " "), d.format)
	d.say("or in the kernel overlayfs spelling, top layer first:")
	d.say("  $ strata mount -o lowerdir=config:app:base,upperdir=upper,workdir=work merged")
	srv, err := unionfs.Mount(mnt, unionfs.Config{
		Lowers:   r.Lowers,
		Upper:    r.Upper,
		Work:     r.Work,
		Whiteout: d.format,
		FsName:   "strata-demo",
	})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	d.srv, d.mnt = srv, mnt
	d.say("Mounted on %s (this process serves it).", mnt)
	return nil
}

// origin tells which directory of the stack holds rel, top first.
func (d *demo) origin(rel string) string {
	for _, dir := range []string{"upper", "config", "app", "base"} {
		if _, err := os.Lstat(d.path(dir, rel)); err == nil {
			return dir
		}
	}
	return "?"
}

func (d *demo) mergedRead(context.Context) error {
	d.step("A merged read")
	d.say("merged/ shows every layer at once; where two layers hold the same path, the")
	d.say("higher one wins. Each file of merged/, and the layer it comes from:")
	err := filepath.WalkDir(d.mnt, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, err := filepath.Rel(d.mnt, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		d.say("  %-20s from %-7s %q", rel, d.origin(rel), string(b))
		return nil
	})
	if err != nil {
		return fmt.Errorf("demo: read merged: %w", err)
	}
	d.say("bin/hello is app's v2, hiding base's v1; etc/motd is config's.")
	return nil
}

func (d *demo) copyUp(context.Context) error {
	d.step("A copy-up: writing to a file of a lower layer")
	d.say("Append a line to merged/etc/hosts, which lives in base:")
	f, err := os.OpenFile(filepath.Join(d.mnt, "etc/hosts"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("demo: open for writing: %w", err)
	}
	_, err = f.WriteString("10.0.0.2 db\n")
	if err = errors.Join(err, f.Close()); err != nil {
		return fmt.Errorf("demo: append: %w", err)
	}
	d.show("merged/etc/hosts", filepath.Join(d.mnt, "etc/hosts"))
	d.show("upper/etc/hosts (the copy)", d.path("upper/etc/hosts"))
	d.show("base/etc/hosts (unchanged)", d.path("base/etc/hosts"))
	d.say("The first write copied the whole file up into upper/ (with its directory")
	d.say("etc/), then changed the copy. base/ was not touched; from now on the union")
	d.say("reads etc/hosts from upper/.")
	return nil
}

func (d *demo) delete(context.Context) error {
	d.step("A delete: a whiteout")
	d.say("Remove merged/docs/old-notes.txt, which lives in base:")
	if err := os.Remove(filepath.Join(d.mnt, "docs/old-notes.txt")); err != nil {
		return fmt.Errorf("demo: remove: %w", err)
	}
	if err := d.list("merged/docs/", filepath.Join(d.mnt, "docs")); err != nil {
		return err
	}
	if err := d.list("base/docs/ (unchanged)", d.path("base/docs")); err != nil {
		return err
	}
	if err := d.list("upper/docs/", d.path("upper/docs")); err != nil {
		return err
	}
	d.say("base/ can't change, so upper/ records the deletion with a whiteout that")
	d.say("hides the name in every layer below. %s", formatNote(d.format, "whiteout"))
	return nil
}

func (d *demo) opaque(context.Context) error {
	d.step("An opaque directory")
	d.say("Remove merged/cache/ (its files come from base and config), then make a new,")
	d.say("empty cache/ and put one file in it:")
	if err := os.RemoveAll(filepath.Join(d.mnt, "cache")); err != nil {
		return fmt.Errorf("demo: remove cache: %w", err)
	}
	if err := os.Mkdir(filepath.Join(d.mnt, "cache"), 0o755); err != nil {
		return fmt.Errorf("demo: mkdir cache: %w", err)
	}
	if err := os.WriteFile(filepath.Join(d.mnt, "cache/new.tmp"), []byte("new\n"), 0o644); err != nil {
		return fmt.Errorf("demo: write cache/new.tmp: %w", err)
	}
	for _, l := range []struct{ label, dir string }{
		{"merged/cache/", filepath.Join(d.mnt, "cache")},
		{"base/cache/ (unchanged)", d.path("base/cache")},
		{"config/cache/ (unchanged)", d.path("config/cache")},
		{"upper/cache/", d.path("upper/cache")},
	} {
		if err := d.list(l.label, l.dir); err != nil {
			return err
		}
	}
	d.say("The new cache/ in upper/ is opaque: it hides the whole cache/ of every layer")
	d.say("below, instead of one whiteout per old file. %s", formatNote(d.format, "opaque"))
	return nil
}

func formatNote(f whiteout.Format, what string) string {
	switch {
	case f == whiteout.OCI && what == "whiteout":
		return "In the OCI format (--whiteout=oci)\nit is an empty file named .wh.<name>, as in a container image layer."
	case f == whiteout.OCI:
		return "In the OCI format the mark is an\nempty file .wh..wh..opq inside the directory."
	case what == "whiteout":
		return "In the overlay format (--whiteout=overlay)\nit is a character device 0/0 under the name itself, as kernel overlayfs writes."
	default:
		return "In the overlay format the mark is\nthe xattr trusted.overlay.opaque=y on the directory."
	}
}

// list prints the entries of dir, one a line, with what each means to a union.
func (d *demo) list(label, dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("demo: list %s: %w", label, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	d.say("  %s", label+describeDir(dir))
	if len(names) == 0 {
		d.say("      (empty)")
	}
	for _, n := range names {
		d.say("      %s", describe(filepath.Join(dir, n)))
	}
	return nil
}

// describeDir notes an opaque xattr on dir.
func describeDir(dir string) string {
	for _, name := range []string{whiteout.TrustedOpaqueXattr, whiteout.UserOpaqueXattr} {
		buf := make([]byte, 16)
		n, err := unix.Lgetxattr(dir, name, buf)
		if err == nil && whiteout.IsOpaqueXattr(name, buf[:n]) {
			return fmt.Sprintf("  [opaque: xattr %s=%s]", name, buf[:n])
		}
	}
	return ""
}

// describe names the entry at p and says what it means to a union.
func describe(p string) string {
	name := filepath.Base(p)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fmt.Sprintf("%s (%v)", name, err)
	}
	kind, target := whiteout.Classify(name, st.Mode, st.Rdev)
	switch {
	case kind == whiteout.Whiteout && whiteout.IsOverlayWhiteout(st.Mode, st.Rdev):
		return fmt.Sprintf("%-20s character device 0/0: whiteout, hides %q below", name, target)
	case kind == whiteout.Whiteout:
		return fmt.Sprintf("%-20s empty file: whiteout, hides %q below", name, target)
	case kind == whiteout.OpaqueMark:
		return fmt.Sprintf("%-20s empty file: opaque marker, hides the whole directory below", name)
	case kind == whiteout.Meta:
		return fmt.Sprintf("%-20s metadata", name)
	case whiteout.IsDirMode(st.Mode):
		return name + "/" + describeDir(p)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Sprintf("%s (%v)", name, err)
	}
	return fmt.Sprintf("%-20s %q", name, string(b))
}

func (d *demo) unmount() error {
	err := d.srv.Unmount()
	if err != nil {
		// Something of ours is still open in it; never leave it behind.
		err = errors.Join(fmt.Errorf("demo: unmount: %w", err), mounts.Detach(d.mnt))
	}
	d.srv.Wait()
	d.srv = nil
	if err == nil {
		d.step("Unmount")
		d.say("Unmounted %s; merged/ is an empty directory again.", d.mnt)
	}
	return err
}

// summary prints the upper directory, which now holds every change.
func (d *demo) summary() error {
	d.say("upper/ now holds every change made through the union, and nothing else:")
	upper := d.path("upper")
	err := filepath.WalkDir(upper, func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == upper {
			return err
		}
		rel, err := filepath.Rel(upper, p)
		if err != nil {
			return err
		}
		depth := strings.Count(rel, "/")
		d.say("  %s%s", strings.Repeat("    ", depth), describe(p))
		return nil
	})
	if err != nil {
		return fmt.Errorf("demo: list upper: %w", err)
	}
	d.say("upper/ is a layer in its own right: stacked on config, app and base, it gives")
	d.say("back the tree merged/ showed.")
	if d.format == whiteout.OCI {
		d.say("Its whiteouts are in the OCI format, so a tar of it is an image layer as it is.")
	} else {
		d.say("Its whiteouts are in the kernel's format, so it can be an upperdir or a lowerdir")
		d.say("of kernel overlayfs as it is.")
	}
	return nil
}

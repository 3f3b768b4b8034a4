package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultBudget is the Budget of `strata bench`: a measurement is repeated
// until its runs on a system add up to a second, at most Runs times.
const DefaultBudget = time.Second

// Options say what Run measures, and where.
type Options struct {
	// Dir is where the scratch directory is made (os.TempDir if empty). It
	// must exist and have room for the sizes asked.
	Dir string
	// Systems are names from SystemNames; Workloads from Workloads.
	Systems   []string
	Workloads []*Workload
	// Runs is the number of timed calls of each measurement per system, or
	// with Budget, the most.
	Runs int
	// Budget, if not 0, ends the runs of a measurement on a system once
	// they add up to Budget, with the untimed work that comes with each
	// (dropping the caches, cleaning up): a measurement that takes a
	// second is timed once, one of 50ms Runs times. A long run varies
	// less from run to run, relative to its time, and repeating the long
	// ones was most of the time of a run of the bench.
	Budget time.Duration
	Sizes  Sizes
	// Quick is recorded in the report: Sizes are QuickSizes.
	Quick bool
	// StrataBin is the strata executable that mounts the strata system.
	StrataBin string
	// Progress, if not nil, is told what runs now, a line at a time.
	Progress func(line string)
}

// Run builds the fixtures, mounts the systems, times every measurement and
// returns the report. Systems that cannot be used here are in the report as
// skipped, with the reason. It returns an error wrapping ErrInput, before
// anything is written, for a scratch directory without room. Whatever way it
// returns, nothing it mounted is left mounted, and its scratch directory is
// removed, unless an unmount failed: then the error names what is left.
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	if o.Runs < 1 {
		return nil, inputErrorf("runs must be at least 1, not %d", o.Runs)
	}
	if o.Dir == "" {
		o.Dir = os.TempDir()
	}
	rep = &Report{
		Date:   time.Now().UTC().Truncate(time.Second),
		Host:   host(),
		Quick:  o.Quick,
		Runs:   o.Runs,
		Budget: o.Budget.Seconds(),
		Sizes:  o.Sizes,
	}
	r := &runner{o: o, rep: rep, start: time.Now()}
	for _, name := range o.Systems {
		s := systemByName(name)
		if s == nil {
			return nil, inputErrorf("unknown system %q", name)
		}
		v, ferr := s.find(&o)
		res := SystemResult{Name: name, Version: v}
		if ferr != nil {
			res.Skipped = ferr.Error()
		} else {
			r.active = append(r.active, s)
		}
		rep.Systems = append(rep.Systems, res)
	}
	var ws []*Workload
	for _, w := range o.Workloads {
		if why := w.available(); why != "" {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s skipped: %s", w.Name, why))
			continue
		}
		ws = append(ws, w)
	}
	if err := checkSpace(o.Dir, ws, o.Sizes, o.Runs, len(r.active)); err != nil {
		return nil, err
	}
	if r.scratch, err = os.MkdirTemp(o.Dir, "strata-bench-"); err != nil {
		return nil, fmt.Errorf("scratch dir: %w", err)
	}
	defer func() { err = errors.Join(err, r.cleanup()) }()

	r.canDrop = os.Geteuid() == 0
	if !r.canDrop {
		rep.Notes = append(rep.Notes, "not root: cold rows ran with warm caches")
	}
	for _, w := range ws {
		r.total += len(w.measures)
		r.weightLeft += w.weight
	}
	for _, g := range groups(ws) {
		if err := r.group(ctx, g); err != nil {
			return nil, err
		}
	}
	rep.Summarize()
	rep.Elapsed = time.Since(r.start).Seconds()
	return rep, nil
}

// groups splits ws into runs of workloads over the same fixture, which are
// built and mounted once for all of them.
func groups(ws []*Workload) [][]*Workload {
	var gs [][]*Workload
	for i, w := range ws {
		if i > 0 && ws[i-1].fixture == w.fixture {
			gs[len(gs)-1] = append(gs[len(gs)-1], w)
			continue
		}
		gs = append(gs, []*Workload{w})
	}
	return gs
}

// checkSpace refuses a scratch directory on a file system without room for
// the workload that needs the most.
func checkSpace(dir string, ws []*Workload, sz Sizes, runs, systems int) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return inputErrorf("scratch dir: %w", &os.PathError{Op: "statfs", Path: dir, Err: err})
	}
	var need int64
	for _, w := range ws {
		need = max(need, w.diskBytes(sz, runs, systems))
	}
	need += 64 << 20
	if free := int64(st.Bavail) * st.Bsize; free < need {
		return inputErrorf("scratch dir %s has %s free, the sizes asked need %s (try --quick, or --dir elsewhere)",
			dir, formatBytes(free), formatBytes(need))
	}
	return nil
}

// ErrLeftBehind is returned, wrapped, when Run could not take a mount off:
// the mount and the scratch directory are still there.
var ErrLeftBehind = errors.New("left mounted")

// runner is the state of one Run.
type runner struct {
	o       Options
	rep     *Report
	active  []*system // found, and not (yet) failed to mount
	scratch string
	canDrop bool
	// mounted are the mount points mounted now, to take off on the way
	// out.
	mounted []string
	// For the progress line: measurements finished, and of how many; when
	// the run started, and the weight of the workloads not yet finished.
	done, total int
	start       time.Time
	weightDone  float64
	weightLeft  float64
}

// mount is one system set up over one fixture.
type mount struct {
	sys *system
	dir string // the root the workloads work in
}

func (r *runner) progress(format string, args ...any) {
	if r.o.Progress == nil {
		return
	}
	line := fmt.Sprintf(format, args...)
	elapsed := time.Since(r.start)
	line += " · " + formatDuration(elapsed)
	// The estimate of the time left: the time so far, scaled by the weight
	// of the workloads left over that of the workloads done.
	if r.weightDone > 0 {
		left := time.Duration(float64(elapsed) * r.weightLeft / r.weightDone)
		line += ", ~" + formatDuration(left) + " left"
	}
	r.o.Progress(line)
}

// group builds the fixture of ws, mounts every system over it, runs the
// measurements of ws, and takes it all down again.
func (r *runner) group(ctx context.Context, ws []*Workload) (err error) {
	fx := ws[0].fixture
	base := filepath.Join(r.scratch, fx.name)
	if err := os.Mkdir(base, 0o755); err != nil {
		return err
	}
	gdir := base
	if fx.journaled {
		var need int64
		for _, w := range ws {
			need = max(need, w.diskBytes(r.o.Sizes, r.o.Runs, len(r.active)))
		}
		var note string
		gdir, note = journaledDir(ctx, base, 2*need+1<<30, func(mnt string) { r.mounted = append(r.mounted, mnt) })
		if note != "" {
			r.rep.Notes = append(r.rep.Notes, note)
		}
	}
	r.progress("building the %s fixture", fx.name)
	lowers, err := fx.build(ctx, r.o.Sizes, r.o.Runs, gdir)
	if err != nil {
		return err
	}
	for _, w := range ws {
		if w.prepare != nil {
			if err := w.prepare(r.o.Sizes, r.scratch); err != nil {
				return fmt.Errorf("prepare %s: %w", w.Name, err)
			}
		}
	}
	var ms []mount
	defer func() {
		err = errors.Join(err, r.unmountAll())
		if err == nil {
			r.progress("removing the %s fixture", fx.name)
			err = os.RemoveAll(base)
		}
	}()
	for _, s := range r.active {
		r.progress("mounting %s over the %s fixture", s.name, fx.name)
		m, merr := r.mount(ctx, s, fx, lowers, filepath.Join(gdir, s.name))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if merr != nil {
			r.skip(s, merr)
			continue
		}
		ms = append(ms, m)
	}
	for _, w := range ws {
		for _, p := range passes(w.measures) {
			if err := r.measure(ctx, w, p, ms); err != nil {
				return err
			}
			r.done += len(p)
		}
		r.weightDone += w.weight
		r.weightLeft -= w.weight
	}
	return nil
}

// passes splits ms into the measures timed together: a chained measure runs
// in the pass of the one before it.
func passes(ms []measure) [][]measure {
	var ps [][]measure
	for i, m := range ms {
		if i > 0 && m.chained {
			ps[len(ps)-1] = append(ps[len(ps)-1], m)
			continue
		}
		ps = append(ps, []measure{m})
	}
	return ps
}

// mount sets s up in dir over lowers.
func (r *runner) mount(ctx context.Context, s *system, fx *fixture, lowers []string, dir string) (mount, error) {
	st := Stack{Lowers: lowers, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work")}
	for _, d := range []string{dir, st.Upper, st.Work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return mount{}, err
		}
	}
	if !s.union && fx.readOnly {
		return mount{sys: s, dir: st.Upper}, link(ctx, lowers, st.Upper)
	}
	if !s.union {
		return mount{sys: s, dir: st.Upper}, fx.flatten(ctx, r.o.Sizes, r.o.Runs, st.Upper)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return mount{}, err
	}
	// Registered before the mount: an interrupted mount command may have
	// mounted all the same.
	r.mounted = append(r.mounted, mnt)
	if err := s.mount(ctx, &r.o, st, mnt); err != nil {
		return mount{}, err
	}
	return mount{sys: s, dir: mnt}, nil
}

// skip takes s out of the run for the reason err.
func (r *runner) skip(s *system, err error) {
	for i := range r.rep.Systems {
		if r.rep.Systems[i].Name == s.name {
			r.rep.Systems[i].Skipped = err.Error()
		}
	}
	for i, a := range r.active {
		if a == s {
			r.active = append(r.active[:i:i], r.active[i+1:]...)
			break
		}
	}
}

// unmountAll takes off everything mounted, lazily if it must.
func (r *runner) unmountAll() error {
	var errs []error
	for i := len(r.mounted) - 1; i >= 0; i-- {
		mnt := r.mounted[i]
		detached, err := unmount(mnt)
		switch {
		case err != nil:
			errs = append(errs, err)
			continue // stays listed: cleanup must not remove what is under it
		case detached:
			r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("%s was busy; detached lazily", mnt))
		}
		r.mounted = append(r.mounted[:i], r.mounted[i+1:]...)
	}
	return errors.Join(errs...)
}

// cleanup unmounts what is left and removes the scratch directory, unless
// something is still mounted in it.
func (r *runner) cleanup() error {
	if err := r.unmountAll(); err != nil {
		return fmt.Errorf("%w: %w; scratch dir %s left in place", ErrLeftBehind, err, r.scratch)
	}
	r.progress("removing %s", r.scratch)
	return os.RemoveAll(r.scratch)
}

// measure times the measures of pass p on every mount, Runs times each (or
// fewer, with a Budget), visiting the mounts in turn in an order that rotates
// from run to run. Within a run, a mount gets the measures of p one after the
// other: a chained warm measure finds the caches its cold one filled.
func (r *runner) measure(ctx context.Context, w *Workload, p []measure, ms []mount) error {
	rows := make([][]Row, len(p))
	for j, m := range p {
		rows[j] = make([]Row, len(ms))
		for i, mt := range ms {
			rows[j][i] = Row{Measure: m.name, Workload: w.Name, System: mt.sys.name, Unit: "s"}
			if m.rate != "" {
				rows[j][i].Unit = m.rate
			}
		}
	}
	env := func(i, run int) Env {
		return Env{Dir: ms[i].dir, Scratch: r.scratch, Run: run, Sizes: r.o.Sizes}
	}
	if m := p[0]; m.warm {
		warmup := m.warmup
		if warmup == nil {
			warmup = m.op
		}
		for i := range ms {
			r.progress("[%d/%d] %s · %s · warming up", r.done+1, r.total, m.name, ms[i].sys.name)
			if _, err := warmup(ctx, env(i, r.o.Runs)); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				rows[0][i].Error = err.Error()
			}
			if m.after != nil {
				_ = m.after(ctx, env(i, r.o.Runs)) // the warm-up's leftovers; the timed runs report errors
			}
		}
	}
	// The time of the runs so far, per mount, with what comes with each:
	// dropping the caches, cleaning up.
	spent := make([]time.Duration, len(ms))
	for run := range r.o.Runs {
		for k := range ms {
			i := (k + run) % len(ms)
			if r.o.Budget > 0 && spent[i] >= r.o.Budget {
				continue
			}
			for j, m := range p {
				if rows[j][i].Error != "" {
					break // a chained measure does not run without the one before it
				}
				r.progress("[%d/%d] %s · %s · run %d/%d", r.done+j+1, r.total, m.name, ms[i].sys.name, run+1, r.o.Runs)
				t0 := time.Now()
				d, work, err := r.time(ctx, m, env(i, run))
				spent[i] += time.Since(t0)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if err != nil {
					for ; j < len(p); j++ {
						rows[j][i].Error = err.Error()
					}
					break
				}
				rows[j][i].Seconds = append(rows[j][i].Seconds, d.Seconds())
				rows[j][i].Ops = work.Ops
			}
		}
	}
	for j := range p {
		r.rep.Rows = append(r.rep.Rows, rows[j]...)
	}
	return nil
}

// time makes one timed call of m, dropping the caches first for a cold
// measure, and cleans up after it, untimed.
func (r *runner) time(ctx context.Context, m measure, e Env) (time.Duration, Work, error) {
	if m.cold && r.canDrop {
		if err := dropCaches(); err != nil {
			r.canDrop = false
			r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("cold rows ran with warm caches: %v", err))
		}
	}
	t0 := time.Now()
	work, err := m.op(ctx, e)
	d := time.Since(t0)
	if err == nil && m.after != nil {
		err = m.after(ctx, e)
	}
	return d, work, err
}

// dropCaches writes back dirty data, then drops the page cache, dentries and
// inodes (proc(5), /proc/sys/vm/drop_caches): the next access reads the disk,
// and a FUSE daemon is asked again.
func dropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}

// host describes this machine.
func host() Host {
	h := Host{Kernel: "Linux " + kernelRelease(), CPUs: runtime.NumCPU()}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		h.Memory = uint64(si.Totalram) * uint64(si.Unit)
	}
	return h
}

package unionfs

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/internal/beneath"
	"github.com/strata-fs/strata/whiteout"
)

// Tracing: the union reports each decision it makes (which layer answered a
// lookup, what hid a name, a copy-up, a whiteout, an opaque directory, a rename)
// to Config.Trace, one Event per decision, not one per FUSE request. The hook
// is a nil check where the decision is made; everything else (paths, the why
// of a miss, the clock) is computed only when a Tracer is set, so a union
// without one pays nothing measurable (BenchmarkLookupTrace).

// Tracer receives the union's decisions. Trace is called from any goroutine
// serving a request, after the decision is carried out; it must not block for
// long, since the request waits for it.
type Tracer interface {
	Trace(Event)
}

// Op is the kind of decision an Event records.
type Op string

// The decisions.
const (
	// OpLookup: a name was looked up in its directory's merged index. Result
	// says whether it was found, and what hid it if not.
	OpLookup Op = "lookup"
	// OpCopyUp: an entry was copied from a lower layer into the upper.
	OpCopyUp Op = "copy-up"
	// OpWhiteout: a removed name got a whiteout, since a lower layer holds it.
	OpWhiteout Op = "whiteout"
	// OpRemove: a removed name lived in the upper alone: no whiteout needed.
	OpRemove Op = "remove"
	// OpOpaque: a new directory was made opaque, as it replaces a whiteout.
	OpOpaque Op = "opaque"
	// OpRename: a rename, and what it took (copy-up, whiteout, opaque).
	OpRename Op = "rename"
)

// Lookup results.
const (
	Found    = "found"    // Layer holds the name
	WhiteOut = "whiteout" // a whiteout in Layer hides the name
	Opaqued  = "opaque"   // the directory is opaque in Layer, and a layer below holds the name
	Missing  = "missing"  // no layer holds the name
)

// LayerRef names one layer of the union: its index (0 the upper, 1.. the
// lowers, top first) and its name (Config.Names).
type LayerRef struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
}

func (l LayerRef) String() string { return fmt.Sprintf("layer %d (%s)", l.Index, l.Name) }

// Event is one decision of the union. Paths are absolute in the merged tree.
// Fields that mean nothing for an Op are zero.
type Event struct {
	Op   Op
	Path string
	// To is the new path of a rename.
	To string
	// Result is a lookup's answer: Found, WhiteOut, Opaqued or Missing.
	Result string
	// Layer is the layer that answered a lookup, hid its name, or that a
	// copy-up copied from.
	Layer *LayerRef
	// Merged are, for a directory found by a lookup, the layers below Layer
	// whose directories of that name merge into it.
	Merged []LayerRef
	// Opaque is set when a looked-up directory is opaque in Layer.
	Opaque bool
	// Type is the entry's file type: "file", "dir", "symlink", "fifo",
	// "socket", "char", "block".
	Type string
	// Bytes, Duration and Method describe a copy-up's data: how much was
	// asked for, how long the whole copy-up took, and how the data moved
	// (cow.Method).
	Bytes    int64
	Duration time.Duration
	Method   string
	// LinkTo is the path an entry was hard-linked to instead of copied (the
	// second name of a linked lower file in a copied tree).
	LinkTo string
	// Format is how a whiteout or opaque mark was written: ".wh." or
	// ".wh..wh..opq" files, or the overlay 0/0 device or opaque xattr.
	Format string
	// Notes say what a rename took: "copied up", "whiteout at /a", ....
	Notes []string
}

// String is the event as one line of text, the form `strata mount --trace`
// writes.
func (e Event) String() string {
	var b strings.Builder
	b.WriteString(string(e.Op))
	b.WriteByte(' ')
	b.WriteString(e.Path)
	switch e.Op {
	case OpLookup:
		b.WriteString(" -> ")
		switch e.Result {
		case Found:
			b.WriteString(e.Layer.String())
			if e.Opaque {
				b.WriteString(", opaque")
			}
			for i, m := range e.Merged {
				if i == 0 {
					b.WriteString(", merged with ")
				} else {
					b.WriteString(", ")
				}
				b.WriteString(m.String())
			}
		case WhiteOut:
			fmt.Fprintf(&b, "hidden by whiteout in %s", e.Layer)
		case Opaqued:
			fmt.Fprintf(&b, "hidden by opaque directory in %s", e.Layer)
		default:
			b.WriteString("not found")
		}
	case OpCopyUp:
		var parts []string
		switch {
		case e.LinkTo != "":
			parts = append(parts, "hard link to "+e.LinkTo)
		case e.Type == "file":
			parts = append(parts, FormatBytes(e.Bytes), formatDuration(e.Duration), e.Method)
		default:
			parts = append(parts, e.Type, formatDuration(e.Duration))
		}
		if e.Layer != nil {
			parts = append(parts, fmt.Sprintf("from layer %d", e.Layer.Index))
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	case OpWhiteout, OpOpaque:
		fmt.Fprintf(&b, " (%s)", e.Format)
	case OpRemove:
		b.WriteString(" (upper only: no whiteout needed)")
	case OpRename:
		fmt.Fprintf(&b, " -> %s (%s", e.To, e.Type)
		if len(e.Notes) > 0 {
			b.WriteString(", ")
			b.WriteString(strings.Join(e.Notes, ", "))
		}
		b.WriteByte(')')
	}
	return b.String()
}

// FormatBytes writes a size as people read it: "512 B", "4.1 KiB", "1.0 GiB".
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func formatDuration(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// jsonEvent is an Event as a JSON line: a duration in milliseconds, empty
// fields left out.
type jsonEvent struct {
	Op     Op         `json:"op"`
	Path   string     `json:"path"`
	To     string     `json:"to,omitempty"`
	Result string     `json:"result,omitempty"`
	Layer  *LayerRef  `json:"layer,omitempty"`
	Merged []LayerRef `json:"merged,omitempty"`
	Opaque bool       `json:"opaque,omitempty"`
	Type   string     `json:"type,omitempty"`
	Bytes  *int64     `json:"bytes,omitempty"`
	Ms     *float64   `json:"ms,omitempty"`
	Method string     `json:"method,omitempty"`
	LinkTo string     `json:"link_to,omitempty"`
	Format string     `json:"format,omitempty"`
	Notes  []string   `json:"notes,omitempty"`
}

// MarshalJSON writes the event as `strata mount --trace-format json` does.
func (e Event) MarshalJSON() ([]byte, error) {
	j := jsonEvent{Op: e.Op, Path: e.Path, To: e.To, Result: e.Result, Layer: e.Layer, Merged: e.Merged,
		Opaque: e.Opaque, Type: e.Type, Method: e.Method, LinkTo: e.LinkTo, Format: e.Format, Notes: e.Notes}
	if e.Op == OpCopyUp && e.LinkTo == "" {
		ms := float64(e.Duration) / float64(time.Millisecond)
		j.Ms = &ms
		if e.Type == "file" {
			j.Bytes = &e.Bytes
		}
	}
	return json.Marshal(j)
}

// TraceWriter is a Tracer that writes each event as a line to a writer: text
// (Event.String) or JSON (Event.MarshalJSON). Each line is one Write, so that
// lines of concurrent requests never mix.
type TraceWriter struct {
	mu   sync.Mutex
	w    io.Writer
	json bool
	err  error
}

// NewTraceWriter returns a Tracer writing to w, JSON lines if asJSON is set.
func NewTraceWriter(w io.Writer, asJSON bool) *TraceWriter {
	return &TraceWriter{w: w, json: asJSON}
}

// Trace writes the event. After a failed write it writes nothing more: a
// trace is a diagnostic, and the union goes on serving (see Err).
func (t *TraceWriter) Trace(e Event) {
	var line []byte
	if t.json {
		var err error
		if line, err = json.Marshal(e); err != nil {
			line = []byte(fmt.Sprintf(`{"op":"error","path":%q}`, err.Error()))
		}
	} else {
		line = []byte(e.String())
	}
	line = append(line, '\n')
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil {
		_, t.err = t.w.Write(line)
	}
}

// Err returns the first write error, if any.
func (t *TraceWriter) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// The union's side: helpers called where a decision is made, each only after
// checking u.tracer != nil.

func (u *union) layerRef(l int) *LayerRef {
	return &LayerRef{Index: l, Name: u.names[l]}
}

func tracePath(rel string) string { return "/" + rel }

// typeName names a file type (S_IFMT bits) for a trace.
func typeName(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return "file"
	case syscall.S_IFDIR:
		return "dir"
	case syscall.S_IFLNK:
		return "symlink"
	case syscall.S_IFIFO:
		return "fifo"
	case syscall.S_IFSOCK:
		return "socket"
	case syscall.S_IFCHR:
		return "char"
	case syscall.S_IFBLK:
		return "block"
	}
	return "unknown"
}

// traceFound reports that name in the directory dirRel was found as e. For a
// directory, it tells which layers below merge into it, reading their opaque
// marks (the index of the directory itself would, later).
func (u *union) traceFound(dirRel, name string, e *entry) {
	rel := beneath.Join(dirRel, name)
	ev := Event{Op: OpLookup, Path: tracePath(rel), Result: Found, Layer: u.layerRef(e.layer)}
	for i, l := range e.layers {
		if i > 0 {
			ev.Merged = append(ev.Merged, *u.layerRef(l))
		}
		if u.opaqueIn(l, rel) {
			ev.Opaque = i == 0
			break
		}
	}
	u.tracer.Trace(ev)
}

// traceMissing reports that name is not in the directory node n, and why:
// a whiteout in one of its layers, an opaque layer above one that holds the
// name, or no layer at all.
func (u *union) traceMissing(n *node, idx *dirIndex, name string) {
	dirRel := n.rel()
	n.mu.Lock()
	upperWhiteout := idx.whiteouts[name]
	read := append([]int(nil), idx.layers...)
	all := append([]int(nil), n.dirLayers...)
	n.mu.Unlock()
	ev := Event{Op: OpLookup, Path: tracePath(beneath.Join(dirRel, name)), Result: Missing}
	switch {
	case upperWhiteout:
		ev.Result, ev.Layer = WhiteOut, u.layerRef(upperLayer)
	default:
		for _, l := range read {
			if u.whiteoutIn(l, dirRel, name) {
				ev.Result, ev.Layer = WhiteOut, u.layerRef(l)
				break
			}
		}
		if ev.Result != Missing || len(read) == 0 {
			break
		}
		// Layers past the last one read were cut off by its opaque mark.
		last := read[len(read)-1]
		for _, l := range all {
			if l > last && u.existsIn(l, beneath.Join(dirRel, name)) {
				ev.Result, ev.Layer = Opaqued, u.layerRef(last)
				break
			}
		}
	}
	u.tracer.Trace(ev)
}

// whiteoutIn reports whether layer l holds a whiteout for name in dirRel, in
// either format.
func (u *union) whiteoutIn(l int, dirRel, name string) bool {
	fd, err := beneath.OpenDir(u.layers[l].root, dirRel)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstatat(fd, whiteout.Prefix+name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		return true
	}
	return unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && whiteout.IsOverlayWhiteout(st.Mode, st.Rdev)
}

func (u *union) existsIn(l int, rel string) bool {
	var st unix.Statx_t
	return u.statx(l, rel, &st) == nil
}

// opaqueIn reports whether the directory rel is opaque in layer l.
func (u *union) opaqueIn(l int, rel string) bool {
	fd, err := beneath.Open(u.layers[l].root, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	return isOpaqueDir(fd) || unix.Fstatat(fd, whiteout.OpaqueMarker, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

// traceCopyUp reports a copy-up of rel from layer from, which began at start.
func (u *union) traceCopyUp(rel string, from int, res *cow.Result, start time.Time) {
	u.tracer.Trace(Event{Op: OpCopyUp, Path: tracePath(rel), Layer: u.layerRef(from), Type: typeName(res.Mode),
		Bytes: res.Bytes, Duration: time.Since(start), Method: res.Method.String()})
}

// whiteoutFormat describes the whiteout the upper writes for name.
func (u *union) whiteoutFormat(name string) string {
	if obj := whiteout.WhiteoutFor(u.upper.Format, name); obj.Name != name {
		return ".wh. format"
	}
	return "overlay format: 0/0 char device"
}

// opaqueFormat describes the upper's opaque mark.
func (u *union) opaqueFormat() string {
	o := whiteout.OpaqueFor(u.upper.Format, u.upper.Privileged)
	if o.Entry != nil {
		return o.Entry.Name + " file"
	}
	return o.XattrName + " xattr"
}

// traceRename reports a rename of srcRel (entry se, as it was before) to
// dstRel, with what it took.
func (u *union) traceRename(srcRel, dstRel string, se *entry, treeMoved, exchange, srcBelow, dstBelow bool) {
	ev := Event{Op: OpRename, Path: tracePath(srcRel), To: tracePath(dstRel), Type: typeName(se.mode)}
	switch {
	case treeMoved:
		ev.Notes = append(ev.Notes, "from lower: tree copied up")
	case se.layer != upperLayer:
		ev.Notes = append(ev.Notes, "from lower: copied up")
	}
	if exchange {
		ev.Notes = append(ev.Notes, "exchanged")
	} else if srcBelow {
		_, name := beneath.Split(srcRel)
		ev.Notes = append(ev.Notes, fmt.Sprintf("whiteout at %s (%s)", tracePath(srcRel), u.whiteoutFormat(name)))
	}
	if se.mode == syscall.S_IFDIR && dstBelow {
		ev.Notes = append(ev.Notes, fmt.Sprintf("opaque at %s (%s)", tracePath(dstRel), u.opaqueFormat()))
	}
	u.tracer.Trace(ev)
}

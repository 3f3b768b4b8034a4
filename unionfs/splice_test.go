package unionfs

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSplicedRead: a big read leaves its whole answer, header and data, in a
// pipe for the serving loop; one that comes back short (the end of the file)
// is answered from the buffer, with every byte there is.
func TestSplicedRead(t *testing.T) {
	sp := newSplicer(maxIO)
	if sp == nil {
		t.Skip("no pipe big enough to splice")
	}
	dir := t.TempDir()
	data := make([]byte, 3*spliceMin+123)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	u := testUnion(t, true)
	for range 2 { // upper and one lower: the same directory will do
		l, err := openLayer(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Close(l.root) })
		u.layers = append(u.layers, l)
	}
	n := &node{u: u, layer: 1}
	f := n.addLazy(1, "f", unix.O_RDONLY|unix.O_NOFOLLOW)

	// Whole: the answer waits in the pipe.
	r := &fileRead{f: f, off: 100, size: 2 * spliceMin, sp: sp, unique: 42}
	buf := make([]byte, r.size)
	got, st := r.Readv([][]byte{buf})
	if !st.Ok() || got != r.size {
		t.Fatalf("Readv = %d, %v; want %d", got, st, r.size)
	}
	p, ok := sp.take(42)
	if !ok {
		t.Fatal("no answer waiting for request 42")
	}
	answer := make([]byte, 16+r.size)
	if err := drain(p.r, answer); err != nil {
		t.Fatal(err)
	}
	if l, u := binary.NativeEndian.Uint32(answer[0:]), binary.NativeEndian.Uint64(answer[8:]); l != uint32(len(answer)) || u != 42 {
		t.Errorf("header: length %d, request %d; want %d, 42", l, u, len(answer))
	}
	if !bytes.Equal(answer[16:], data[100:100+r.size]) {
		t.Error("the pipe's data differs from the file's")
	}
	sp.put(p, true)

	// Short: everything from the offset to the end, from the buffer.
	r = &fileRead{f: f, off: 2 * spliceMin, size: 2 * spliceMin, sp: sp, unique: 43}
	buf = make([]byte, r.size)
	got, st = r.Readv([][]byte{buf})
	if want := len(data) - 2*spliceMin; !st.Ok() || got != want {
		t.Fatalf("short Readv = %d, %v; want %d", got, st, want)
	}
	if !bytes.Equal(buf[:got], data[2*spliceMin:]) {
		t.Error("short read: the data differs from the file's")
	}
	if _, ok := sp.take(43); ok {
		t.Error("a short read left an answer in a pipe")
	}

	// Not tagged by rawFS.Read: a plain pread.
	r = &fileRead{f: f, off: 7, size: spliceMin}
	buf = make([]byte, r.size)
	if got, st = r.Readv([][]byte{buf}); !st.Ok() || got != r.size || !bytes.Equal(buf, data[7:7+r.size]) {
		t.Errorf("untagged Readv = %d, %v, same data %v", got, st, bytes.Equal(buf, data[7:7+r.size]))
	}
	_ = f.Release(t.Context())
}

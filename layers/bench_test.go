package layers

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// benchImage writes an OCI layout of about mib MiB (uncompressed) in three
// gzip layers: many small files, some medium, a few large, text-like content
// that compresses about 3:1, in walk order, as a distribution image would.
func benchImage(b *testing.B, mib int) string {
	b.Helper()
	dir := b.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"lorem ", "ipsum ", "dolor ", "sit ", "amet ", "strata ", "layer ", "union ", "\n", "0x", "fe", "42 "}
	content := func(n int) []byte {
		out := make([]byte, 0, n+16)
		for len(out) < n {
			if rng.IntN(4) == 0 {
				out = append(out, byte(rng.IntN(256)))
			} else {
				out = append(out, words[rng.IntN(len(words))]...)
			}
		}
		return out[:n]
	}
	var ls []v1.Layer
	for l := range 3 {
		p := filepath.Join(dir, fmt.Sprintf("layer%d.tar", l))
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		tw := tar.NewWriter(f)
		budget := int64(mib) << 20 / 3
		for i := 0; budget > 0; i++ {
			size := 1 << 10 * (1 + rng.IntN(16)) // small: 1-16 KiB
			switch {
			case i%50 == 0:
				size = 1 << 20 * (1 + rng.IntN(4)) // medium: 1-4 MiB
			case i%997 == 0:
				size = 32 << 20 // large
			}
			// In walk order, as image builders write layers: a
			// directory's files together, 40 to a directory.
			name := fmt.Sprintf("usr/lib/pkg%03d/dir%02d/file%05d", i/400, i/40%10, i)
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(size), ModTime: time.Unix(1700000000, 0)}); err != nil {
				b.Fatal(err)
			}
			if _, err := tw.Write(content(size)); err != nil {
				b.Fatal(err)
			}
			budget -= int64(size)
		}
		if err := tw.Close(); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		layer, err := tarball.LayerFromFile(p, tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithMediaType(types.OCILayer))
		if err != nil {
			b.Fatal(err)
		}
		ls = append(ls, layer)
	}
	return writeLayout(b, testImage(b, ls...), "bench")
}

// BenchmarkImport imports a layered image of $STRATA_BENCH_MIB MiB (500 by
// default) into an empty store, and, when umoci is installed, times `umoci
// unpack` of the same layout in the same run: x-umoci is strata's time over
// umoci's (below 1 is faster).
func BenchmarkImport(b *testing.B) {
	mib := 500
	if v, err := strconv.Atoi(os.Getenv("STRATA_BENCH_MIB")); err == nil && v > 0 {
		mib = v
	}
	src := benchImage(b, mib)
	ctx := context.Background()
	priv := os.Geteuid() == 0
	umoci, _ := exec.LookPath("umoci")
	var strataTime, umociTime time.Duration
	b.ResetTimer()
	for b.Loop() {
		s, err := OpenStore(filepath.Join(b.TempDir(), "store"))
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, err := s.Import(ctx, src+":bench", ImportOptions{Unpack: UnpackOptions{Privileged: priv}}); err != nil {
			b.Fatal(err)
		}
		strataTime += time.Since(start)
		if umoci != "" {
			b.StopTimer()
			args := []string{"unpack", "--image", src + ":bench", filepath.Join(b.TempDir(), "bundle")}
			if !priv {
				args = append([]string{"--rootless"}, args...)
			}
			start := time.Now()
			if out, err := exec.Command(umoci, args...).CombinedOutput(); err != nil {
				b.Fatalf("umoci unpack: %v\n%s", err, out)
			}
			umociTime += time.Since(start)
			b.StartTimer()
		}
	}
	b.SetBytes(int64(mib) << 20)
	if umoci != "" {
		b.ReportMetric(float64(strataTime)/float64(umociTime), "x-umoci")
		b.ReportMetric(umociTime.Seconds()/float64(b.N), "umoci-s/op")
	} else {
		b.Log("umoci is not installed: no comparison")
	}
	b.ReportMetric(strataTime.Seconds()/float64(b.N), "strata-s/op")
}

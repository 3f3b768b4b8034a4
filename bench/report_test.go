package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"image/png"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fixedReport is a report with made-up timings.
func fixedReport() *Report {
	rep := &Report{
		Date:    time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
		Host:    Host{Kernel: "Linux 6.18.44", CPUs: 2, Memory: 24 << 30},
		Runs:    3,
		Budget:  1,
		Elapsed: 312.4,
		Sizes:   DefaultSizes,
		Systems: []SystemResult{
			{Name: Disk},
			{Name: Overlay, Version: "kernel 6.18.44"},
			{Name: Strata, Version: "v0.3.0"},
			{Name: FuseOverlayfs, Version: "1.10"},
			{Name: UnionfsFuse, Skipped: "unionfs is not installed"},
		},
		Notes: []string{"metadata-ops skipped: just a note"},
		Rows: []Row{
			{Measure: "stat-walk cold", Workload: "stat-walk", System: Disk, Unit: "s", Seconds: []float64{0.8, 0.9, 0.7}},
			{Measure: "stat-walk cold", Workload: "stat-walk", System: Overlay, Unit: "s", Seconds: []float64{1.0, 1.2, 1.1}},
			{Measure: "stat-walk cold", Workload: "stat-walk", System: Strata, Unit: "s", Seconds: []float64{2.5, 2.2, 2.3}},
			{Measure: "stat-walk cold", Workload: "stat-walk", System: FuseOverlayfs, Unit: "s", Seconds: []float64{3.3, 3.2, 3.4}},
			{Measure: "randread 4K warm", Workload: "randread", System: Disk, Unit: "IOPS", Ops: 20000, Seconds: []float64{0.1, 0.1, 0.1}},
			{Measure: "randread 4K warm", Workload: "randread", System: Overlay, Unit: "IOPS", Ops: 20000, Seconds: []float64{0.2, 0.25, 0.2}},
			{Measure: "randread 4K warm", Workload: "randread", System: Strata, Unit: "IOPS", Ops: 20000, Seconds: []float64{0.4, 0.4, 0.5}},
			{Measure: "randread 4K warm", Workload: "randread", System: FuseOverlayfs, Unit: "IOPS", Ops: 20000, Error: "read big: input/output error"},
			{Measure: "copy-up 1 byte", Workload: "copy-up", System: Disk, Unit: "s", Seconds: []float64{0.000021, 0.000023, 0.000022}},
			{Measure: "copy-up 1 byte", Workload: "copy-up", System: Overlay, Unit: "s", Seconds: []float64{1.9, 2.1, 2.0}},
			{Measure: "copy-up 1 byte", Workload: "copy-up", System: Strata, Unit: "s", Seconds: []float64{1.5, 1.7, 1.6}},
			{Measure: "copy-up 1 byte", Workload: "copy-up", System: FuseOverlayfs, Unit: "s", Seconds: []float64{1.0}},
		},
	}
	rep.Summarize()
	return rep
}

func TestSummarize(t *testing.T) {
	rep := fixedReport()
	for _, tc := range []struct {
		measure, system               string
		best, median, xOverlay, xDisk float64
	}{
		{"stat-walk cold", Strata, 2.2, 2.3, 2.3 / 1.1, 2.3 / 0.8},
		{"stat-walk cold", Overlay, 1.0, 1.1, 1, 1.1 / 0.8},
		{"randread 4K warm", Strata, 50000, 50000, 0.5, 0.25},
		{"randread 4K warm", FuseOverlayfs, 0, 0, 0, 0},
	} {
		r := rep.row(tc.measure, tc.system)
		got := []float64{r.Best, r.Median, r.XOverlay, r.XDisk}
		want := []float64{tc.best, tc.median, tc.xOverlay, tc.xDisk}
		for i := range got {
			if d := got[i] - want[i]; d > 1e-9 || d < -1e-9 {
				t.Errorf("%s on %s: got best, median, ×overlay, ×disk %v, want %v", tc.measure, tc.system, got, want)
				break
			}
		}
	}
	if x := rep.row("randread 4K warm", Strata).TimeXOverlay(); x != 2 {
		t.Errorf("randread on strata: time ×overlay %g, want 2", x)
	}
}

const wantTable = `strata bench, 2026-11-23 10:00 UTC: Linux 6.18.44, 2 CPUs, 24 GiB RAM; default sizes, up to 3 runs, fewer once they add up to 1s
systems: disk, overlay kernel 6.18.44, strata v0.3.0, fuse-overlayfs 1.10
skipped: unionfs-fuse (unionfs is not installed)
note: metadata-ops skipped: just a note

measure                  system          runs    best  median  ×overlay  ×disk
stat-walk cold           disk               3   700ms   800ms      0.73   1.00
                         overlay            3   1.00s   1.10s      1.00   1.38
                         strata             3   2.20s   2.30s      2.09   2.87
                         fuse-overlayfs     3   3.20s   3.30s      3.00   4.12
randread 4K warm (IOPS)  disk               3    200k    200k      2.00   1.00
                         overlay            3    100k    100k      1.00   0.50
                         strata             3   50.0k   50.0k      0.50   0.25
                         fuse-overlayfs  failed: read big: input/output error
copy-up 1 byte           disk               3  21.0µs  22.0µs     <0.01   1.00
                         overlay            3   1.90s   2.00s      1.00  90909
                         strata             3   1.50s   1.60s      0.80  72727
                         fuse-overlayfs     1   1.00s   1.00s      0.50  45455

×overlay, ×disk: median time divided by kernel overlayfs's and the plain disk's (above 1 is slower);
for IOPS rows, IOPS divided by theirs (above 1 is faster). runs: the timed runs; best: the fastest.
The whole run took 5m12s.
`

func TestWriteTable(t *testing.T) {
	var b strings.Builder
	if err := fixedReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != wantTable {
		t.Errorf("table:\n%s\nwant:\n%s", got, wantTable)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	rep := fixedReport()
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSON(&b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, rep) {
		t.Errorf("round trip:\ngot  %+v\nwant %+v", got, rep)
	}
}

func TestChartSVG(t *testing.T) {
	var b bytes.Buffer
	if err := fixedReport().WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	// Well-formed XML, an <svg> root, a bar per system and measurement.
	dec := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	var root string
	texts := map[string]bool{}
	var inText bool
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not XML: %v\n%s", err, b.String())
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
			}
			inText = tok.Name.Local == "text"
		case xml.CharData:
			if inText {
				texts[string(tok)] = true
			}
		case xml.EndElement:
			inText = false
		}
	}
	if root != "svg" {
		t.Errorf("root element %q, want svg", root)
	}
	for _, want := range []string{"stat-walk cold", "randread 4K warm", "strata", "fuse-overlayfs", "2.09", "2.00", "failed", "1"} {
		if !texts[want] {
			t.Errorf("no text %q in the chart", want)
		}
	}
}

func TestChartPNG(t *testing.T) {
	var b bytes.Buffer
	if err := fixedReport().WritePNG(&b); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if r := img.Bounds(); r.Dx() != chartW || r.Dy() < 200 {
		t.Errorf("size %v", r)
	}
}

func TestChartWithoutOverlay(t *testing.T) {
	rep := fixedReport()
	var rows []Row
	for _, r := range rep.Rows {
		if r.System != Overlay {
			rows = append(rows, r)
		}
	}
	rep.Rows = rows
	rep.Summarize()
	if err := rep.WriteSVG(io.Discard); !errors.Is(err, ErrNoOverlay) {
		t.Errorf("got %v, want ErrNoOverlay", err)
	}
}

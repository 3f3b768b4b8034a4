package cgroups

import (
	"errors"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func TestParseMemory(t *testing.T) {
	good := []struct {
		in   string
		want int64
	}{
		{"1048576", 1 << 20},
		{"64M", 64 << 20},
		{"64m", 64 << 20},
		{"1g", 1 << 30},
		{"512k", 512 << 10},
		{"512kb", 512 << 10},
		{"1.5GiB", 3 << 29},
		{"100b", 100},
		{" 2 m ", 2 << 20},
		{"0", 0},
		{"1t", 1 << 40},
	}
	for _, tt := range good {
		got, err := ParseMemory(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseMemory(%q): got %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"12Q", "", "m", "-1", "1e3", "1.", ".5m", "64mm", "64bb", "64M B", "99999999p", "0x10"} {
		_, err := ParseMemory(in)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), strconv.Quote(in)) {
			t.Errorf("ParseMemory(%q): got %v, want ErrInvalid quoting the input", in, err)
		}
	}
}

func TestParseCPUs(t *testing.T) {
	for _, in := range []string{"0.5", "1", "0.01"} {
		if _, err := ParseCPUs(in); err != nil {
			t.Errorf("ParseCPUs(%q): %v", in, err)
		}
	}
	too := strconv.Itoa(runtime.NumCPU() + 1)
	for _, in := range []string{"", "x", "0", "0.001", "-1", "NaN", "Inf", too} {
		_, err := ParseCPUs(in)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), strconv.Quote(in)) {
			t.Errorf("ParseCPUs(%q): got %v, want ErrInvalid quoting the input", in, err)
		}
	}
}

func TestLimitsCheck(t *testing.T) {
	for _, l := range []Limits{{Memory: -1}, {Memory: 64}, {Memory: MinMemory - 1}, {Pids: -1}, {CPUs: -0.5}, {CPUs: 0.001}} {
		if err := l.check(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: got %v, want ErrInvalid", l, err)
		}
	}
	if err := (Limits{Memory: MinMemory, CPUs: 0.01, Pids: 1}).check(); err != nil {
		t.Error(err)
	}
	if got := quota(0.5); got != 50000 {
		t.Errorf("quota(0.5): got %d, want 50000", got)
	}
}

package cgroups

import (
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
)

// cpuPeriod is the CFS period, in microseconds, that CPUs is a share of:
// 100ms, the kernel's default and Docker's.
const cpuPeriod = 100000

// minQuota is the smallest CFS quota the kernel takes, in microseconds.
const minQuota = 1000

// MinMemory is the smallest memory limit Create takes, Docker's: below it a
// process is killed before it has started.
const MinMemory = 6 << 20

// quota is the CFS quota, in microseconds per cpuPeriod, for cpus CPUs.
func quota(cpus float64) int64 { return int64(math.Round(cpus * cpuPeriod)) }

// check refuses limits no cgroup can hold.
func (l Limits) check() error {
	switch {
	case l.Memory < 0:
		return fmt.Errorf("memory limit %d: %w: negative", l.Memory, ErrInvalid)
	case l.Memory > 0 && l.Memory < MinMemory:
		return fmt.Errorf("memory limit %d bytes: %w: the smallest is %dMiB", l.Memory, ErrInvalid, MinMemory>>20)
	case l.Pids < 0:
		return fmt.Errorf("pids limit %d: %w: negative", l.Pids, ErrInvalid)
	case l.CPUs < 0 || math.IsNaN(l.CPUs) || math.IsInf(l.CPUs, 0):
		return fmt.Errorf("cpus limit %v: %w: want a positive number", l.CPUs, ErrInvalid)
	case l.CPUs > 0 && quota(l.CPUs) < minQuota:
		return fmt.Errorf("cpus limit %v: %w: the smallest is %v", l.CPUs, ErrInvalid, float64(minQuota)/cpuPeriod)
	}
	return nil
}

// memoryUnits are Docker's (go-units RAMInBytes): binary multiples, one
// letter, either case.
var memoryUnits = map[byte]int64{
	'b': 1, 'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30, 't': 1 << 40, 'p': 1 << 50,
}

// ParseMemory reads a memory size as Docker's --memory does: a number, maybe
// with a fraction, then an optional unit b, k, m, g, t or p in either case,
// which may be followed by "b" or "ib" ("64M", "1g", "512kb", "1.5GiB",
// "1048576"). Units are binary: 1k is 1024 bytes. The error wraps ErrInvalid
// and quotes s.
func ParseMemory(s string) (int64, error) {
	const want = "want a number with an optional unit b, k, m, g, t or p"
	t := strings.TrimSpace(s)
	// The number: digits, maybe a fraction; then the unit, after at most
	// one space.
	i := 0
	for i < len(t) && isDigit(t[i]) {
		i++
	}
	if i < len(t) && t[i] == '.' {
		i++
		for i < len(t) && isDigit(t[i]) {
			i++
		}
	}
	num, suffix := t[:i], strings.ToLower(strings.TrimPrefix(t[i:], " "))
	if num == "" || !isDigit(num[0]) || num[len(num)-1] == '.' {
		return 0, fmt.Errorf("memory size %q: %w: %s", s, ErrInvalid, want)
	}
	unit := int64(1)
	if suffix != "" {
		u, ok := memoryUnits[suffix[0]]
		switch rest := suffix[1:]; {
		case !ok:
		case suffix[0] == 'b':
			ok = rest == ""
		default:
			ok = rest == "" || rest == "b" || rest == "ib"
		}
		if !ok {
			return 0, fmt.Errorf("memory size %q: %w: %s", s, ErrInvalid, want)
		}
		unit = u
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("memory size %q: %w: %s", s, ErrInvalid, want)
	}
	v := f * float64(unit)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("memory size %q: %w: too large", s, ErrInvalid)
	}
	return int64(v), nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// ParseCPUs reads a --cpus value as Docker does: a decimal number of CPUs,
// from 0.01 up to the CPUs this process may run on. The error wraps
// ErrInvalid and quotes s.
func ParseCPUs(s string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("cpus %q: %w: want a decimal number such as 0.5", s, ErrInvalid)
	}
	if n := runtime.NumCPU(); f < 0.01 || f > float64(n) {
		return 0, fmt.Errorf("cpus %q: %w: the range is 0.01 to %d, the CPUs available", s, ErrInvalid, n)
	}
	return f, nil
}

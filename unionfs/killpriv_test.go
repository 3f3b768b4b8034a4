package unionfs

import "testing"

func TestKilledMode(t *testing.T) {
	for _, c := range []struct {
		mode    uint32
		inGroup bool
		want    uint32
	}{
		{0o4755, true, 0o755},
		{0o2755, true, 0o755},   // group execute: set-group-ID goes
		{0o2745, true, 0o2745},  // no group execute, caller in the group: stays
		{0o2745, false, 0o745},  // not in the group: goes
		{0o6777, true, 0o777},   // both
		{0o1777, false, 0o1777}, // sticky: not a privilege
		{0o755, false, 0o755},
	} {
		if got := killedMode(c.mode, func() bool { return c.inGroup }); got != c.want {
			t.Errorf("killedMode(%#o, in group %v) = %#o, want %#o", c.mode, c.inGroup, got, c.want)
		}
	}
	if !hasSetIDBits(0o2745) || hasSetIDBits(0o1755) {
		t.Error("hasSetIDBits: 02745 has bits some writer drops, 01755 has none")
	}
}

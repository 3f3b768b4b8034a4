package unionfs

import "testing"

// TestPlusPolicy drives the policy through the walks it must tell apart: a
// find that lists and stats nothing, then an ls -l that stats every entry,
// then a find again.
func TestPlusPolicy(t *testing.T) {
	var p plusPolicy
	// list hands out n entries the way a READDIRPLUS does and, if stat is
	// set, looks up every one that went bare. It returns how many carried
	// attributes.
	list := func(n int, stat bool) (full int) {
		var bare int
		for range n {
			if p.wantAttrs() {
				full++
				continue
			}
			p.handedBare()
			bare++
		}
		if stat {
			for range bare {
				p.lookedUpBare()
			}
		}
		return full
	}

	if full := list(1000, false); full != 0 {
		t.Errorf("find from the start: %d of 1000 entries carried attributes, want 0", full)
	}
	// The first directory of an ls -l goes bare; its stats turn the policy.
	if full := list(100, true); full != 0 {
		t.Errorf("first directory of ls -l: %d of 100 with attributes, want 0", full)
	}
	full := list(100, true)
	if want := 100 - 100/probeEvery; full < want-1 || full > want+1 {
		t.Errorf("ls -l once stating: %d of 100 with attributes, want %d (one probe in %d)", full, want, probeEvery)
	}
	// A find after it: the unstated probes turn the policy back within
	// plusScoreMax probes.
	list(2*plusScoreMax*probeEvery, false)
	if full := list(1000, false); full != 0 {
		t.Errorf("find after ls -l: %d of 1000 with attributes, want 0", full)
	}
	// A walker that stats one entry in ten keeps listings bare.
	for range 100 {
		list(9, false)
		list(1, true)
	}
	if full := list(1000, false); full != 0 {
		t.Errorf("after stating one entry in ten: %d of 1000 with attributes, want 0", full)
	}
}

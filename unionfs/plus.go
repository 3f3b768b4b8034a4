package unionfs

import "sync/atomic"

// When READDIRPLUS pays: the attributes a listing carries.
//
// The kernel asks for a directory's entries with READDIRPLUS, and every entry
// may carry its attributes and a node, so that a stat(2) of it that follows
// needs no LOOKUP. Those attributes cost a statx in a layer, and once the disk
// cache is cold that is a read of the entry's inode from the disk: `ls -lR` or
// du, which stat every entry, gain a round trip per entry; find(1) and a bare
// getdents, which stat none of them, pay the disk read for nothing (a cold
// listing of 3×10k entries took 20× kernel overlayfs, which reads only the
// directory blocks). The kernel's own answer, FUSE_READDIRPLUS_AUTO, keeps the
// attributes for the first batch of a listing, which is the whole of a small
// directory: it spares big listings but not find over small ones.
//
// An entry may go without attributes (node id 0: fuse_direntplus_link in
// fs/fuse/readdir.c skips it and a stat looks it up as usual), so strata
// decides per entry, by what the callers have been doing:
//   - A directory entry always carries them: find and every walker descend into
//     it, and there are few of them.
//   - An entry whose node the tree already holds carries them: its inode was
//     read recently, the statx costs no disk read.
//   - Any other entry carries them while stat demand is high: plusPolicy counts
//     entries handed out bare (-1) and bare entries looked up afterwards (+2),
//     so that when more than a third of the bare entries are stated, listings
//     turn to full attributes; and while they do, one entry in probeEvery still
//     goes bare, as a probe, so that the count can fall back when the callers
//     stop stating (a walker that stats one entry in a directory of many keeps
//     the count low).
//
// The count is the mount's, not a directory's: a walk's habit holds across the
// directories it visits, and the kernel's FORGETs after a cache drop do not
// lose it.
type plusPolicy struct {
	score  atomic.Int32
	probes atomic.Uint32
}

const (
	// plusScoreMax bounds the count both ways: how many bare entries it takes
	// to forget a run of stating, or how many probes that went unstated.
	plusScoreMax = 32
	// probeEvery is how often an entry goes bare while attributes pay.
	probeEvery = 16
)

// wantAttrs reports whether the next entry that is neither a directory nor
// known should carry its attributes.
func (p *plusPolicy) wantAttrs() bool {
	if p.score.Load() <= 0 {
		return false
	}
	return p.probes.Add(1)%probeEvery != 0
}

// handedBare records an entry handed out without attributes.
func (p *plusPolicy) handedBare() { p.add(-1) }

// lookedUpBare records a lookup of an entry that was handed out bare.
func (p *plusPolicy) lookedUpBare() { p.add(2) }

func (p *plusPolicy) add(d int32) {
	for {
		old := p.score.Load()
		s := min(max(old+d, -plusScoreMax), plusScoreMax)
		if s == old || p.score.CompareAndSwap(old, s) {
			return
		}
	}
}

package bench

// Sizes say how much work each workload does. DefaultSizes are those of the
// performance targets (issue 9); QuickSizes finish a whole run in under a
// minute on a small machine.
type Sizes struct {
	// TreeFiles is the number of files in the three-layer tree of stat-walk,
	// find, ls -lR and tar.
	TreeFiles int `json:"tree_files"`
	// Dirs directories of DirEntries entries each, spread over three
	// layers, are listed by readdir.
	Dirs       int `json:"dirs"`
	DirEntries int `json:"dir_entries"`
	// BigFile is the size of the file of seqread, randread, seqwrite and
	// copy-up.
	BigFile int64 `json:"big_file"`
	// RandReads is the number of 4 KiB reads of one randread run.
	RandReads int `json:"rand_reads"`
	// SmallFiles is the number of 4 KiB files small-files creates and
	// deletes.
	SmallFiles int `json:"small_files"`
	// TarFiles is the number of files in the archive untar unpacks.
	TarFiles int `json:"tar_files"`
	// MetaFiles lower files of MetaFileSize bytes each get a chmod, chown,
	// utimes and rename in metadata-ops.
	MetaFiles    int   `json:"meta_files"`
	MetaFileSize int64 `json:"meta_file_size"`
	// BuildPkgs is the number of packages of the module build compiles.
	// The compiler's time grows with it, and the union's share stays the
	// same: 20 are enough to time.
	BuildPkgs int `json:"build_pkgs"`
}

// DefaultSizes are the sizes of `strata bench`.
var DefaultSizes = Sizes{
	TreeFiles:    50_000,
	Dirs:         3,
	DirEntries:   10_000,
	BigFile:      1 << 30,
	RandReads:    10_000,
	SmallFiles:   20_000,
	TarFiles:     20_000,
	MetaFiles:    1_000,
	MetaFileSize: 64 << 10,
	BuildPkgs:    20,
}

// QuickSizes are the sizes of `strata bench --quick`.
var QuickSizes = Sizes{
	TreeFiles:    2_000,
	Dirs:         2,
	DirEntries:   2_000,
	BigFile:      32 << 20,
	RandReads:    1_000,
	SmallFiles:   600,
	TarFiles:     600,
	MetaFiles:    100,
	MetaFileSize: 64 << 10,
	BuildPkgs:    3,
}

// TinySizes are for tests: every workload does a little of everything.
var TinySizes = Sizes{
	TreeFiles:    300,
	Dirs:         2,
	DirEntries:   150,
	BigFile:      3<<20 + 4096*3, // not a whole number of read blocks
	RandReads:    100,
	SmallFiles:   120,
	TarFiles:     120,
	MetaFiles:    10,
	MetaFileSize: 8 << 10,
	BuildPkgs:    2,
}

package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path string
		want       string
		code       int
	}{
		{"tool", "/nonexistent:" + dir, exe, 0},
		{exe, "", exe, 0},
		{"plain", dir, "", ExitNotFound},
		{plain, "", "", ExitCannotRun},
		{"nope", dir, "", ExitNotFound},
		{dir + "/nope", dir, "", ExitNotFound},
	} {
		got, err := lookPath(c.name, c.path, "img")
		var serr *StartError
		switch {
		case c.code == 0 && (err != nil || got != c.want):
			t.Errorf("lookPath(%q, %q) = %q, %v; want %q", c.name, c.path, got, err, c.want)
		case c.code != 0 && (!errors.As(err, &serr) || serr.Code != c.code):
			t.Errorf("lookPath(%q, %q) = %q, %v; want exit code %d", c.name, c.path, got, err, c.code)
		}
	}
	if _, err := lookPath("x", dir, "NAME"); err == nil || err.Error() != `exec: "x": not found in image NAME` {
		t.Errorf("not found: %v", err)
	}
}

func TestReadDBAndFindGroup(t *testing.T) {
	p := filepath.Join(t.TempDir(), "group")
	if err := os.WriteFile(p, []byte("# comment\nroot:x:0:\nstaff:x:50:alice,bob\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rows, err := readDB(p)
	if err != nil || len(rows) != 2 {
		t.Fatalf("readDB: %v, %v", rows, err)
	}
	for _, c := range []struct {
		name string
		gid  uint32
		ok   bool
	}{{"staff", 50, true}, {"50", 50, true}, {"77", 77, true}, {"nogroup", 0, false}} {
		if gid, ok := findGroup(rows, c.name); gid != c.gid || ok != c.ok {
			t.Errorf("findGroup(%q) = %d, %v; want %d, %v", c.name, gid, ok, c.gid, c.ok)
		}
	}
	if rows, err := readDB(filepath.Join(t.TempDir(), "missing")); err != nil || rows != nil {
		t.Errorf("missing file: %v, %v", rows, err)
	}
}

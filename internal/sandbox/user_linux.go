package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// credential is who the command runs as.
type credential struct {
	uid, gid uint32
	groups   []uint32
}

func (c credential) apply() error {
	gs := make([]int, len(c.groups))
	for i, g := range c.groups {
		gs[i] = int(g)
	}
	// syscall's set*id calls change every thread of the process.
	if err := syscall.Setgroups(gs); err != nil {
		return &os.SyscallError{Syscall: "setgroups", Err: err}
	}
	if err := syscall.Setgid(int(c.gid)); err != nil {
		return &os.SyscallError{Syscall: "setgid", Err: err}
	}
	if err := syscall.Setuid(int(c.uid)); err != nil {
		return &os.SyscallError{Syscall: "setuid", Err: err}
	}
	return nil
}

func (c credential) sys() *syscall.Credential {
	return &syscall.Credential{Uid: c.uid, Gid: c.gid, Groups: c.groups}
}

// lookupUser reads USER[:GROUP] (names or numbers; "" is root) against the
// root's /etc/passwd and /etc/group, as Docker does: a number needs no entry,
// a name does. It returns the credential and the home directory.
func lookupUser(spec string) (credential, string, error) {
	if spec == "" {
		spec = "0"
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	passwd, err := readDB("/etc/passwd")
	if err != nil {
		return credential{}, "", err
	}
	c := credential{}
	home := "/"
	found := false
	for _, f := range passwd {
		if len(f) < 6 {
			continue
		}
		if f[0] == userPart || f[2] == userPart {
			uid, err1 := strconv.ParseUint(f[2], 10, 32)
			gid, err2 := strconv.ParseUint(f[3], 10, 32)
			if err1 != nil || err2 != nil {
				continue
			}
			c.uid, c.gid, home, found = uint32(uid), uint32(gid), f[5], true
			break
		}
	}
	if !found {
		uid, err := strconv.ParseUint(userPart, 10, 32)
		if err != nil {
			return credential{}, "", fmt.Errorf("no such user in /etc/passwd")
		}
		c.uid, c.gid = uint32(uid), uint32(uid)
	}
	group, err := readDB("/etc/group")
	if err != nil {
		return credential{}, "", err
	}
	if hasGroup {
		gid, ok := findGroup(group, groupPart)
		if !ok {
			return credential{}, "", fmt.Errorf("no such group %q in /etc/group", groupPart)
		}
		c.gid = gid
	}
	// Supplementary groups: those that list the user by name.
	if found {
		name := ""
		for _, f := range passwd {
			if len(f) >= 3 && (f[0] == userPart || f[2] == userPart) {
				name = f[0]
				break
			}
		}
		for _, f := range group {
			if len(f) < 4 {
				continue
			}
			for _, m := range strings.Split(f[3], ",") {
				if m == name {
					if gid, err := strconv.ParseUint(f[2], 10, 32); err == nil {
						c.groups = append(c.groups, uint32(gid))
					}
				}
			}
		}
	}
	return c, home, nil
}

func findGroup(group [][]string, name string) (uint32, bool) {
	for _, f := range group {
		if len(f) >= 3 && (f[0] == name || f[2] == name) {
			if gid, err := strconv.ParseUint(f[2], 10, 32); err == nil {
				return uint32(gid), true
			}
		}
	}
	gid, err := strconv.ParseUint(name, 10, 32)
	return uint32(gid), err == nil
}

// readDB reads a colon-separated database; a missing file is empty.
func readDB(path string) ([][]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read-only
	var rows [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rows = append(rows, strings.Split(line, ":"))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return rows, nil
}

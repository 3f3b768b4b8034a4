// Package pty opens pseudo-terminals: a master for this process and a slave
// to give a container as its terminal. It is creack/pty's Open in a few
// lines: /dev/ptmx, unlock, find the slave's number.
package pty

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Open opens a new pseudo-terminal pair.
func Open() (master, slave *os.File, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, &os.PathError{Op: "open", Path: "/dev/ptmx", Err: err}
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	defer func() {
		if err != nil {
			_ = master.Close() // failing already
		}
	}()
	// The slave cannot be opened while the master keeps it locked.
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		return nil, nil, &os.SyscallError{Syscall: "ioctl TIOCSPTLCK", Err: err}
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		return nil, nil, &os.SyscallError{Syscall: "ioctl TIOCGPTN", Err: err}
	}
	name := "/dev/pts/" + strconv.Itoa(n)
	sfd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open pty slave: %w", &os.PathError{Op: "open", Path: name, Err: err})
	}
	return master, os.NewFile(uintptr(sfd), name), nil
}

// InheritSize gives the terminal to (a pty's master or slave) the size of
// the terminal from.
func InheritSize(to, from *os.File) error {
	ws, err := unix.IoctlGetWinsize(int(from.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return &os.SyscallError{Syscall: "ioctl TIOCGWINSZ", Err: err}
	}
	if err := unix.IoctlSetWinsize(int(to.Fd()), unix.TIOCSWINSZ, ws); err != nil {
		return &os.SyscallError{Syscall: "ioctl TIOCSWINSZ", Err: err}
	}
	return nil
}

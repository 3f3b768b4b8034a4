package cmd

import (
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/term"

	"github.com/strata-fs/strata/internal/pty"
)

// terminal is the pseudo-terminal of `run -t` and `exec -t`: the container
// gets the slave, this process relays between the master and its own stdin
// and stdout.
type terminal struct {
	master, slave *os.File
	interactive   bool
}

func openTerminal(interactive bool) (*terminal, error) {
	m, s, err := pty.Open()
	if err != nil {
		return nil, err
	}
	t := &terminal{master: m, slave: s, interactive: interactive}
	if isTerminal(os.Stdin) {
		_ = pty.InheritSize(s, os.Stdin) // a size of 0x0 is what is left
	}
	return t, nil
}

// relay starts copying, once the container holds the slave: our stdin to the
// master (with -i), in raw mode when it is a terminal, and the master to our
// stdout, and follows our terminal's size (SIGWINCH). The function it returns
// waits for the output to drain (the container closed the slave) and puts
// our terminal back as it was.
func (t *terminal) relay() (restore func()) {
	_ = t.slave.Close() // the container's copy is the one that counts: its close ends the output
	var state *term.State
	if t.interactive && isTerminal(os.Stdin) {
		state, _ = term.MakeRaw(int(os.Stdin.Fd())) // a terminal that will not go raw still works, cooked
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	go func() {
		for range winch {
			_ = pty.InheritSize(t.master, os.Stdin) // best effort, as every terminal emulator does
		}
	}()
	if t.interactive {
		go func() { _, _ = io.Copy(t.master, os.Stdin) }() // ends with the process
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(os.Stdout, t.master) // ends with EIO once the slave is closed everywhere
	}()
	return func() {
		wg.Wait()
		signal.Stop(winch)
		close(winch)
		if state != nil {
			_ = term.Restore(int(os.Stdin.Fd()), state) // nothing better to do if it fails
		}
	}
}

// Close closes both ends.
func (t *terminal) Close() {
	_ = t.master.Close() // after relay's end; nothing reads it any more
	_ = t.slave.Close()  // closed already after a start
}

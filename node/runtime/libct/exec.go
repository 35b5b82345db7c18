package libct

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/console"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// execute runs a process in a running container in the foreground and
// returns its exit status (128+n for a signal), as `runc exec`: without a
// terminal the process takes this command's stdio; with one (--tty) this
// command receives the container's pty master and copies between it and
// its own stdio, which must be a terminal, keeping that raw and passing its
// size on.
func execute(root string, args []string) (int, error) {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	procFile := fs.String("process", "", "file with the process's OCI JSON")
	pidFile := fs.String("pid-file", "", "file to write the process's pid to")
	tty := fs.Bool("tty", false, "give the process a terminal")
	fs.BoolVar(tty, "t", false, "give the process a terminal")
	rest, err := parseCommand(fs, args, 1)
	if err != nil {
		return 1, err
	}
	code, err := execProcess(root, rest[0], rest[1:], *procFile, *pidFile, *tty)
	if err != nil {
		return 255, &exitError{code: 255, err: fmt.Errorf("exec failed: %w", err)}
	}
	return code, nil
}

// loadForExec loads a container that can take an exec.
func loadForExec(root, id string) (*libcontainer.Container, error) {
	c, err := libcontainer.Load(root, id)
	if err != nil {
		return nil, err
	}
	st, err := c.Status()
	if err != nil {
		return nil, err
	}
	switch st {
	case libcontainer.Stopped:
		return nil, errors.New("cannot exec in a stopped container")
	case libcontainer.Paused:
		return nil, errors.New("cannot exec in a paused container")
	}
	return c, nil
}

// bundleProcess is args with the rest of the container's own process
// settings (its bundle's config), as `runc exec ID ARGS`.
func bundleProcess(c *libcontainer.Container, args []string, tty bool) (*specs.Process, error) {
	if len(args) == 0 {
		return nil, errors.New("process args cannot be empty")
	}
	cs, err := c.State()
	if err != nil {
		return nil, err
	}
	bundle, ok := utils.SearchLabels(cs.Config.Labels, "bundle")
	if !ok {
		return nil, errors.New("bundle not found in labels")
	}
	var spec specs.Spec
	if err := readJSON(filepath.Join(bundle, "config.json"), &spec); err != nil {
		return nil, err
	}
	if spec.Process == nil {
		return nil, errors.New("process property must not be empty")
	}
	sp := spec.Process
	sp.Args, sp.Terminal = args, tty
	return sp, validateProcess(sp)
}

// Run runs args in a running container with the container's own process
// settings and stdout and stderr (stdin is /dev/null), and waits for it,
// as a foreground `runc exec ID ARGS` without a terminal, but without
// forwarding this process's signals: it is for a caller that runs it in
// process. It returns the exit status (128+n for a signal); pidFile, when
// set, gets the process's pid once it runs.
func Run(root, id string, args []string, stdout, stderr *os.File, pidFile string) (int, error) {
	c, err := loadForExec(root, id)
	if err != nil {
		return -1, err
	}
	sp, err := bundleProcess(c, args, false)
	if err != nil {
		return -1, err
	}
	p, err := newProcess(sp)
	if err != nil {
		return -1, err
	}
	p.Stdout, p.Stderr = stdout, stderr
	if err := c.Run(p); err != nil {
		return -1, err
	}
	if pidFile != "" {
		if err := writePidFile(pidFile, p); err != nil {
			_ = p.Signal(unix.SIGKILL)
			_, _ = p.Wait()
			return -1, err
		}
	}
	return waitStatus(p), nil
}

// waitStatus waits for the process and returns its exit status, 128+n for
// a signal.
func waitStatus(p *libcontainer.Process) int {
	ps, _ := p.Wait()
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			return utils.ExitStatus(unix.WaitStatus(ws))
		}
	}
	return 255
}

func execProcess(root, id string, args []string, procFile, pidFile string, tty bool) (int, error) {
	c, err := loadForExec(root, id)
	if err != nil {
		return -1, err
	}
	var sp *specs.Process
	if procFile != "" {
		sp = &specs.Process{}
		if err := readJSON(procFile, sp); err != nil {
			return -1, err
		}
		if err := validateProcess(sp); err != nil {
			return -1, err
		}
	} else if sp, err = bundleProcess(c, args, tty); err != nil {
		return -1, err
	}
	p, err := newProcess(sp)
	if err != nil {
		return -1, err
	}
	// Signals are caught before the process starts, so none is lost.
	sigs := make(chan os.Signal, 128)
	signal.Notify(sigs)
	var term *terminal
	if sp.Terminal {
		if term, err = newTerminal(p); err != nil {
			return -1, err
		}
		defer term.close()
	} else {
		p.Stdin, p.Stdout, p.Stderr = os.Stdin, os.Stdout, os.Stderr
	}
	if err := c.Run(p); err != nil {
		return -1, err
	}
	kill := func() {
		_ = p.Signal(unix.SIGKILL)
		_, _ = p.Wait()
	}
	if term != nil {
		if err := term.receive(); err != nil {
			kill()
			return -1, err
		}
	}
	if pidFile != "" {
		if err := writePidFile(pidFile, p); err != nil {
			kill()
			return -1, err
		}
	}
	pid, err := p.Pid()
	if err != nil {
		kill()
		return -1, err
	}
	type result struct{ status int }
	exited := make(chan result, 1)
	go func() { exited <- result{waitStatus(p)} }()
	term.resize()
	for {
		select {
		case r := <-exited:
			term.drain()
			return r.status, nil
		case s := <-sigs:
			switch s {
			case unix.SIGWINCH:
				term.resize()
			case unix.SIGCHLD, unix.SIGURG:
				// SIGCHLD is the wait's; SIGURG is the Go runtime's own.
			default:
				_ = unix.Kill(pid, s.(unix.Signal))
			}
		}
	}
}

// terminal is a foreground exec's pty: the container's master, received
// over a socket pair, and this command's own terminal (its stdin).
type terminal struct {
	host           console.Console
	parent, child  *os.File
	master         *os.File
	masterFd       int
	copied         chan struct{}
	hostWasChanged bool
}

func newTerminal(p *libcontainer.Process) (*terminal, error) {
	host, err := console.ConsoleFromFile(os.Stdin)
	if err != nil {
		return nil, fmt.Errorf("unable to get console: %w", err)
	}
	parent, child, err := utils.NewSockPair("console")
	if err != nil {
		return nil, err
	}
	p.Stdin, p.Stdout, p.Stderr = nil, nil, nil
	p.ConsoleSocket = child
	return &terminal{host: host, parent: parent, child: child, copied: make(chan struct{})}, nil
}

// receive takes the master the container's side sent and starts copying.
func (t *terminal) receive() error {
	t.child.Close()
	f, err := utils.RecvFile(t.parent)
	if err != nil {
		return err
	}
	// A non-blocking copy of it, so that reads go through the poller and a
	// deadline ends them; its number is kept for the ioctls, as Fd would
	// make the file blocking again.
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return err
	}
	unix.CloseOnExec(fd)
	t.masterFd, t.master = fd, os.NewFile(uintptr(fd), "pty-master")
	if err := console.ClearONLCR(uintptr(fd)); err != nil {
		return err
	}
	if err := t.host.SetRaw(); err != nil {
		return fmt.Errorf("failed to set the terminal from the stdin: %w", err)
	}
	t.hostWasChanged = true
	go func() { _, _ = io.Copy(t.master, os.Stdin) }()
	go func() {
		defer close(t.copied)
		_, _ = io.Copy(os.Stdout, t.master)
	}()
	return nil
}

// resize gives the container's terminal the size of ours.
func (t *terminal) resize() {
	if t == nil || t.master == nil {
		return
	}
	if ws, err := unix.IoctlGetWinsize(int(os.Stdin.Fd()), unix.TIOCGWINSZ); err == nil {
		_ = unix.IoctlSetWinsize(t.masterFd, unix.TIOCSWINSZ, ws)
	}
}

// drain copies what the process wrote before it ended; a process it left
// behind may hold the terminal open, so the wait is bounded.
func (t *terminal) drain() {
	if t == nil || t.master == nil {
		return
	}
	_ = t.master.SetReadDeadline(time.Now().Add(time.Second))
	<-t.copied
}

func (t *terminal) close() {
	if t.master != nil {
		t.master.Close()
	}
	t.parent.Close()
	t.child.Close()
	if t.hostWasChanged {
		_ = t.host.Reset()
	}
}

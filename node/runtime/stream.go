package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/navarch/navarch/node/streaming"
)

// This file is the runtime's side of streaming (node/streaming speaks the
// protocols): the CRI Exec, Attach and PortForward calls hand out URLs of
// the streaming server, which Serve starts on Config.StreamAddress, and
// streamer runs the sessions: `runc exec` for exec (a pty received over
// runc's console socket for a tty), the container's shim for attach, and a
// TCP connection made inside the sandbox's network namespace for
// port-forward.

// Exec returns a streaming URL for a command in a running container.
func (s *Server) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	st, err := s.streamServer()
	if err != nil {
		return nil, err
	}
	if err := s.requireRunning(req.GetContainerId()); err != nil {
		return nil, err
	}
	return st.GetExec(req)
}

// Attach returns a streaming URL for a running container's own stdio.
func (s *Server) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	st, err := s.streamServer()
	if err != nil {
		return nil, err
	}
	if err := s.requireRunning(req.GetContainerId()); err != nil {
		return nil, err
	}
	return st.GetAttach(req)
}

// PortForward returns a streaming URL for connections to a ready sandbox.
func (s *Server) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	st, err := s.streamServer()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	sb := s.sandboxes[req.GetPodSandboxId()]
	s.mu.Unlock()
	if sb == nil {
		return nil, notFound("sandbox", req.GetPodSandboxId())
	}
	if !sb.Ready {
		return nil, status.Errorf(codes.FailedPrecondition, "sandbox %s is not ready", sb.ID)
	}
	return st.GetPortForward(req)
}

func (s *Server) streamServer() (*streaming.Server, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stream == nil {
		return nil, status.Error(codes.Unavailable, "the streaming server is not running")
	}
	return s.stream, nil
}

func (s *Server) requireRunning(id string) error {
	c, err := s.getContainer(id)
	if err != nil {
		return err
	}
	if st, _ := s.state(c); st != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return status.Errorf(codes.FailedPrecondition, "container %s is not running", id)
	}
	return nil
}

// startStreaming listens on Config.StreamAddress and serves until ctx ends.
func (s *Server) startStreaming(ctx context.Context) error {
	st, err := streaming.New(streaming.Config{Addr: s.cfg.StreamAddress}, streamer{s})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.stream = st
	s.mu.Unlock()
	go func() { _ = st.Serve(ctx) }()
	return nil
}

// streamer runs the streaming server's sessions (streaming.Runtime).
type streamer struct{ s *Server }

// outputGrace bounds the wait for a command's output after it exited: a
// process it left in the background may hold the pipe open for ever.
const outputGrace = 2 * time.Second

// firstSizeWait bounds how long a tty exec waits for the client's terminal
// size, so that the command starts with it (kubectl sends it at once).
const firstSizeWait = time.Second

// Exec runs cmd with `runc exec` and the container's own process settings
// (its config.json's, as ExecSync), streaming its stdio.
func (r streamer) Exec(ctx context.Context, id string, cmd []string, st streaming.Streams) error {
	s := r.s
	c, err := s.getContainer(id)
	if err != nil {
		return err
	}
	if cs, _ := s.state(c); cs != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return fmt.Errorf("container %s is not running", id)
	}
	var spec specs.Spec
	if err := readJSON(filepath.Join(s.containerDir(id), "bundle", "config.json"), &spec); err != nil || spec.Process == nil {
		return fmt.Errorf("container %s: read spec: %v", id, err)
	}
	proc := *spec.Process
	proc.Args, proc.Terminal = cmd, st.Tty
	var pending []streaming.TerminalSize
	if st.Tty && st.Resize != nil {
		select {
		case size, ok := <-st.Resize:
			if ok {
				pending = append(pending, size)
				proc.ConsoleSize = &specs.Box{Width: uint(size.Width), Height: uint(size.Height)}
			}
		case <-time.After(firstSizeWait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	tmp, err := os.MkdirTemp("", "navarch-exec-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	procFile, pidFile := filepath.Join(tmp, "process.json"), filepath.Join(tmp, "pid")
	if err := writeJSON(procFile, &proc); err != nil {
		return err
	}
	args := []string{"--root", s.runcRoot(), "--log", filepath.Join(tmp, "runc.log"), "--log-format", "json", "exec", "--process", procFile, "--pid-file", pidFile}
	if st.Tty {
		return r.execTty(ctx, c.ID, append(args, "--tty", c.ID), pidFile, st, pending)
	}
	return r.execPipes(ctx, c.ID, append(args, c.ID), pidFile, st)
}

// execPipes runs runc exec with pipes as the process's stdio: without a
// terminal runc passes its own stdio through, so the command reads the
// pipe's end itself and sees EOF when the client closes stdin.
func (r streamer) execPipes(ctx context.Context, id string, args []string, pidFile string, st streaming.Streams) error {
	cmd := r.s.runcCommand(context.Background(), args...)
	// The child's ends are closed once it has them; ours when the session
	// is done with them.
	var childEnds, ourEnds []*os.File
	defer func() {
		for _, f := range append(childEnds, ourEnds...) {
			f.Close()
		}
	}()
	pipe := func() (*os.File, *os.File, error) {
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, nil, fmt.Errorf("container %s: exec: %w", id, err)
		}
		return pr, pw, nil
	}
	var stdinW *os.File
	if st.Stdin != nil {
		pr, pw, err := pipe()
		if err != nil {
			return err
		}
		cmd.Stdin, stdinW = pr, pw
		childEnds, ourEnds = append(childEnds, pr), append(ourEnds, pw)
	}
	type output struct {
		w  io.Writer
		pr *os.File
	}
	var outputs []output
	for _, o := range []struct {
		w   io.Writer
		set *io.Writer
	}{{st.Stdout, &cmd.Stdout}, {st.Stderr, &cmd.Stderr}} {
		if o.w == nil {
			continue
		}
		pr, pw, err := pipe()
		if err != nil {
			return err
		}
		*o.set = pw
		childEnds, ourEnds = append(childEnds, pw), append(ourEnds, pr)
		outputs = append(outputs, output{o.w, pr})
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("container %s: exec: %w", id, err)
	}
	for _, f := range childEnds {
		f.Close()
	}
	childEnds = nil
	if stdinW != nil {
		// Not waited for: a client that never closes stdin must not keep
		// the session open once the command ended.
		go func() {
			_, _ = io.Copy(stdinW, st.Stdin)
			stdinW.Close()
		}()
	}
	var copying sync.WaitGroup
	for _, o := range outputs {
		copying.Add(1)
		go func() {
			defer copying.Done()
			_, _ = io.Copy(o.w, o.pr)
		}()
	}
	return r.waitExec(ctx, id, waitProc(cmd), pidFile, &copying, func() {
		for _, o := range outputs {
			o.pr.Close()
		}
	})
}

// waitExec waits for runc exec (killing the command if the client goes
// away) and for its output, and turns its exit status into the session's.
func (r streamer) waitExec(ctx context.Context, id string, p *proc, pidFile string, outputs *sync.WaitGroup, stopOutput func()) error {
	select {
	case <-p.done:
	case <-ctx.Done():
		killExec(pidFile)
		<-p.done
	}
	err := p.err
	copied := make(chan struct{})
	go func() { outputs.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-time.After(outputGrace):
		if stopOutput != nil {
			stopOutput()
		}
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case !fileExists(pidFile):
		// runc writes the pid file once the command runs: without one the
		// command never started (not found, not executable), which is an
		// error of the exec, not an exit code of the command.
		return fmt.Errorf("OCI runtime exec failed: %s", lastRuncError(filepath.Join(filepath.Dir(pidFile), "runc.log")))
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return streaming.ExitError{Code: ee.ExitCode()}
	default:
		return fmt.Errorf("container %s: exec: %w", id, err)
	}
}

// execTty runs runc exec with a terminal. runc takes the container's pty
// master over a console socket only when it detaches, and a detached exec
// is reparented away from the runtime, which then could not learn its exit
// code; so runc runs in the foreground with a pty of the runtime's as its
// stdio and controlling terminal: it copies between that and the
// container's pty, keeps ours raw, and passes a resize of ours (the
// SIGWINCH it gets) on to the container's.
func (r streamer) execTty(ctx context.Context, id string, args []string, pidFile string, st streaming.Streams, pending []streaming.TerminalSize) error {
	master, slave, err := openPty()
	if err != nil {
		return fmt.Errorf("container %s: exec: %w", id, err)
	}
	defer master.Close()
	for _, size := range pending {
		setWinsize(master, size)
	}
	cmd := r.s.runcCommand(context.Background(), args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = cmd.Start()
	slave.Close()
	if err != nil {
		return fmt.Errorf("container %s: exec: %w", id, err)
	}
	p := waitProc(cmd)
	if st.Resize != nil {
		go func() {
			for size := range st.Resize {
				setWinsize(master, size)
			}
		}()
	}
	if st.Stdin != nil {
		// A terminal cannot be half-closed: stdin's end is just the end of
		// typing (a ^D is the user's to send).
		go func() { _, _ = io.Copy(master, st.Stdin) }()
	}
	var outputs sync.WaitGroup
	if st.Stdout != nil {
		outputs.Add(1)
		go func() {
			defer outputs.Done()
			// EIO is the master's EOF: runc, the slave's last holder, ended.
			_, _ = io.Copy(st.Stdout, master)
		}()
	}
	return r.waitExec(ctx, id, p, pidFile, &outputs, func() { master.Close() })
}

// openPty makes a pseudo-terminal pair; the master is non-blocking, so that
// the runtime's poller serves it and Close ends a pending read.
func openPty() (master, slave *os.File, err error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	master = os.NewFile(uintptr(m), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// proc is a started command whose end can be waited for more than once.
type proc struct {
	done chan struct{}
	err  error // set before done is closed
}

func waitProc(cmd *exec.Cmd) *proc {
	p := &proc{done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p
}

// receivePty accepts runc's connection on the console socket and takes the
// pty master it sends (SCM_RIGHTS). runc may end right after sending it
// (runc create does); ending without sending is a failure.
func receivePty(ln *net.UnixListener, runc *proc) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	got := make(chan result, 1)
	go func() {
		conn, err := ln.AcceptUnix()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer conn.Close()
		buf := make([]byte, 256)
		oob := make([]byte, unix.CmsgSpace(4))
		_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			got <- result{err: fmt.Errorf("console socket: %w", err)}
			return
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			got <- result{err: fmt.Errorf("console socket: no control message (%v)", err)}
			return
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			got <- result{err: fmt.Errorf("console socket: no pty (%v)", err)}
			return
		}
		// Non-blocking, so that the runtime's poller serves it and Close
		// ends a pending read.
		_ = unix.SetNonblock(fds[0], true)
		got <- result{f: os.NewFile(uintptr(fds[0]), "pty-master")}
	}()
	select {
	case r := <-got:
		return r.f, r.err
	case <-runc.done:
		ln.Close()
		if r := <-got; r.f != nil {
			return r.f, nil
		}
		return nil, fmt.Errorf("runc ended without sending the terminal: %v", runc.err)
	}
}

// Attach joins the container's stdio through its shim's attach socket.
func (r streamer) Attach(ctx context.Context, id string, st streaming.Streams) error {
	c, err := r.s.getContainer(id)
	if err != nil {
		return err
	}
	return attachShim(ctx, r.s.containerDir(c.ID), st)
}

// PortForward connects to port on the sandbox's loopback, from inside its
// network namespace, and copies both ways until the pod's side ends.
func (r streamer) PortForward(ctx context.Context, sandboxID string, port int32, stream io.ReadWriteCloser) error {
	r.s.mu.Lock()
	sb := r.s.sandboxes[sandboxID]
	r.s.mu.Unlock()
	if sb == nil {
		return notFound("sandbox", sandboxID)
	}
	conn, err := dialInNetNS(sb.NetNS, port)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	go func() {
		_, _ = io.Copy(conn, stream)
		// The client sends no more: pass the half-close on.
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	if _, err := io.Copy(stream, conn); err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// dialInNetNS connects to localhost:port in the network namespace at path
// ("" is the host's, for hostNetwork pods). The socket belongs to the
// namespace it was made in, so only the dial runs on a thread moved there.
func dialInNetNS(path string, port int32) (net.Conn, error) {
	dial := func() (net.Conn, error) {
		var d net.Dialer
		d.Timeout = 10 * time.Second
		c, err := d.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(int(port)))
		if err != nil {
			if c6, err6 := d.Dial("tcp6", "[::1]:"+strconv.Itoa(int(port))); err6 == nil {
				return c6, nil
			}
		}
		return c, err
	}
	if path == "" {
		return dial()
	}
	target, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", path, err)
	}
	defer target.Close()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			goruntime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("setns %s: %w", path, err)}
			return
		}
		c, err := dial()
		// A thread that cannot go back stays locked: the goroutine's end
		// then ends the thread instead of handing it to other goroutines.
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			goruntime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	res := <-ch
	return res.c, res.err
}

package runtime

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/navarch/navarch/node/runtime/libct"
)

// The shim is a small process per container, a re-exec of the navarch binary
// (`navarch runtime-shim container ...`), started in its own session so it
// outlives the runtime. It is what lets a runtime restart lose nothing:
//   - it holds the read ends of the container's stdout and stderr pipes and
//     writes each line to the CRI log file, so logs keep flowing while the
//     runtime is down (runc's detached mode alone would leave the pipes to a
//     process that may die, or need raw files without the CRI format);
//   - it is the child subreaper of the container's init, so it alone can
//     wait4 it and learn the real exit status, which it writes with the OOM
//     verdict to exit.json before deleting the runc container.
//   - it serves attach sessions on attach.sock in the container directory
//     (attach.go): live output as it is read, and the container's stdin
//     (a pipe it holds, with CRI Stdin) and terminal (the pty master runc
//     sends over a console socket, with CRI Tty) for them to write to.
//
// The runtime talks to it through files, signals (SIGUSR1: reopen the log)
// and attach sessions, which come and go, so either side may restart.

// startDoneFile is created by the runtime once `runc start` has returned, or
// once it knows no start will come (a stop before start).
const startDoneFile = "start-done"

// exitRecord is what the shim writes to exit.json when the container ends.
type exitRecord struct {
	ExitCode   int32  `json:"exitCode"`
	FinishedAt int64  `json:"finishedAt"`
	OOMKilled  bool   `json:"oomKilled,omitempty"`
	Message    string `json:"message,omitempty"`
}

// ShimMain runs the hidden `runtime-shim` subcommand and returns its exit code.
func ShimMain(args []string) int {
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "runtime-shim: want container or pause")
		return 2
	}
	switch args[0] {
	case "pause":
		return pauseMain()
	case "container":
		goruntime.GOMAXPROCS(1)
		if err := shimContainer(args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "runtime-shim: %v\n", err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "runtime-shim: unknown mode %q\n", args[0])
	return 2
}

// pauseMain is init of a shared PID namespace: it reaps orphans until killed.
func pauseMain() int {
	signal.Ignore(unix.SIGINT, unix.SIGTERM, unix.SIGHUP)
	for {
		var ws unix.WaitStatus
		if _, err := unix.Wait4(-1, &ws, 0, nil); err == unix.ECHILD {
			time.Sleep(time.Second)
		}
	}
}

func shimContainer(args []string) error {
	fs := flag.NewFlagSet("runtime-shim container", flag.ContinueOnError)
	runc := fs.String("runc", "runc", "runc binary")
	builtin := fs.Bool("builtin-runc", false, "run the built-in OCI runtime's commands in this process (node/runtime/libct)")
	root := fs.String("root", "", "runc state root")
	dir := fs.String("dir", "", "container directory")
	id := fs.String("id", "", "container id")
	logPath := fs.String("log", "", "CRI log file")
	cgroup := fs.String("cgroup", "", "container cgroup path (v1)")
	stdin := fs.Bool("stdin", false, "keep the container's stdin open for attach")
	stdinOnce := fs.Bool("stdin-once", false, "close stdin after the first attach session's")
	tty := fs.Bool("tty", false, "run the container with a terminal")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// fd 3 tells the runtime whether runc create worked; it is closed once
	// the answer is written, so the runtime reads it to EOF.
	ready := os.NewFile(3, "ready")
	signal.Ignore(unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGPIPE)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(ready, "subreaper: %v", err)
		return err
	}
	lw, err := newLogWriter(*logPath)
	if err != nil {
		fmt.Fprintf(ready, "log %s: %v", *logPath, err)
		return err
	}
	reopen := make(chan os.Signal, 1)
	signal.Notify(reopen, unix.SIGUSR1)
	go func() {
		for range reopen {
			lw.reopen()
		}
	}()

	hub, err := listenAttach(*stdinOnce)
	if err != nil {
		fmt.Fprintf(ready, "attach socket: %v", err)
		return err
	}
	pidFile := filepath.Join(*dir, "init.pid")
	runcLog := filepath.Join(*dir, "runc.log")
	bundle := filepath.Join(*dir, "bundle")
	// create runs `runc create` with the init's stdio or a console socket.
	// The built-in OCI runtime's runs in this process, as the runtime runs
	// its commands (Server.runc): that saves starting the binary once more.
	create := func(stdin, stdout, stderr *os.File, consoleSocket string) error {
		if *builtin {
			return libct.Create(*root, *id, libct.CreateOptions{Bundle: bundle, PidFile: pidFile,
				ConsoleSocket: consoleSocket, Stdin: stdin, Stdout: stdout, Stderr: stderr})
		}
		args := []string{"--root", *root, "--log", runcLog, "--log-format", "json", "create", "--bundle", bundle, "--pid-file", pidFile}
		if consoleSocket != "" {
			args = append(args, "--console-socket", consoleSocket)
		}
		cmd := exec.Command(*runc, append(args, *id)...)
		// Set only when there: a nil *os.File is not a nil io.Reader.
		if stdin != nil {
			cmd.Stdin = stdin
		}
		if stdout != nil {
			cmd.Stdout, cmd.Stderr = stdout, stderr
		}
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%v: %s", err, lastRuncError(runcLog))
		}
		return nil
	}
	if *builtin {
		// libcontainer forwards the init's messages to its log.
		if f, err := libct.LogTo(runcLog); err == nil {
			defer f.Close()
		}
	}
	var copiers sync.WaitGroup
	if *tty {
		master, err := createWithTerminal(func(sock string) error { return create(nil, nil, nil, sock) })
		if err != nil {
			msg := fmt.Sprintf("runc create: %v", err)
			fmt.Fprint(ready, msg)
			return errors.New(msg)
		}
		defer master.Close()
		hub.tty = master
		if *stdin {
			hub.stdin = master
		}
		// A terminal has one output, logged as stdout (as upstream).
		copiers.Add(1)
		go func() { defer copiers.Done(); lw.copy("stdout", master, hub.tee) }()
	} else {
		outR, outW, err := os.Pipe()
		if err != nil {
			return err
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			return err
		}
		var inR *os.File
		if *stdin {
			if inR, hub.stdinPipe, err = os.Pipe(); err != nil {
				return err
			}
			hub.stdin = hub.stdinPipe
		}
		if err := create(inR, outW, errW, ""); err != nil {
			msg := fmt.Sprintf("runc create: %v", err)
			fmt.Fprint(ready, msg)
			return errors.New(msg)
		}
		outW.Close()
		errW.Close()
		if inR != nil {
			inR.Close()
		}
		copiers.Add(2)
		go func() { defer copiers.Done(); lw.copy("stdout", outR, hub.tee) }()
		go func() { defer copiers.Done(); lw.copy("stderr", errR, hub.tee) }()
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		fmt.Fprintf(ready, "pid file: %v", err)
		return err
	}
	initPID, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		fmt.Fprintf(ready, "pid file: %v", err)
		return err
	}
	go hub.serve()
	fmt.Fprint(ready, "ok")
	ready.Close()
	// One shim per container: hand back what the binary's package
	// initialisers allocated, which the shim never uses again.
	debug.FreeOSMemory()

	var code int32
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait: %w", err)
		}
		if pid != initPID {
			continue
		}
		switch {
		case ws.Exited():
			code = int32(ws.ExitStatus())
		case ws.Signaled():
			code = 128 + int32(ws.Signal())
		}
		break
	}
	rec := exitRecord{ExitCode: code, FinishedAt: time.Now().UnixNano()}
	// The pipes end when the last process holding them does; a daemonised
	// grandchild in a shared PID namespace may hold them forever, so the
	// wait is bounded.
	done := make(chan struct{})
	go func() { copiers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	hub.close()
	rec.OOMKilled = oomKilled(*cgroup)
	// A process that exits at once may do so while `runc start` is still
	// cleaning up; deleting the runc container under it would fail the
	// start. The runtime marks when no start is in flight any more.
	for i := 0; i < 1000; i++ {
		if _, err := os.Stat(filepath.Join(*dir, startDoneFile)); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if *builtin {
		// In this process, as the runtime does (Server.runc).
		if err := libct.Delete(*root, *id, true); err != nil {
			rec.Message = fmt.Sprintf("runc delete: %v", err)
		}
	} else {
		del := exec.Command(*runc, "--root", *root, "delete", "--force", *id)
		if out, err := del.CombinedOutput(); err != nil {
			rec.Message = fmt.Sprintf("runc delete: %v: %s", err, bytes.TrimSpace(out))
		}
	}
	lw.close()
	return writeJSON(filepath.Join(*dir, "exit.json"), &rec)
}

// listenAttach listens on the container directory's attach socket (the
// shim's working directory: the full path may be too long for a socket).
func listenAttach(stdinOnce bool) (*attachHub, error) {
	_ = os.Remove(attachSocket)
	ln, err := net.Listen("unix", attachSocket)
	if err != nil {
		return nil, err
	}
	return &attachHub{clients: map[*attachClient]bool{}, stdinOnce: stdinOnce, ln: ln}, nil
}

// createWithTerminal runs create with a console socket and returns the pty
// master sent over it; the socket lives in a short temporary directory, as
// socket paths are limited to 108 bytes.
func createWithTerminal(create func(consoleSocket string) error) (*os.File, error) {
	tmp, err := os.MkdirTemp("", "navarch-shim-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	sock := filepath.Join(tmp, "console.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	p := &proc{done: make(chan struct{})}
	go func() { p.err = create(sock); close(p.done) }()
	master, err := receivePty(ln, p)
	<-p.done
	if p.err != nil {
		if master != nil {
			master.Close()
		}
		return nil, p.err
	}
	return master, err
}

// oomKilled reads the memory cgroup's OOM kill counter (cgroup v1), which
// the kernel raises when it kills a process of the cgroup for its limit.
func oomKilled(cgroup string) bool {
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", cgroup, "memory.oom_control"))
	if err != nil {
		b, err = os.ReadFile(filepath.Join("/sys/fs/cgroup", cgroup, "memory.events"))
		if err != nil {
			return false
		}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" && f[1] != "0" {
			return true
		}
	}
	return false
}

// lastRuncError returns the last message of runc's JSON log.
func lastRuncError(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		var entry struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(lines[i]), &entry) == nil && entry.Msg != "" {
			return entry.Msg
		}
	}
	return strings.TrimSpace(string(b))
}

// logWriter writes the CRI log format: "<RFC3339Nano> <stream> <P|F> <text>".
type logWriter struct {
	mu   sync.Mutex
	path string
	f    *os.File // nil when the container has no log path
}

func newLogWriter(path string) (*logWriter, error) {
	lw := &logWriter{path: path}
	if path == "" {
		return lw, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	lw.f = f
	return lw, nil
}

// reopen starts a new file at the same path, after the kubelet rotated the old.
func (lw *logWriter) reopen() {
	if lw.path == "" {
		return
	}
	f, err := os.OpenFile(lw.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		fmt.Fprintf(os.Stderr, "runtime-shim: reopen %s: %v\n", lw.path, err)
		return
	}
	lw.mu.Lock()
	old := lw.f
	lw.f = f
	lw.mu.Unlock()
	old.Close()
}

func (lw *logWriter) close() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.f != nil {
		lw.f.Close()
	}
}

// maxLogLine is where a longer line is split into partial (P) entries.
const maxLogLine = 16 * 1024

const criTimestamp = "2006-01-02T15:04:05.000000000Z07:00"

// copy writes what r yields to the log, one entry per line (P entries for
// the pieces of a line longer than maxLogLine), and hands each chunk as read
// to tee (attached clients) first, so that a prompt without a newline
// reaches them at once.
func (lw *logWriter) copy(stream string, r io.Reader, tee func(stream string, p []byte)) {
	buf := make([]byte, 32*1024)
	var line []byte
	for {
		n, err := r.Read(buf)
		chunk := buf[:n]
		if n > 0 && tee != nil {
			tee(stream, chunk)
		}
		for len(chunk) > 0 {
			i := bytes.IndexByte(chunk, '\n')
			if i < 0 {
				line = append(line, chunk...)
				chunk = nil
			} else {
				line = append(line, chunk[:i]...)
				chunk = chunk[i+1:]
			}
			for len(line) > maxLogLine {
				lw.write(stream, "P", line[:maxLogLine])
				line = append(line[:0], line[maxLogLine:]...)
			}
			if i >= 0 {
				lw.write(stream, "F", line)
				line = line[:0]
			}
		}
		if err != nil {
			if len(line) > 0 {
				lw.write(stream, "F", line)
			}
			return
		}
	}
}

func (lw *logWriter) write(stream, tag string, line []byte) {
	buf := make([]byte, 0, len(criTimestamp)+len(stream)+len(line)+8)
	buf = append(buf, time.Now().UTC().Format(criTimestamp)...)
	buf = append(buf, ' ')
	buf = append(buf, stream...)
	buf = append(buf, ' ')
	buf = append(buf, tag...)
	buf = append(buf, ' ')
	buf = append(buf, line...)
	buf = append(buf, '\n')
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.f != nil {
		_, _ = lw.f.Write(buf)
	}
}

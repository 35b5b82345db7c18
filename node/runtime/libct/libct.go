// Package libct is the container executor built into the navarch binary, so
// that a node needs no OCI runtime installed. `navarch runc ...` (Main)
// answers the part of runc's command line that the built-in runtime
// (node/runtime) and its shim use, with runc's flags, exit codes, stdio
// handling and JSON error log, on top of runc's libcontainer:
//
//	runc [--root R] [--log L] [--log-format text|json] COMMAND
//	  create --bundle B [--pid-file P] [--console-socket S] ID
//	  start ID
//	  kill [--all] ID [SIGNAL]
//	  delete [--force] ID
//	  update --resources FILE|- ID
//	  exec [--process F | ID ARGS...] [--pid-file P] [--tty] ID
//	  state ID
//
// The runtime and its shim, being the navarch binary already, call the same
// commands in process instead (Create, Start, Kill, Delete, Update, Run):
// each `navarch runc` would pay the whole binary's start-up, some 50 ms of
// package initialisation, where libcontainer needs about one. Only the
// streaming exec (stdio and terminal handling of `runc exec`) runs as a
// command.
//
// libcontainer starts a container's init (and each exec) by re-executing
// the binary as `/proc/self/exe init`: the nsenter package imported here
// joins or makes the namespaces in C before the Go runtime starts, then the
// binary's main must call Init before doing anything else. That re-exec is
// the built-in runtime's one cost over a runc binary: one start of the
// navarch binary per container and per exec.
//
// Seccomp profiles are compiled only with the seccomp build tag (cgo and
// libseccomp, as make builds); without it a container with a profile fails
// with why, never runs unconfined.
package libct

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/cgroups/devices" // lets the cgroup managers set device rules
	_ "github.com/opencontainers/runc/libcontainer/nsenter"         // runs the init's namespace setup before Go starts
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// IsInit says whether the process was started by libcontainer as a
// container's init or exec helper (it passes its sockets in the
// environment), so that an accidental `navarch init` is not one.
func IsInit(args []string) bool {
	return len(args) > 1 && args[1] == "init" && os.Getenv("_LIBCONTAINER_INITPIPE") != ""
}

// Init runs libcontainer's init: it sets the container up and execs its
// process, and never returns.
func Init() { libcontainer.Init() }

// exitError carries the exit code of a failed command (runc exits 255 when
// exec could not run the process, 1 otherwise).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Main runs one runc command (args without the leading "runc") and
// returns the process's exit code.
func Main(args []string) int {
	gf := flag.NewFlagSet("runc", flag.ContinueOnError)
	root := gf.String("root", "/run/runc", "state directory")
	logPath := gf.String("log", "", "log file")
	logFormat := gf.String("log-format", "text", "log format: text or json")
	if err := gf.Parse(args); err != nil {
		return 2
	}
	// libcontainer forwards the container init's own messages through
	// logrus, so logrus is where runc's log file is written, in runc's
	// format: the runtime reads the last message as the error.
	logrus.SetOutput(os.Stderr)
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_SYNC, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		logrus.SetOutput(f)
	}
	if *logFormat == "json" {
		logrus.SetFormatter(&logrus.JSONFormatter{})
	}
	rest := gf.Args()
	if len(rest) == 0 {
		return fail(*logPath, errors.New("no command"))
	}
	if abs, err := filepath.Abs(*root); err == nil {
		*root = abs
	}
	cmds := map[string]func(root string, args []string) (int, error){
		"create": create, "start": start, "kill": kill, "delete": remove,
		"update": update, "exec": execute, "state": state,
	}
	run, ok := cmds[rest[0]]
	if !ok {
		return fail(*logPath, fmt.Errorf("command %q is not supported", rest[0]))
	}
	code, err := run(*root, rest[1:])
	if err != nil {
		return fail(*logPath, err)
	}
	return code
}

// fail logs err as runc does: to the log, and as a line on stderr.
func fail(logPath string, err error) int {
	if logPath != "" {
		logrus.Error(err)
	}
	fmt.Fprintln(os.Stderr, err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// parseCommand parses a command's flags and wants at least n arguments.
func parseCommand(fs *flag.FlagSet, args []string, n int) ([]string, error) {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%s: %w", fs.Name(), err)
	}
	if fs.NArg() < n || fs.Arg(0) == "" {
		return nil, fmt.Errorf("%s: container id cannot be empty", fs.Name())
	}
	return fs.Args(), nil
}

func create(root string, args []string) (int, error) {
	fs := flag.NewFlagSet("create", flag.ContinueOnError)
	bundle := fs.String("bundle", ".", "bundle directory")
	pidFile := fs.String("pid-file", "", "file to write the init's pid to")
	consoleSocket := fs.String("console-socket", "", "socket to send the terminal's master to")
	noPivot := fs.Bool("no-pivot", false, "do not use pivot_root")
	rest, err := parseCommand(fs, args, 1)
	if err != nil {
		return 1, err
	}
	o := CreateOptions{Bundle: *bundle, PidFile: *pidFile, ConsoleSocket: *consoleSocket, NoPivot: *noPivot,
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	return exitCode(Create(root, rest[0], o))
}

// CreateOptions are `runc create`'s.
type CreateOptions struct {
	Bundle, PidFile, ConsoleSocket string
	NoPivot                        bool
	// Stdin, Stdout and Stderr are the init's stdio when it has no
	// terminal (nil: /dev/null).
	Stdin, Stdout, Stderr *os.File
}

// Create makes a container of the bundle whose init waits for Start, as
// `runc create`. The init is a child of the caller's (libcontainer's nsexec
// makes it so), which must reap it.
func Create(root, id string, o CreateOptions) error {
	bundle, err := filepath.Abs(o.Bundle)
	if err != nil {
		return err
	}
	if o.PidFile != "" {
		if o.PidFile, err = filepath.Abs(o.PidFile); err != nil {
			return err
		}
	}
	var spec specs.Spec
	if err := readJSON(filepath.Join(bundle, "config.json"), &spec); err != nil {
		return err
	}
	if err := validateProcess(spec.Process); err != nil {
		return err
	}
	if spec.Linux != nil && spec.Linux.Seccomp != nil && !seccomp.Enabled {
		// Never run it unconfined: say why it cannot run.
		return errors.New("seccomp: config provided but seccomp not supported: this navarch was built without the seccomp build tag (libseccomp); build it with -tags=seccomp (make build does) or pick a runc binary (--oci-runtime runc)")
	}
	// libcontainer resolves relative paths from the working directory, as
	// runc chdirs to the bundle; a caller's directory is left alone.
	if spec.Root != nil && !filepath.IsAbs(spec.Root.Path) {
		spec.Root.Path = filepath.Join(bundle, spec.Root.Path)
	}
	for i, m := range spec.Mounts {
		if m.Source != "" && !filepath.IsAbs(m.Source) && isBind(m) {
			spec.Mounts[i].Source = filepath.Join(bundle, m.Source)
		}
	}
	config, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName:   id,
		NoPivotRoot:  o.NoPivot,
		Spec:         &spec,
		RootlessEUID: os.Geteuid() != 0,
	})
	if err != nil {
		return err
	}
	for i, l := range config.Labels {
		if strings.HasPrefix(l, "bundle=") {
			config.Labels[i] = "bundle=" + bundle
		}
	}
	c, err := libcontainer.Create(root, id, config)
	if err != nil {
		return err
	}
	p, err := newProcess(spec.Process)
	if err != nil {
		_ = c.Destroy()
		return err
	}
	p.Init = true
	cleanup, err := detachedIO(p, spec.Process.Terminal, o)
	if err != nil {
		_ = c.Destroy()
		return err
	}
	defer cleanup()
	if err := c.Start(p); err != nil {
		_ = c.Destroy()
		return err
	}
	if o.PidFile != "" {
		if err := writePidFile(o.PidFile, p); err != nil {
			_ = p.Signal(unix.SIGKILL)
			_, _ = p.Wait()
			_ = c.Destroy()
			return err
		}
	}
	return nil
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

// detachedIO gives a process that outlives this command its stdio: with a
// terminal the init makes one and sends its master over the console
// socket; without one the process takes this command's own stdio, which
// the caller made for it.
func detachedIO(p *libcontainer.Process, terminal bool, o CreateOptions) (func(), error) {
	if !terminal {
		if o.ConsoleSocket != "" {
			return nil, errors.New("cannot use console socket if runc will not detach or allocate tty")
		}
		// Set only when there: a nil *os.File is not a nil io.Reader.
		if o.Stdin != nil {
			p.Stdin = o.Stdin
		}
		if o.Stdout != nil {
			p.Stdout = o.Stdout
		}
		if o.Stderr != nil {
			p.Stderr = o.Stderr
		}
		return func() {}, nil
	}
	if o.ConsoleSocket == "" {
		return nil, errors.New("cannot allocate tty if runc will detach without setting console socket")
	}
	conn, err := dialUnix(o.ConsoleSocket)
	if err != nil {
		return nil, err
	}
	p.ConsoleSocket = conn
	return func() { conn.Close() }, nil
}

func start(root string, args []string) (int, error) {
	rest, err := parseCommand(flag.NewFlagSet("start", flag.ContinueOnError), args, 1)
	if err != nil {
		return 1, err
	}
	return exitCode(Start(root, rest[0]))
}

func exitCode(err error) (int, error) {
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// Start runs a created container's process, as `runc start`.
func Start(root, id string) error {
	c, err := libcontainer.Load(root, id)
	if err != nil {
		return err
	}
	st, err := c.Status()
	if err != nil {
		return err
	}
	switch st {
	case libcontainer.Created:
		return c.Exec()
	case libcontainer.Stopped:
		return errors.New("cannot start a container that has stopped")
	case libcontainer.Running:
		return errors.New("cannot start an already running container")
	default:
		return fmt.Errorf("cannot start a container in the %s state", st)
	}
}

func kill(root string, args []string) (int, error) {
	fs := flag.NewFlagSet("kill", flag.ContinueOnError)
	all := fs.Bool("all", false, "send the signal to all processes (deprecated)")
	rest, err := parseCommand(fs, args, 1)
	if err != nil {
		return 1, err
	}
	name := "SIGTERM"
	if len(rest) > 1 {
		name = rest[1]
	}
	err = Kill(root, rest[0], name)
	if errors.Is(err, libcontainer.ErrNotRunning) && *all {
		err = nil
	}
	return exitCode(err)
}

// Kill sends the container's init a signal (a number, or a name with or
// without "SIG"), as `runc kill`.
func Kill(root, id, signal string) error {
	sig, err := parseSignal(signal)
	if err != nil {
		return err
	}
	c, err := libcontainer.Load(root, id)
	if err != nil {
		return err
	}
	return c.Signal(sig)
}

// parseSignal takes a number, a name or a name without "SIG", as runc.
func parseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

func remove(root string, args []string) (int, error) {
	fs := flag.NewFlagSet("delete", flag.ContinueOnError)
	force := fs.Bool("force", false, "kill the container first if it still runs")
	fs.BoolVar(force, "f", false, "kill the container first if it still runs")
	rest, err := parseCommand(fs, args, 1)
	if err != nil {
		return 1, err
	}
	return exitCode(Delete(root, rest[0], *force))
}

// Delete removes a container, as `runc delete`: a running one only when
// forced, after killing it.
func Delete(root, id string, force bool) error {
	c, err := libcontainer.Load(root, id)
	if errors.Is(err, libcontainer.ErrNotExist) {
		// A create that failed early may leave the directory without a
		// state file, which Load does not see.
		_ = os.RemoveAll(filepath.Join(root, id))
		if force {
			return nil
		}
	}
	if err != nil {
		return err
	}
	if force {
		// Even a stopped container may leave processes in its cgroup when
		// it shares a PID namespace.
		return killAndDestroy(c)
	}
	st, err := c.Status()
	if err != nil {
		return err
	}
	switch st {
	case libcontainer.Stopped:
		return c.Destroy()
	case libcontainer.Created:
		return killAndDestroy(c)
	default:
		return fmt.Errorf("cannot delete container %s that is not stopped: %s", id, st)
	}
}

// killAndDestroy kills the container's init and, once it is gone (for up
// to ten seconds, as runc), removes the container.
func killAndDestroy(c *libcontainer.Container) error {
	_ = c.Signal(unix.SIGKILL)
	for i := 0; i < 1000; i++ {
		if err := c.Signal(unix.Signal(0)); err != nil {
			return c.Destroy()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return errors.New("container init still running")
}

func update(root string, args []string) (int, error) {
	fs := flag.NewFlagSet("update", flag.ContinueOnError)
	resources := fs.String("resources", "", "file with the LinuxResources JSON, - for stdin")
	rest, err := parseCommand(fs, args, 1)
	if err != nil {
		return 1, err
	}
	r := specs.LinuxResources{}
	in := io.Reader(os.Stdin)
	switch *resources {
	case "":
		return 1, errors.New("update: only --resources is supported")
	case "-":
	default:
		f, err := os.Open(*resources)
		if err != nil {
			return 1, err
		}
		defer f.Close()
		in = f
	}
	if err := json.NewDecoder(in).Decode(&r); err != nil {
		return 1, fmt.Errorf("update: decode resources: %w", err)
	}
	return exitCode(Update(root, rest[0], &r))
}

// Update sets the cgroup limits r names on a container, as `runc update
// --resources`.
func Update(root, id string, r *specs.LinuxResources) error {
	c, err := libcontainer.Load(root, id)
	if err != nil {
		return err
	}
	config := c.Config()
	applyResources(config.Cgroups.Resources, r)
	// The device rules do not change, and rewriting them would briefly
	// deny the running container its devices.
	config.Cgroups.SkipDevices = true
	return c.Set(config)
}

func state(root string, args []string) (int, error) {
	rest, err := parseCommand(flag.NewFlagSet("state", flag.ContinueOnError), args, 1)
	if err != nil {
		return 1, err
	}
	c, err := libcontainer.Load(root, rest[0])
	if err != nil {
		return 1, err
	}
	st, err := c.OCIState()
	if err != nil {
		return 1, err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return 1, err
	}
	fmt.Println(string(b))
	return 0, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// writePidFile writes the process's pid atomically (a reader never sees a
// partial file).
func writePidFile(path string, p *libcontainer.Process) error {
	pid, err := p.Pid()
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LogTo sends libcontainer's messages (among them the container init's,
// which it forwards) to path as runc's JSON log lines, for a process that
// runs the commands itself rather than as `navarch runc`.
func LogTo(path string) (io.Closer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	logrus.SetOutput(f)
	logrus.SetFormatter(&logrus.JSONFormatter{})
	return f, nil
}

package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/navarch/navarch/node/runtime/libct"
)

// container is the runtime's record of one container (container.json). Its
// state is not stored: it is derived from the record, exit.json and whether
// the shim still runs, so that no restart can leave it stale.
type container struct {
	ID        string `json:"id"`
	SandboxID string `json:"sandboxId"`
	Config    []byte `json:"config"` // runtimeapi.ContainerConfig, protobuf
	ImageID   string `json:"imageId"`
	LogPath   string `json:"logPath,omitempty"`
	Cgroup    string `json:"cgroup"`
	CreatedAt int64  `json:"createdAt"`
	StartedAt int64  `json:"startedAt,omitempty"`
	ShimPID   int    `json:"shimPid"`
	// StopSignal is what StopContainer sends first: the container's, else
	// the image's, else SIGTERM.
	StopSignal string `json:"stopSignal,omitempty"`
	// Resources are the current limits after UpdateContainerResources.
	Resources []byte `json:"resources,omitempty"`
}

func (c *container) config() *runtimeapi.ContainerConfig {
	cfg := &runtimeapi.ContainerConfig{}
	_ = proto.Unmarshal(c.Config, cfg)
	return cfg
}

func (s *Server) saveContainer(c *container) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return writeJSON(filepath.Join(s.containerDir(c.ID), "container.json"), c)
}

func (s *Server) getContainer(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.containers[id]
	if c == nil {
		return nil, notFound("container", id)
	}
	return c, nil
}

// state derives the container's state and, once exited, its exit record.
func (s *Server) state(c *container) (runtimeapi.ContainerState, *exitRecord) {
	s.mu.Lock()
	shimPID, startedAt := c.ShimPID, c.StartedAt
	s.mu.Unlock()
	rec := &exitRecord{}
	if err := readJSON(filepath.Join(s.containerDir(c.ID), "exit.json"), rec); err == nil {
		return runtimeapi.ContainerState_CONTAINER_EXITED, rec
	}
	if shimPID == 0 {
		return runtimeapi.ContainerState_CONTAINER_UNKNOWN, nil
	}
	if !processAlive(shimPID, c.ID) {
		// The shim writes exit.json before it exits; it may have just done so.
		if err := readJSON(filepath.Join(s.containerDir(c.ID), "exit.json"), rec); err == nil {
			return runtimeapi.ContainerState_CONTAINER_EXITED, rec
		}
		return runtimeapi.ContainerState_CONTAINER_EXITED, &exitRecord{ExitCode: 255, Message: "the runtime shim ended without an exit status"}
	}
	if startedAt != 0 {
		return runtimeapi.ContainerState_CONTAINER_RUNNING, nil
	}
	return runtimeapi.ContainerState_CONTAINER_CREATED, nil
}

// CreateContainer prepares the rootfs and bundle and has a shim run
// `runc create`, so the container's process exists, stopped before exec.
func (s *Server) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	cfg := req.GetConfig()
	s.mu.Lock()
	sb := s.sandboxes[req.GetPodSandboxId()]
	s.mu.Unlock()
	if sb == nil {
		return nil, notFound("sandbox", req.GetPodSandboxId())
	}
	if !sb.Ready {
		return nil, status.Errorf(codes.FailedPrecondition, "sandbox %s is not ready", sb.ID)
	}
	if cfg.GetMetadata() == nil || cfg.GetImage().GetImage() == "" {
		return nil, status.Error(codes.InvalidArgument, "container config needs metadata and an image")
	}
	id := newID()
	c, err := s.createContainer(id, cfg, sb, req.GetSandboxConfig())
	if err != nil {
		s.cleanupContainer(id)
		return nil, fmt.Errorf("container %s in sandbox %s: %w", cfg.GetMetadata().GetName(), sb.ID, err)
	}
	s.mu.Lock()
	s.containers[id] = c
	s.mu.Unlock()
	return &runtimeapi.CreateContainerResponse{ContainerId: c.ID}, nil
}

func (s *Server) createContainer(id string, cfg *runtimeapi.ContainerConfig, sb *sandbox, sbCfg *runtimeapi.PodSandboxConfig) (*container, error) {
	if s.cfg.Images == nil {
		return nil, errors.New("no image store")
	}
	imageID, layers, img, err := s.cfg.Images.Resolve(cfg.GetImage().GetImage())
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", cfg.GetImage().GetImage(), err)
	}
	dir := s.containerDir(id)
	rootfs := filepath.Join(dir, "bundle", "rootfs")
	for _, d := range []string{rootfs, filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "empty")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// overlayfs wants the topmost lowerdir first; an image without layers
	// still needs one lowerdir.
	lower := make([]string, 0, len(layers)+1)
	for i := len(layers) - 1; i >= 0; i-- {
		lower = append(lower, layers[i])
	}
	if len(lower) == 0 {
		lower = append(lower, filepath.Join(dir, "empty"))
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lower, ":"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := unix.Mount("overlay", rootfs, "overlay", 0, opts); err != nil {
		return nil, fmt.Errorf("mount rootfs: %w", err)
	}
	spec, err := s.buildSpec(id, cfg, sb, img, layers)
	if err != nil {
		return nil, err
	}
	// The shim makes the terminal (over runc's console socket) for a tty
	// container, and keeps stdin for attach.
	spec.Process.Terminal = cfg.GetTty()
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "bundle", "config.json"), b, 0o600); err != nil {
		return nil, err
	}
	raw, err := proto.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	c := &container{ID: id, SandboxID: sb.ID, Config: raw, ImageID: imageID, Cgroup: spec.Linux.CgroupsPath, CreatedAt: time.Now().UnixNano(), StopSignal: "SIGTERM"}
	if sig := cfg.GetStopSignal(); sig != runtimeapi.Signal_RUNTIME_DEFAULT {
		c.StopSignal = sig.String()
	} else if img != nil && img.Config.StopSignal != "" {
		c.StopSignal = img.Config.StopSignal
	}
	if cfg.GetLogPath() != "" {
		c.LogPath = filepath.Join(sb.config().GetLogDirectory(), cfg.GetLogPath())
		if err := os.MkdirAll(filepath.Dir(c.LogPath), 0o755); err != nil {
			return nil, err
		}
	}
	if err := s.saveContainer(c); err != nil {
		return nil, err
	}
	pid, err := s.startShim(c)
	if err != nil {
		return nil, err
	}
	c.ShimPID = pid
	return c, s.saveContainer(c)
}

// startShim starts the container's shim and waits for its word on runc create.
func (s *Server) startShim(c *container) (int, error) {
	dir := s.containerDir(c.ID)
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	shimLog, err := os.OpenFile(filepath.Join(dir, "shim.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		w.Close()
		return 0, err
	}
	defer shimLog.Close()
	cmd := exec.Command(s.cfg.ShimBinary, "runtime-shim", "container",
		"--runc", s.runcArgv[0], "--root", s.runcRoot(), "--dir", dir, "--id", c.ID,
		"--log", c.LogPath, "--cgroup", c.Cgroup)
	if len(s.runcArgv) > 1 {
		cmd.Args = append(cmd.Args, "--builtin-runc")
	}
	if cfg := c.config(); cfg.GetStdin() || cfg.GetTty() {
		cmd.Args = append(cmd.Args, "--stdin="+strconv.FormatBool(cfg.GetStdin()),
			"--stdin-once="+strconv.FormatBool(cfg.GetStdinOnce()), "--tty="+strconv.FormatBool(cfg.GetTty()))
	}
	cmd.Stdout, cmd.Stderr = shimLog, shimLog
	cmd.ExtraFiles = []*os.File{w}
	cmd.Dir = dir
	// Its own session: signals to the runtime's process group (a ^C, a
	// service manager stopping the agent) do not reach the shim.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("start shim: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	msg, _ := io.ReadAll(r)
	if string(msg) != "ok" {
		if len(msg) == 0 {
			b, _ := os.ReadFile(filepath.Join(dir, "shim.log"))
			msg = bytes.TrimSpace(b)
		}
		return 0, errors.New(string(msg))
	}
	return cmd.Process.Pid, nil
}

// cleanupContainer removes what a failed or removed container left.
func (s *Server) cleanupContainer(id string) {
	dir := s.containerDir(id)
	_ = s.runc(context.Background(), nil, "delete", "--force", id)
	_ = unix.Unmount(filepath.Join(dir, "bundle", "rootfs"), unix.MNT_DETACH)
	_ = os.RemoveAll(dir)
}

// StartContainer runs the created container's process.
func (s *Server) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if st, _ := s.state(c); st != runtimeapi.ContainerState_CONTAINER_CREATED {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s is %s, not created", c.ID, st)
	}
	started := time.Now().UnixNano()
	err = s.runc(ctx, nil, "start", c.ID)
	s.markStartDone(c)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", c.ID, err)
	}
	s.mu.Lock()
	c.StartedAt = started
	s.mu.Unlock()
	if err := s.saveContainer(c); err != nil {
		return nil, fmt.Errorf("container %s: %w", c.ID, err)
	}
	return &runtimeapi.StartContainerResponse{}, nil
}

// markStartDone tells the shim that no `runc start` runs any more, so it may
// delete the runc container once the process has exited.
func (s *Server) markStartDone(c *container) {
	_ = os.WriteFile(filepath.Join(s.containerDir(c.ID), startDoneFile), nil, 0o600)
}

// runc runs one runc command against the runtime's state root. The
// built-in OCI runtime's run in this process: `navarch runc` would start
// the whole binary (some 50 ms of package initialisation) for what
// libcontainer does in about one.
func (s *Server) runc(ctx context.Context, stdin io.Reader, args ...string) error {
	if len(s.runcArgv) > 1 {
		if err := runBuiltin(s.runcRoot(), stdin, args); err != nil {
			return fmt.Errorf("runc %s: %w", args[0], err)
		}
		return nil
	}
	cmd := s.runcCommand(ctx, append([]string{"--root", s.runcRoot()}, args...)...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("runc %s: %w: %s", args[0], err, bytes.TrimSpace(out))
	}
	return nil
}

// runBuiltin is the built-in OCI runtime's answer to the runc commands the
// runtime runs itself.
func runBuiltin(root string, stdin io.Reader, args []string) error {
	switch {
	case len(args) == 2 && args[0] == "start":
		return libct.Start(root, args[1])
	case len(args) == 3 && args[0] == "kill":
		return libct.Kill(root, args[1], args[2])
	case len(args) == 3 && args[0] == "delete" && args[1] == "--force":
		return libct.Delete(root, args[2], true)
	case len(args) == 4 && args[0] == "update" && args[1] == "--resources" && args[2] == "-":
		var r specs.LinuxResources
		if err := json.NewDecoder(stdin).Decode(&r); err != nil {
			return fmt.Errorf("decode resources: %w", err)
		}
		return libct.Update(root, args[3], &r)
	}
	return fmt.Errorf("no built-in command for %q", args)
}

// runcCommand is a runc command line: args after the runtime's runcArgv.
func (s *Server) runcCommand(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, s.runcArgv[0], append(append([]string{}, s.runcArgv[1:]...), args...)...)
}

// StopContainer sends SIGTERM, then SIGKILL after the timeout (seconds).
func (s *Server) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if err := s.stopContainer(c, time.Duration(req.GetTimeout())*time.Second); err != nil {
		return nil, err
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

func (s *Server) stopContainer(c *container, grace time.Duration) error {
	st, _ := s.state(c)
	if st == runtimeapi.ContainerState_CONTAINER_EXITED || st == runtimeapi.ContainerState_CONTAINER_UNKNOWN {
		return nil
	}
	if st == runtimeapi.ContainerState_CONTAINER_RUNNING && grace > 0 {
		// An error here means the process is already gone; the wait tells.
		sig := c.StopSignal
		if sig == "" {
			sig = "SIGTERM"
		}
		_ = s.runc(context.Background(), nil, "kill", c.ID, sig)
		if s.waitExit(c, grace) {
			return nil
		}
	}
	if st == runtimeapi.ContainerState_CONTAINER_CREATED {
		s.markStartDone(c)
	}
	_ = s.runc(context.Background(), nil, "kill", c.ID, "KILL")
	if !s.waitExit(c, 10*time.Second) {
		return fmt.Errorf("container %s: still running 10s after SIGKILL", c.ID)
	}
	return nil
}

// waitExit polls for the container's exit for up to d. Polling the state
// files, rather than waiting on the shim, works the same for shims started
// by an earlier runtime process.
func (s *Server) waitExit(c *container, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if st, _ := s.state(c); st == runtimeapi.ContainerState_CONTAINER_EXITED {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RemoveContainer kills the container if it runs and removes all its files.
func (s *Server) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return &runtimeapi.RemoveContainerResponse{}, nil
		}
		return nil, err
	}
	if err := s.removeContainer(c); err != nil {
		return nil, err
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

func (s *Server) removeContainer(c *container) error {
	if err := s.stopContainer(c, 0); err != nil {
		return err
	}
	// The shim deletes the runc container before it writes exit.json; wait
	// for it to finish so nothing of it outlives the record.
	for i := 0; i < 250 && processAlive(c.ShimPID, c.ID); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	s.cleanupContainer(c.ID)
	s.mu.Lock()
	delete(s.containers, c.ID)
	s.mu.Unlock()
	return nil
}

func (s *Server) criStatus(c *container) *runtimeapi.ContainerStatus {
	cfg := c.config()
	st, rec := s.state(c)
	s.mu.Lock()
	startedAt, res := c.StartedAt, c.resources()
	s.mu.Unlock()
	out := &runtimeapi.ContainerStatus{
		Id: c.ID, Metadata: cfg.GetMetadata(), State: st,
		CreatedAt: c.CreatedAt, StartedAt: startedAt,
		Image: cfg.GetImage(), ImageRef: c.ImageID, ImageId: c.ImageID,
		Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(),
		Mounts: cfg.GetMounts(), LogPath: c.LogPath,
	}
	if v, ok := runtimeapi.Signal_value[c.StopSignal]; ok {
		out.StopSignal = runtimeapi.Signal(v)
	}
	if res != nil {
		out.Resources = &runtimeapi.ContainerResources{Linux: res}
	}
	if rec != nil {
		out.ExitCode, out.FinishedAt, out.Message = rec.ExitCode, rec.FinishedAt, rec.Message
		switch {
		case rec.OOMKilled:
			out.Reason = "OOMKilled"
		case rec.ExitCode == 0:
			out.Reason = "Completed"
		default:
			out.Reason = "Error"
		}
	}
	return out
}

func (c *container) resources() *runtimeapi.LinuxContainerResources {
	if c.Resources != nil {
		r := &runtimeapi.LinuxContainerResources{}
		if proto.Unmarshal(c.Resources, r) == nil {
			return r
		}
	}
	return c.config().GetLinux().GetResources()
}

// ContainerStatus reports one container.
func (s *Server) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatusResponse{Status: s.criStatus(c)}, nil
}

// containersOf snapshots the containers with id and in sandbox ("" for any).
func (s *Server) containersOf(id, sandbox string) []*container {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*container
	for _, c := range s.containers {
		if (id == "" || id == c.ID) && (sandbox == "" || sandbox == c.SandboxID) {
			out = append(out, c)
		}
	}
	return out
}

// ListContainers lists containers matching the filter.
func (s *Server) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f := req.GetFilter()
	var out []*runtimeapi.Container
	for _, c := range s.containersOf(f.GetId(), f.GetPodSandboxId()) {
		// Labels are in the stored config: filter on them before working
		// out the state, which reads files and asks whether the shim lives.
		if sel := f.GetLabelSelector(); len(sel) > 0 && !matchLabels(sel, c.config().GetLabels()) {
			continue
		}
		st := s.criStatus(c)
		if f.GetState() != nil && f.GetState().GetState() != st.State {
			continue
		}
		out = append(out, &runtimeapi.Container{
			Id: c.ID, PodSandboxId: c.SandboxID, Metadata: st.Metadata, Image: st.Image,
			ImageRef: st.ImageRef, ImageId: st.ImageId, State: st.State, CreatedAt: c.CreatedAt,
			Labels: st.Labels, Annotations: st.Annotations,
		})
	}
	return &runtimeapi.ListContainersResponse{Containers: out}, nil
}

// UpdateContainerResources changes a running container's cgroup limits.
func (s *Server) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	r := req.GetLinux()
	if r == nil {
		return &runtimeapi.UpdateContainerResourcesResponse{}, nil
	}
	if st, _ := s.state(c); st == runtimeapi.ContainerState_CONTAINER_RUNNING || st == runtimeapi.ContainerState_CONTAINER_CREATED {
		b, err := json.Marshal(linuxResources(r))
		if err != nil {
			return nil, err
		}
		if err := s.runc(ctx, bytes.NewReader(b), "update", "--resources", "-", c.ID); err != nil {
			return nil, fmt.Errorf("container %s: %w", c.ID, err)
		}
	}
	raw, err := proto.Marshal(r)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	c.Resources = raw
	s.mu.Unlock()
	if err := s.saveContainer(c); err != nil {
		return nil, fmt.Errorf("container %s: %w", c.ID, err)
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}

// ReopenContainerLog has the shim start a new log file at the same path,
// after the kubelet has rotated the old one away.
func (s *Server) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if st, _ := s.state(c); st != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s is not running", c.ID)
	}
	if err := unix.Kill(c.ShimPID, unix.SIGUSR1); err != nil {
		return nil, fmt.Errorf("container %s: signal shim: %w", c.ID, err)
	}
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(c.LogPath); err == nil {
			return &runtimeapi.ReopenContainerLogResponse{}, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, fmt.Errorf("container %s: log %s not reopened", c.ID, c.LogPath)
}

// ExecSync runs a command in the container with `runc exec` and returns its
// output and exit code; on timeout the command is killed.
func (s *Server) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if st, _ := s.state(c); st != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s is not running", c.ID)
	}
	if len(req.GetCmd()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "exec needs a command")
	}
	pidFile := filepath.Join(s.containerDir(c.ID), "exec-"+newID()[:12]+".pid")
	defer os.Remove(pidFile)
	if len(s.runcArgv) > 1 {
		return s.execSyncBuiltin(ctx, c, req, pidFile)
	}
	args := append([]string{"--root", s.runcRoot(), "exec", "--pid-file", pidFile, c.ID}, req.GetCmd()...)
	cmd := s.runcCommand(context.Background(), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("container %s: exec: %w", c.ID, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited, err := awaitExec(ctx, c, req, pidFile, done)
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ExecSyncResponse{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	var ee *exec.ExitError
	switch {
	case exited == nil:
	case errors.As(exited, &ee):
		resp.ExitCode = int32(ee.ExitCode())
	default:
		return nil, fmt.Errorf("container %s: exec: %w", c.ID, exited)
	}
	return resp, nil
}

// execSyncBuiltin is ExecSync with the built-in OCI runtime, run in this
// process (see Server.runc); the command's process still starts the binary
// once, as libcontainer's init. Like `runc exec`, a command that cannot
// start exits 255 with the error on its stderr.
func (s *Server) execSyncBuiltin(ctx context.Context, c *container, req *runtimeapi.ExecSyncRequest, pidFile string) (*runtimeapi.ExecSyncResponse, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("container %s: exec: %w", c.ID, err)
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		outW.Close()
		return nil, fmt.Errorf("container %s: exec: %w", c.ID, err)
	}
	defer errR.Close()
	var stdout, stderr bytes.Buffer
	var copying sync.WaitGroup
	for _, o := range []struct {
		w *bytes.Buffer
		r *os.File
	}{{&stdout, outR}, {&stderr, errR}} {
		copying.Add(1)
		go func() { defer copying.Done(); _, _ = io.Copy(o.w, o.r) }()
	}
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := libct.Run(s.runcRoot(), c.ID, req.GetCmd(), outW, errW, pidFile)
		outW.Close()
		errW.Close()
		done <- result{code, err}
	}()
	r, err := awaitExec(ctx, c, req, pidFile, done)
	if err != nil {
		return nil, err
	}
	// A process the command left behind may hold the pipes open.
	copied := make(chan struct{})
	go func() { copying.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-time.After(outputGrace):
		outR.Close()
		errR.Close()
		<-copied
	}
	if r.err != nil {
		fmt.Fprintf(&stderr, "exec failed: %v\n", r.err)
		r.code = 255
	}
	return &runtimeapi.ExecSyncResponse{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), ExitCode: int32(r.code)}, nil
}

// awaitExec waits for an ExecSync command's result on done; when the
// request's timeout passes or ctx ends first, it kills the command (through
// its pid file), waits for it to go and returns the error instead.
func awaitExec[T any](ctx context.Context, c *container, req *runtimeapi.ExecSyncRequest, pidFile string, done <-chan T) (T, error) {
	var timeout <-chan time.Time
	if req.GetTimeout() > 0 {
		t := time.NewTimer(time.Duration(req.GetTimeout()) * time.Second)
		defer t.Stop()
		timeout = t.C
	}
	var zero T
	select {
	case r := <-done:
		return r, nil
	case <-timeout:
		killExec(pidFile)
		<-done
		return zero, status.Errorf(codes.DeadlineExceeded, "command %q in container %s timed out after %ds", req.GetCmd(), c.ID, req.GetTimeout())
	case <-ctx.Done():
		killExec(pidFile)
		<-done
		return zero, ctx.Err()
	}
}

// killExec kills the process runc exec started inside the container; killing
// runc exec alone would leave it running.
func killExec(pidFile string) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

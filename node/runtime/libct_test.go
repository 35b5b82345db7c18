package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A runtime switched from the runc binary to the built-in OCI runtime (an
// agent upgraded in place) re-adopts what runc started: it execs in it,
// stops it and removes it through libcontainer.
func TestBuiltinAdoptsRuncContainers(t *testing.T) {
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("needs the runc binary in PATH")
	}
	ociRuntime := "runc"
	e := newEnvWith(t, func(c *Config) { c.Runc = ociRuntime })
	cfg := e.podConfig("switch")
	sb := e.runPod(cfg)
	id := e.run(sb, cfg, ctrConfig("sleeper", "sleep", "300"))
	e.stopServer()
	ociRuntime = ""
	e.start()
	if got := e.mustExec(id, "hostname"); got != "switch" {
		t.Errorf("exec after the switch: hostname %q", got)
	}
	ctx := context.Background()
	if _, err := e.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	if st := e.status(id); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || (st.ExitCode != 143 && st.ExitCode != 137) {
		t.Errorf("stop after the switch: %s exit %d", st.State, st.ExitCode)
	}
	if _, err := e.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.state, "runc", id)); !os.IsNotExist(err) {
		t.Errorf("runc state of %s after remove: %v", id, err)
	}
}

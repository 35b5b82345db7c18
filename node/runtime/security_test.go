package runtime

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// logLines is the messages of a container's CRI log, one a line.
func logLines(t *testing.T, st *runtimeapi.ContainerStatus) []string {
	t.Helper()
	b, err := os.ReadFile(st.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if m := criLine.FindStringSubmatch(line); m != nil {
			out = append(out, m[3])
		}
	}
	return out
}

// statusFields picks fields of /proc/self/status out of a container's output.
func statusFields(lines []string, names ...string) map[string]string {
	out := map[string]string{}
	for _, l := range lines {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		for _, n := range names {
			if k == n {
				out[k] = strings.TrimSpace(v)
			}
		}
	}
	return out
}

// TestSecurityContext runs containers with the CRI's security settings and
// reads back what the kernel applied.
func TestSecurityContext(t *testing.T) {
	e := newEnv(t)
	cfg := e.podConfig("secure")
	sb := e.runPod(cfg)
	probe := "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; unshare -U true 2>/dev/null && echo userns=yes || echo userns=no"
	run := func(name string, sc *runtimeapi.LinuxContainerSecurityContext) map[string]string {
		t.Helper()
		c := ctrConfig(name, "sh", "-c", probe)
		c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: sc}
		st := e.waitExited(e.run(sb, cfg, c))
		lines := logLines(t, st)
		got := statusFields(lines, "CapEff", "NoNewPrivs", "Seccomp")
		for _, l := range lines {
			if v, ok := strings.CutPrefix(l, "userns="); ok {
				got["userns"] = v
			}
		}
		return got
	}

	// No profile and Unconfined: no filter; a user namespace may be made
	// (where the kernel lets anyone make one).
	userns := "yes"
	if exec.Command("/bin/busybox", "unshare", "-U", "true").Run() != nil {
		userns = "no"
	}
	for name, sc := range map[string]*runtimeapi.LinuxContainerSecurityContext{
		"none":       {},
		"unconfined": {Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}},
	} {
		if got := run(name, sc); got["Seccomp"] != "0" || got["NoNewPrivs"] != "0" || got["userns"] != userns {
			t.Errorf("%s: %v, want Seccomp 0, NoNewPrivs 0, userns %s", name, got, userns)
		}
	}
	// RuntimeDefault: a filter (mode 2) that refuses unshare without
	// CAP_SYS_ADMIN, as Docker's and containerd's default profile.
	rd := &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	if got := run("default", &runtimeapi.LinuxContainerSecurityContext{Seccomp: rd}); got["Seccomp"] != "2" || got["userns"] != "no" {
		t.Errorf("RuntimeDefault: %v, want Seccomp 2, userns no", got)
	}
	// A privileged container runs unfiltered even when it asks for the
	// default profile, as under containerd.
	if got := run("privileged", &runtimeapi.LinuxContainerSecurityContext{Privileged: true, Seccomp: rd}); got["Seccomp"] != "0" {
		t.Errorf("privileged with RuntimeDefault: %v, want Seccomp 0", got)
	}
	// noNewPrivs (allowPrivilegeEscalation: false), capabilities dropped and
	// one added back: CapEff is exactly CAP_NET_ADMIN (bit 12).
	got := run("caps", &runtimeapi.LinuxContainerSecurityContext{NoNewPrivs: true, Seccomp: rd,
		Capabilities: &runtimeapi.Capability{DropCapabilities: []string{"ALL"}, AddCapabilities: []string{"NET_ADMIN"}}})
	if got["NoNewPrivs"] != "1" || got["CapEff"] != "0000000000001000" || got["Seccomp"] != "2" {
		t.Errorf("noNewPrivs, drop ALL, add NET_ADMIN: %v", got)
	}
	// Dropping one capability of the default set removes just it
	// (CAP_NET_RAW, bit 13, from containerd's 00000000a80425fb).
	if got := run("dropraw", &runtimeapi.LinuxContainerSecurityContext{Capabilities: &runtimeapi.Capability{DropCapabilities: []string{"NET_RAW"}}}); got["CapEff"] != "00000000a80405fb" {
		t.Errorf("drop NET_RAW: CapEff %s, want 00000000a80405fb", got["CapEff"])
	}
	// A Localhost profile that is missing refuses the container.
	c := ctrConfig("missing-profile", "true")
	c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: filepath.Join(t.TempDir(), "nope.json")}}}
	if _, err := e.rt.CreateContainer(t.Context(), &runtimeapi.CreateContainerRequest{PodSandboxId: sb, Config: c, SandboxConfig: cfg}); err == nil || !strings.Contains(err.Error(), "seccomp profile") {
		t.Errorf("missing Localhost profile: %v", err)
	}
	// A Localhost profile in Docker's format is applied: this one allows
	// everything but mkdir, which fails with EPERM.
	prof := filepath.Join(t.TempDir(), "nomkdir.json")
	if err := os.WriteFile(prof, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c = ctrConfig("localhost-profile", "sh", "-c", "mkdir /tmp/d 2>/dev/null && echo made || echo refused")
	c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: prof}}}
	if out := logLines(t, e.waitExited(e.run(sb, cfg, c))); strings.Join(out, "|") != "refused" {
		t.Errorf("Localhost profile without mkdir: %q", out)
	}

	// runAsUser, runAsGroup and supplemental groups; a read-only root.
	c = ctrConfig("ids", "sh", "-c", "id; touch /x 2>/dev/null && echo rw || echo ro; touch /tmp/x && echo tmp-rw")
	c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		RunAsUser: &runtimeapi.Int64Value{Value: 1234}, RunAsGroup: &runtimeapi.Int64Value{Value: 5678},
		SupplementalGroups: []int64{4000, 4001}, ReadonlyRootfs: true}}
	c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/tmp", HostPath: t.TempDir()}}
	if err := os.Chmod(c.Mounts[0].HostPath, 0o777); err != nil {
		t.Fatal(err)
	}
	out := logLines(t, e.waitExited(e.run(sb, cfg, c)))
	if want := []string{"uid=1234 gid=5678 groups=4000,4001", "ro", "tmp-rw"}; strings.Join(out, "|") != strings.Join(want, "|") {
		t.Errorf("ids and read-only root: %q, want %q", out, want)
	}
}

// TestHostNamespacesAndOOMScore checks hostPID and hostIPC (hostNetwork is
// TestNetworkHookAndHostNetwork's), the oom_score_adj asked for, and that a
// sandbox's cgroup parent places its containers.
func TestHostNamespacesAndOOMScore(t *testing.T) {
	e := newEnv(t)
	cfg := e.podConfig("host")
	cfg.Linux = &runtimeapi.LinuxPodSandboxConfig{
		CgroupParent: filepath.Join(e.cgroupParent, "kubepods", "podhost"),
		SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
			Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE}},
	}
	sb := e.runPod(cfg)
	c := ctrConfig("main", "sleep", "300")
	c.Linux = &runtimeapi.LinuxContainerConfig{
		SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: cfg.Linux.SecurityContext.NamespaceOptions},
		Resources:       &runtimeapi.LinuxContainerResources{OomScoreAdj: 1000},
	}
	id := e.run(sb, cfg, c)
	for _, ns := range []string{"pid", "ipc"} {
		host, _ := os.Readlink("/proc/self/ns/" + ns)
		if got := e.mustExec(id, "readlink", "/proc/self/ns/"+ns); got != host {
			t.Errorf("%s namespace %s, want the host's %s", ns, got, host)
		}
	}
	if got := e.mustExec(id, "cat", "/proc/self/oom_score_adj"); got != "1000" {
		t.Errorf("oom_score_adj %s, want 1000", got)
	}
	if got := e.mustExec(id, "grep", "memory", "/proc/self/cgroup"); !strings.HasSuffix(got, ":"+filepath.Join(cfg.Linux.CgroupParent, id)) {
		t.Errorf("memory cgroup %q, want under the sandbox's parent %s", got, cfg.Linux.CgroupParent)
	}
	// The sandbox's stats are its cgroup parent's.
	stats, err := e.rt.PodSandboxStats(t.Context(), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: sb})
	if err != nil {
		t.Fatal(err)
	}
	if l := stats.Stats.GetLinux(); l.GetMemory().GetUsageBytes().GetValue() == 0 || l.GetProcess().GetProcessCount().GetValue() != 1 || len(l.GetContainers()) != 1 {
		t.Errorf("sandbox stats %v, want memory use, 1 process, 1 container", l)
	}
	// A score below the runtime's own needs CAP_SYS_RESOURCE; without it the
	// container gets the runtime's score rather than failing to start.
	own, _ := os.ReadFile("/proc/self/oom_score_adj")
	want := strings.TrimSpace(string(own))
	if hasCap("CAP_SYS_RESOURCE") {
		want = "-997"
	}
	g := ctrConfig("guaranteed", "cat", "/proc/self/oom_score_adj")
	g.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{OomScoreAdj: -997}}
	if out := logLines(t, e.waitExited(e.run(sb, cfg, g))); len(out) != 1 || out[0] != want {
		t.Errorf("oom_score_adj asked -997: %q, want %s", out, want)
	}
	// Removing the sandbox removes the containers' cgroups: the parent,
	// the kubelet's to remove, is then empty in every hierarchy.
	if _, err := e.rt.RemovePodSandbox(t.Context(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb}); err != nil {
		t.Fatal(err)
	}
	for _, h := range cgroupHierarchies() {
		for _, d := range []string{filepath.Join(h, cfg.Linux.CgroupParent), filepath.Join(h, e.cgroupParent, "kubepods")} {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				t.Errorf("cgroup %s: %v", d, err)
			}
		}
	}
}

func hasCap(name string) bool {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			mask, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			for i, c := range allCapabilities {
				if c == name {
					return mask&(1<<i) != 0
				}
			}
		}
	}
	return false
}

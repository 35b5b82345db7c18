package runtime

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// defaultCapabilities is the set containerd gives an unprivileged container.
var defaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// allCapabilities is every capability runc 1.1 knows, for privileged
// containers and "ALL".
var allCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

var defaultMaskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
	"/sys/firmware", "/sys/devices/virtual/powercap",
}

var defaultReadonlyPaths = []string{
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
}

// processArgs applies Kubernetes' rule: command replaces the image's
// entrypoint, args replace its cmd, and a command without args drops the
// image's cmd.
func processArgs(cfg *runtimeapi.ContainerConfig, img v1.Config) []string {
	entrypoint, cmd := img.Entrypoint, img.Cmd
	if len(cfg.GetCommand()) > 0 {
		entrypoint, cmd = cfg.GetCommand(), nil
	}
	if len(cfg.GetArgs()) > 0 {
		cmd = cfg.GetArgs()
	}
	return append(append([]string{}, entrypoint...), cmd...)
}

// processEnv is the image's environment overridden by the container's.
func processEnv(cfg *runtimeapi.ContainerConfig, img v1.Config) []string {
	var keys []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	for _, kv := range img.Env {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	for _, kv := range cfg.GetEnvs() {
		set(kv.GetKey(), string(kv.GetValue()))
	}
	if _, ok := vals["PATH"]; !ok {
		set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+vals[k])
	}
	return out
}

// resolveUser picks uid and gid from the security context, else the image's
// User, looking names up in the image's /etc/passwd and /etc/group.
func resolveUser(sc *runtimeapi.LinuxContainerSecurityContext, imgUser string, layers []string) (specs.User, error) {
	u := specs.User{}
	userPart, groupPart, _ := strings.Cut(imgUser, ":")
	if sc.GetRunAsUsername() != "" {
		userPart, groupPart = sc.GetRunAsUsername(), ""
	}
	gidKnown := false
	if sc.GetRunAsUser() != nil {
		u.UID = uint32(sc.GetRunAsUser().GetValue())
		// The primary group still comes from passwd for a known uid.
		if e, ok := lookupEtc(layers, "passwd", strconv.Itoa(int(u.UID)), 2); ok && len(e) > 3 {
			if g, err := strconv.Atoi(e[3]); err == nil {
				u.GID, gidKnown = uint32(g), true
			}
		}
	} else if userPart != "" {
		if n, err := strconv.Atoi(userPart); err == nil {
			u.UID = uint32(n)
			if e, ok := lookupEtc(layers, "passwd", userPart, 2); ok && len(e) > 3 {
				if g, err := strconv.Atoi(e[3]); err == nil {
					u.GID, gidKnown = uint32(g), true
				}
			}
		} else {
			e, ok := lookupEtc(layers, "passwd", userPart, 0)
			if !ok || len(e) < 4 {
				return u, fmt.Errorf("user %q not found in the image's /etc/passwd", userPart)
			}
			uid, _ := strconv.Atoi(e[2])
			gid, _ := strconv.Atoi(e[3])
			u.UID, u.GID, gidKnown = uint32(uid), uint32(gid), true
		}
	}
	if groupPart != "" && sc.GetRunAsGroup() == nil {
		if n, err := strconv.Atoi(groupPart); err == nil {
			u.GID = uint32(n)
		} else if e, ok := lookupEtc(layers, "group", groupPart, 0); ok && len(e) > 2 {
			gid, _ := strconv.Atoi(e[2])
			u.GID = uint32(gid)
		} else {
			return u, fmt.Errorf("group %q not found in the image's /etc/group", groupPart)
		}
	}
	if sc.GetRunAsGroup() != nil {
		u.GID = uint32(sc.GetRunAsGroup().GetValue())
	} else if !gidKnown && groupPart == "" {
		u.GID = 0
	}
	for _, g := range sc.GetSupplementalGroups() {
		u.AdditionalGids = append(u.AdditionalGids, uint32(g))
	}
	return u, nil
}

// lookupEtc finds the line of /etc/<file> whose field col equals key, in the
// topmost layer that has the file.
func lookupEtc(layers []string, file, key string, col int) ([]string, bool) {
	for i := len(layers) - 1; i >= 0; i-- {
		f, err := os.Open(filepath.Join(layers[i], "etc", file))
		if err != nil {
			continue
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Split(sc.Text(), ":")
			if len(fields) > col && fields[col] == key {
				return fields, true
			}
		}
		return nil, false
	}
	return nil, false
}

func capName(c string) string {
	c = strings.ToUpper(c)
	if c == "ALL" || strings.HasPrefix(c, "CAP_") {
		return c
	}
	return "CAP_" + c
}

// hostCapabilities is the part of allCapabilities in this process's bounding
// set: a privileged container gets what the runtime has, and runc refuses
// more (this machine, for one, lacks CAP_SYS_RESOURCE).
func hostCapabilities() []string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return allCapabilities
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				break
			}
			var out []string
			for i, c := range allCapabilities {
				if mask&(1<<i) != 0 {
					out = append(out, c)
				}
			}
			return out
		}
	}
	return allCapabilities
}

// capabilities applies add and drop to the default set, within host, the
// capabilities the runtime itself holds, in containerd's order: an "ALL"
// add, an "ALL" drop, then the single adds, then the single drops, so that
// drop ALL with add NET_ADMIN leaves just NET_ADMIN.
func capabilities(sc *runtimeapi.LinuxContainerSecurityContext, host []string) []string {
	if sc.GetPrivileged() {
		return host
	}
	set := map[string]bool{}
	for _, c := range defaultCapabilities {
		set[c] = true
	}
	add, drop := sc.GetCapabilities().GetAddCapabilities(), sc.GetCapabilities().GetDropCapabilities()
	for _, c := range add {
		if capName(c) == "ALL" {
			for _, a := range host {
				set[a] = true
			}
		}
	}
	for _, c := range drop {
		if capName(c) == "ALL" {
			set = map[string]bool{}
		}
	}
	for _, c := range add {
		if c = capName(c); c != "ALL" {
			set[c] = true
		}
	}
	for _, c := range drop {
		delete(set, capName(c))
	}
	var out []string
	for _, c := range host {
		if set[c] {
			out = append(out, c)
		}
	}
	return out
}

// linuxResources converts CRI resources to OCI ones.
func linuxResources(r *runtimeapi.LinuxContainerResources) *specs.LinuxResources {
	out := &specs.LinuxResources{}
	if r == nil {
		return out
	}
	cpu := &specs.LinuxCPU{Cpus: r.GetCpusetCpus(), Mems: r.GetCpusetMems()}
	if r.GetCpuShares() > 0 {
		v := uint64(r.GetCpuShares())
		cpu.Shares = &v
	}
	if r.GetCpuQuota() > 0 {
		v := r.GetCpuQuota()
		cpu.Quota = &v
	}
	if r.GetCpuPeriod() > 0 {
		v := uint64(r.GetCpuPeriod())
		cpu.Period = &v
	}
	out.CPU = cpu
	if r.GetMemoryLimitInBytes() > 0 {
		v := r.GetMemoryLimitInBytes()
		out.Memory = &specs.LinuxMemory{Limit: &v}
		if r.GetMemorySwapLimitInBytes() > 0 {
			sw := r.GetMemorySwapLimitInBytes()
			out.Memory.Swap = &sw
		}
	}
	if v, ok := r.GetUnified()["pids.max"]; ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			out.Pids = &specs.LinuxPids{Limit: n}
		}
	}
	for _, h := range r.GetHugepageLimits() {
		out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	return out
}

// ociVersion is the runtime-spec version the configs claim: 1.1, as they
// use nothing newer, and crun before 1.9 (Debian 12's 1.8) rejects 1.2.
const ociVersion = "1.1.0"

// buildSpec makes the OCI config of a container in sandbox sb.
func (s *Server) buildSpec(id string, cfg *runtimeapi.ContainerConfig, sb *sandbox, img *v1.ConfigFile, layers []string) (*specs.Spec, error) {
	sbCfg := sb.config()
	sc := cfg.GetLinux().GetSecurityContext()
	imgCfg := v1.Config{}
	if img != nil {
		imgCfg = img.Config
	}
	args := processArgs(cfg, imgCfg)
	if len(args) == 0 {
		return nil, fmt.Errorf("no command: neither the container nor its image names one")
	}
	user, err := resolveUser(sc, imgCfg.User, layers)
	if err != nil {
		return nil, err
	}
	cwd := cfg.GetWorkingDir()
	if cwd == "" {
		cwd = imgCfg.WorkingDir
	}
	if cwd == "" {
		cwd = "/"
	}
	caps := capabilities(sc, s.hostCaps)
	spec := &specs.Spec{
		Version: ociVersion,
		Root:    &specs.Root{Path: "rootfs", Readonly: sc.GetReadonlyRootfs()},
		Process: &specs.Process{
			Args: args, Env: processEnv(cfg, imgCfg), Cwd: cwd, User: user,
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
			NoNewPrivileges: sc.GetNoNewPrivs(),
		},
		Annotations: cfg.GetAnnotations(),
	}
	if oom := s.oomScoreAdj(cfg.GetLinux().GetResources().GetOomScoreAdj()); oom != 0 {
		spec.Process.OOMScoreAdj = &oom
	}

	ns := nsOptions(sbCfg)
	cns := sc.GetNamespaceOptions()
	if cns == nil {
		cns = ns
	}
	linux := &specs.Linux{
		CgroupsPath: s.cgroupPath(sbCfg, id),
		Resources:   linuxResources(cfg.GetLinux().GetResources()),
		Sysctl:      sbCfg.GetLinux().GetSysctls(),
		Namespaces:  []specs.LinuxNamespace{{Type: specs.MountNamespace}},
	}
	if sb.NetNS != "" {
		linux.Namespaces = append(linux.Namespaces,
			specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: sb.NetNS},
			specs.LinuxNamespace{Type: specs.UTSNamespace, Path: sb.UTSNS})
	}
	if sb.IPCNS != "" {
		linux.Namespaces = append(linux.Namespaces, specs.LinuxNamespace{Type: specs.IPCNamespace, Path: sb.IPCNS})
	}
	switch cns.GetPid() {
	case runtimeapi.NamespaceMode_NODE:
	case runtimeapi.NamespaceMode_POD:
		if sb.PausePID == 0 {
			return nil, fmt.Errorf("sandbox %s does not share a PID namespace", sb.ID)
		}
		linux.Namespaces = append(linux.Namespaces, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: fmt.Sprintf("/proc/%d/ns/pid", sb.PausePID)})
	default:
		linux.Namespaces = append(linux.Namespaces, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	if linux.Resources.Pids == nil && s.cfg.PidsLimit > 0 {
		linux.Resources.Pids = &specs.LinuxPids{Limit: s.cfg.PidsLimit}
	}
	if sc.GetPrivileged() {
		linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	} else {
		linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}
		linux.MaskedPaths = defaultMaskedPaths
		linux.ReadonlyPaths = defaultReadonlyPaths
		if len(sc.GetMaskedPaths()) > 0 {
			linux.MaskedPaths = sc.GetMaskedPaths()
		}
		if len(sc.GetReadonlyPaths()) > 0 {
			linux.ReadonlyPaths = sc.GetReadonlyPaths()
		}
	}
	for _, d := range cfg.GetDevices() {
		dev, rule, err := hostDevice(d)
		if err != nil {
			return nil, err
		}
		linux.Devices = append(linux.Devices, dev)
		linux.Resources.Devices = append(linux.Resources.Devices, rule)
	}
	spec.Linux = linux
	// After the capabilities: the default profile allows the system calls
	// they grant (CAP_SYS_ADMIN's mount, for one).
	if linux.Seccomp, err = seccompProfile(sc, spec); err != nil {
		return nil, err
	}

	sysOpts := []string{"nosuid", "noexec", "nodev", "ro"}
	if sc.GetPrivileged() {
		sysOpts[3] = "rw"
	}
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: sysOpts},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
	}
	shm := sb.Shm
	if shm == "" {
		shm = "/dev/shm"
	}
	mounts = append(mounts, specs.Mount{Destination: "/dev/shm", Type: "bind", Source: shm, Options: []string{"rbind", "rprivate", "rw"}})
	wanted := map[string]bool{}
	for _, m := range cfg.GetMounts() {
		wanted[filepath.Clean(m.GetContainerPath())] = true
	}
	dir := s.sandboxDir(sb.ID)
	for _, f := range []string{"hostname", "hosts", "resolv.conf"} {
		if !wanted["/etc/"+f] {
			mounts = append(mounts, specs.Mount{Destination: "/etc/" + f, Type: "bind", Source: filepath.Join(dir, f), Options: []string{"rbind", "rprivate", "rw"}})
		}
	}
	for _, m := range cfg.GetMounts() {
		opts := []string{"rbind"}
		switch m.GetPropagation() {
		case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			opts = append(opts, "rshared")
		case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
			opts = append(opts, "rslave")
		default:
			opts = append(opts, "rprivate")
		}
		if m.GetReadonly() {
			opts = append(opts, "ro")
		} else {
			opts = append(opts, "rw")
		}
		mounts = append(mounts, specs.Mount{Destination: m.GetContainerPath(), Type: "bind", Source: m.GetHostPath(), Options: opts})
	}
	spec.Mounts = mounts
	return spec, nil
}

// cgroupPath places a container under the sandbox's cgroup parent (the
// kubelet's pod cgroup) or, without one, under the runtime's own parent.
func (s *Server) cgroupPath(sbCfg *runtimeapi.PodSandboxConfig, id string) string {
	parent := sbCfg.GetLinux().GetCgroupParent()
	if parent == "" {
		parent = s.cfg.CgroupParent
	}
	return filepath.Join("/", parent, id)
}

// hostDevice makes a CRI device (a host device node) into an OCI device and
// the cgroup rule that allows it.
func hostDevice(d *runtimeapi.Device) (specs.LinuxDevice, specs.LinuxDeviceCgroup, error) {
	var st unix.Stat_t
	if err := unix.Stat(d.GetHostPath(), &st); err != nil {
		return specs.LinuxDevice{}, specs.LinuxDeviceCgroup{}, fmt.Errorf("device %s: %w", d.GetHostPath(), err)
	}
	typ := ""
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		typ = "c"
	case unix.S_IFBLK:
		typ = "b"
	default:
		return specs.LinuxDevice{}, specs.LinuxDeviceCgroup{}, fmt.Errorf("device %s: not a device node", d.GetHostPath())
	}
	major, minor := int64(unix.Major(uint64(st.Rdev))), int64(unix.Minor(uint64(st.Rdev)))
	mode := os.FileMode(st.Mode & 0o777)
	uid, gid := st.Uid, st.Gid
	perms := d.GetPermissions()
	if perms == "" {
		perms = "rwm"
	}
	dev := specs.LinuxDevice{Path: d.GetContainerPath(), Type: typ, Major: major, Minor: minor, FileMode: &mode, UID: &uid, GID: &gid}
	return dev, specs.LinuxDeviceCgroup{Allow: true, Type: typ, Major: &major, Minor: &minor, Access: perms}, nil
}

// seccompProfile is the container's seccomp filter: RuntimeDefault is the
// default profile of Docker and containerd (moby/profiles), Localhost a
// profile file in that same JSON format, Unconfined or none no filter. A
// privileged container runs unfiltered whatever it asks, as containerd's.
func seccompProfile(sc *runtimeapi.LinuxContainerSecurityContext, spec *specs.Spec) (*specs.LinuxSeccomp, error) {
	p := sc.GetSeccomp()
	if sc.GetPrivileged() || p == nil {
		return nil, nil
	}
	switch p.GetProfileType() {
	case runtimeapi.SecurityProfile_RuntimeDefault:
		prof, err := seccomp.GetDefaultProfile(spec)
		if err != nil {
			return nil, fmt.Errorf("default seccomp profile: %w", err)
		}
		return prof, nil
	case runtimeapi.SecurityProfile_Localhost:
		b, err := os.ReadFile(p.GetLocalhostRef())
		if err != nil {
			return nil, fmt.Errorf("seccomp profile: %w", err)
		}
		prof, err := seccomp.LoadProfile(string(b), spec)
		if err != nil {
			return nil, fmt.Errorf("seccomp profile %s: %w", p.GetLocalhostRef(), err)
		}
		return prof, nil
	}
	return nil, nil
}

// oomScoreAdj is the container's oom_score_adj. Lowering a score below the
// runtime's own needs CAP_SYS_RESOURCE; without it (this VM, some nested
// containers) runc would fail, so the score is raised to the runtime's own,
// as containerd's restrict_oom_score_adj does.
func (s *Server) oomScoreAdj(want int64) int {
	for _, c := range s.hostCaps {
		if c == "CAP_SYS_RESOURCE" {
			return int(want)
		}
	}
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return int(want)
	}
	own, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return int(want)
	}
	return max(int(want), own)
}

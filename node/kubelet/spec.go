package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// This file turns a pod into the CRI's sandbox and container configs.

// minGracePeriod is upstream's floor on a container's stop timeout, so that
// even a force deletion gives SIGTERM a moment.
const minGracePeriod = 2

func (k *Kubelet) logDir(pod *corev1.Pod) string {
	return filepath.Join(k.podDir(pod.UID), "logs")
}

func podLabels(pod *corev1.Pod) map[string]string {
	l := map[string]string{}
	for k, v := range pod.Labels {
		l[k] = v
	}
	l[labelPodUID], l[labelPodName], l[labelPodNamespace] = string(pod.UID), pod.Name, pod.Namespace
	return l
}

func namespaceOptions(pod *corev1.Pod) *runtimeapi.NamespaceOption {
	o := &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD}
	if pod.Spec.HostNetwork {
		o.Network = runtimeapi.NamespaceMode_NODE
	}
	if pod.Spec.HostIPC {
		o.Ipc = runtimeapi.NamespaceMode_NODE
	}
	switch {
	case pod.Spec.HostPID:
		o.Pid = runtimeapi.NamespaceMode_NODE
	case pod.Spec.ShareProcessNamespace != nil && *pod.Spec.ShareProcessNamespace:
		o.Pid = runtimeapi.NamespaceMode_POD
	}
	return o
}

// hostname is the pod's hostname as upstream picks it: spec.hostname, else
// the pod's name, cut to 63 characters.
func hostname(pod *corev1.Pod) string {
	h := pod.Name
	if pod.Spec.Hostname != "" {
		h = pod.Spec.Hostname
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

func (k *Kubelet) sandboxConfig(pod *corev1.Pod, attempt uint32) *runtimeapi.PodSandboxConfig {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: pod.Name, Namespace: pod.Namespace, Uid: string(pod.UID), Attempt: attempt},
		Hostname:     hostname(pod),
		LogDirectory: k.logDir(pod),
		DnsConfig:    k.dnsConfig(pod),
		Labels:       podLabels(pod),
		Annotations:  pod.Annotations,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: namespaceOptions(pod)},
		},
	}
	if pod.Spec.HostNetwork {
		cfg.Hostname = ""
	}
	if k.cgroups != nil {
		cfg.Linux.CgroupParent = k.cgroups.podCgroup(pod)
	}
	ssc := cfg.Linux.SecurityContext
	if sc := pod.Spec.SecurityContext; sc != nil {
		if len(sc.Sysctls) > 0 {
			cfg.Linux.Sysctls = map[string]string{}
			for _, s := range sc.Sysctls {
				cfg.Linux.Sysctls[s.Name] = s.Value
			}
		}
		if sc.RunAsUser != nil {
			ssc.RunAsUser = &runtimeapi.Int64Value{Value: *sc.RunAsUser}
		}
		if sc.RunAsGroup != nil {
			ssc.RunAsGroup = &runtimeapi.Int64Value{Value: *sc.RunAsGroup}
		}
		ssc.SupplementalGroups = supplementalGroups(sc)
		ssc.Seccomp = k.seccompProfile(sc.SeccompProfile, nil)
	}
	// A runtime (containerd) refuses a privileged container in a sandbox
	// not marked privileged; upstream marks it when any container is.
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
			ssc.Privileged = true
		}
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			pm := &runtimeapi.PortMapping{ContainerPort: p.ContainerPort, HostPort: p.HostPort, HostIp: p.HostIP, Protocol: runtimeapi.Protocol_TCP}
			if p.Protocol == corev1.ProtocolUDP {
				pm.Protocol = runtimeapi.Protocol_UDP
			}
			cfg.PortMappings = append(cfg.PortMappings, pm)
		}
	}
	return cfg
}

// dnsConfig is the pod's resolver configuration; nil means the node's
// /etc/resolv.conf (the runtime copies it).
func (k *Kubelet) dnsConfig(pod *corev1.Pod) *runtimeapi.DNSConfig {
	policy := pod.Spec.DNSPolicy
	if pod.Spec.HostNetwork && policy != corev1.DNSClusterFirstWithHostNet && policy != corev1.DNSNone {
		policy = corev1.DNSDefault
	}
	var out *runtimeapi.DNSConfig
	switch {
	case policy == corev1.DNSNone:
		out = &runtimeapi.DNSConfig{}
	case (policy == corev1.DNSClusterFirst || policy == corev1.DNSClusterFirstWithHostNet || policy == "") && len(k.cfg.ClusterDNS) > 0:
		host := hostResolv()
		d := k.cfg.ClusterDomain
		out = &runtimeapi.DNSConfig{Servers: k.cfg.ClusterDNS,
			Searches: append([]string{pod.Namespace + ".svc." + d, "svc." + d, d}, host.Searches...),
			Options:  []string{"ndots:5"}}
	}
	if pc := pod.Spec.DNSConfig; pc != nil {
		if out == nil {
			out = hostResolv()
		}
		out.Servers = append(out.Servers, pc.Nameservers...)
		out.Searches = append(out.Searches, pc.Searches...)
		for _, o := range pc.Options {
			if o.Value != nil {
				out.Options = append(out.Options, o.Name+":"+*o.Value)
			} else {
				out.Options = append(out.Options, o.Name)
			}
		}
	}
	return out
}

// hostResolv parses the node's /etc/resolv.conf.
func hostResolv() *runtimeapi.DNSConfig {
	out := &runtimeapi.DNSConfig{}
	b, _ := os.ReadFile("/etc/resolv.conf")
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			out.Servers = append(out.Servers, f[1])
		case "search":
			out.Searches = append(out.Searches, f[1:]...)
		case "options":
			out.Options = append(out.Options, f[1:]...)
		}
	}
	return out
}

func gracePeriod(pod *corev1.Pod) int64 {
	g := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if pod.DeletionGracePeriodSeconds != nil {
		g = *pod.DeletionGracePeriodSeconds
	} else if pod.Spec.TerminationGracePeriodSeconds != nil {
		g = *pod.Spec.TerminationGracePeriodSeconds
	}
	return max(g, minGracePeriod)
}

func (k *Kubelet) containerConfig(ctx context.Context, pod *corev1.Pod, c *corev1.Container, imageRef string, attempt uint32) (*runtimeapi.ContainerConfig, error) {
	env, err := k.containerEnv(ctx, pod, c)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	for _, kv := range env {
		vars[kv.Key] = string(kv.Value)
	}
	expand := func(in []string) []string {
		if in == nil {
			return nil
		}
		out := make([]string, len(in))
		for i, s := range in {
			out[i] = expandVars(s, vars)
		}
		return out
	}
	labels := map[string]string{labelPodUID: string(pod.UID), labelPodName: pod.Name, labelPodNamespace: pod.Namespace, labelContainerName: c.Name}
	cfg := &runtimeapi.ContainerConfig{
		Metadata:   &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: attempt},
		Image:      &runtimeapi.ImageSpec{Image: imageRef, UserSpecifiedImage: c.Image},
		Command:    expand(c.Command),
		Args:       expand(c.Args),
		WorkingDir: c.WorkingDir,
		Envs:       env,
		Labels:     labels,
		Annotations: map[string]string{
			annotationRestartCount:     strconv.Itoa(int(attempt)),
			annotationTerminationGrace: strconv.FormatInt(gracePeriod(pod), 10),
		},
		LogPath:   filepath.Join(c.Name, strconv.Itoa(int(attempt))+".log"),
		Stdin:     c.Stdin,
		StdinOnce: c.StdinOnce,
		Tty:       c.TTY,
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources:       resources(c),
			SecurityContext: k.securityContext(pod, c),
		},
	}
	cfg.Linux.Resources.OomScoreAdj = oomScoreAdj(pod, c, k.memoryCapacity)
	if err := k.verifyRunAsNonRoot(ctx, pod, c, imageRef); err != nil {
		return nil, err
	}
	mounts, err := k.mounts(ctx, pod, c)
	if err != nil {
		return nil, err
	}
	cfg.Mounts = mounts
	return cfg, nil
}

// resources maps requests and limits to cgroup settings as upstream does:
// cpu shares from the request (limit when no request), a CFS quota from the
// cpu limit, the memory limit. The oom_score_adj is containerConfig's, the
// pod's summed limits and pids.max its cgroup's (cgroups.go).
func resources(c *corev1.Container) *runtimeapi.LinuxContainerResources {
	r := &runtimeapi.LinuxContainerResources{}
	cpuReq, cpuLim := c.Resources.Requests.Cpu(), c.Resources.Limits.Cpu()
	milli := cpuReq.MilliValue()
	if cpuReq.IsZero() && !cpuLim.IsZero() {
		milli = cpuLim.MilliValue()
	}
	r.CpuShares = max(milli*1024/1000, 2)
	if !cpuLim.IsZero() {
		r.CpuPeriod = 100000
		r.CpuQuota = max(cpuLim.MilliValue()*100000/1000, 1000)
	}
	if m := c.Resources.Limits.Memory(); !m.IsZero() {
		r.MemoryLimitInBytes = m.Value()
		// No swap beyond the limit (memory+swap = memory), as upstream's
		// kubelet without the NodeSwap feature on cgroup v1.
		r.MemorySwapLimitInBytes = m.Value()
	}
	return r
}

// securityContext is the container's effective security context: the
// pod's settings overridden by the container's, as upstream merges them.
func (k *Kubelet) securityContext(pod *corev1.Pod, c *corev1.Container) *runtimeapi.LinuxContainerSecurityContext {
	out := &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: namespaceOptions(pod)}
	var podSeccomp *corev1.SeccompProfile
	if psc := pod.Spec.SecurityContext; psc != nil {
		if psc.RunAsUser != nil {
			out.RunAsUser = &runtimeapi.Int64Value{Value: *psc.RunAsUser}
		}
		if psc.RunAsGroup != nil {
			out.RunAsGroup = &runtimeapi.Int64Value{Value: *psc.RunAsGroup}
		}
		out.SupplementalGroups = supplementalGroups(psc)
		podSeccomp = psc.SeccompProfile
	}
	sc := c.SecurityContext
	if sc == nil {
		out.Seccomp = k.seccompProfile(podSeccomp, nil)
		return out
	}
	out.Seccomp = k.seccompProfile(podSeccomp, sc.SeccompProfile)
	if sc.RunAsUser != nil {
		out.RunAsUser = &runtimeapi.Int64Value{Value: *sc.RunAsUser}
	}
	if sc.RunAsGroup != nil {
		out.RunAsGroup = &runtimeapi.Int64Value{Value: *sc.RunAsGroup}
	}
	out.Privileged = sc.Privileged != nil && *sc.Privileged
	out.ReadonlyRootfs = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	// A privileged container may always gain privileges.
	out.NoNewPrivs = !out.Privileged && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
	if caps := sc.Capabilities; caps != nil {
		out.Capabilities = &runtimeapi.Capability{}
		for _, c := range caps.Add {
			out.Capabilities.AddCapabilities = append(out.Capabilities.AddCapabilities, string(c))
		}
		for _, c := range caps.Drop {
			out.Capabilities.DropCapabilities = append(out.Capabilities.DropCapabilities, string(c))
		}
	}
	return out
}

// supplementalGroups are the pod's supplementalGroups, with fsGroup first
// as upstream adds it, so that the container may use volumes of that group.
func supplementalGroups(psc *corev1.PodSecurityContext) []int64 {
	var out []int64
	if psc.FSGroup != nil {
		out = append(out, *psc.FSGroup)
	}
	for _, g := range psc.SupplementalGroups {
		if psc.FSGroup == nil || g != *psc.FSGroup {
			out = append(out, g)
		}
	}
	return out
}

// seccompProfile maps the container's seccomp profile, else the pod's, to
// the CRI's; none is Unconfined, upstream's default without --seccomp-default.
// Localhost profiles are files under DATA_DIR/seccomp, as upstream's under
// its root directory.
func (k *Kubelet) seccompProfile(pod, container *corev1.SeccompProfile) *runtimeapi.SecurityProfile {
	p := container
	if p == nil {
		p = pod
	}
	if p == nil {
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
	}
	switch p.Type {
	case corev1.SeccompProfileTypeRuntimeDefault:
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	case corev1.SeccompProfileTypeLocalhost:
		ref := ""
		if p.LocalhostProfile != nil {
			ref = filepath.Join(k.cfg.DataDir, "seccomp", *p.LocalhostProfile)
		}
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: ref}
	}
	return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
}

// verifyRunAsNonRoot refuses, with upstream's messages, a container whose
// effective runAsNonRoot is true but that would run as root, or whose
// image names its user by name so that the uid cannot be checked.
func (k *Kubelet) verifyRunAsNonRoot(ctx context.Context, pod *corev1.Pod, c *corev1.Container, imageRef string) error {
	var nonRoot *bool
	var runAsUser *int64
	if psc := pod.Spec.SecurityContext; psc != nil {
		nonRoot, runAsUser = psc.RunAsNonRoot, psc.RunAsUser
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsNonRoot != nil {
			nonRoot = sc.RunAsNonRoot
		}
		if sc.RunAsUser != nil {
			runAsUser = sc.RunAsUser
		}
	}
	if nonRoot == nil || !*nonRoot {
		return nil
	}
	podName := fmt.Sprintf("%s_%s(%s)", pod.Name, pod.Namespace, pod.UID)
	if runAsUser != nil {
		if *runAsUser == 0 {
			return fmt.Errorf("container's runAsUser breaks non-root policy (pod: %q, container: %s)", podName, c.Name)
		}
		return nil
	}
	st, err := k.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: imageRef}})
	if err != nil {
		return fmt.Errorf("image %s: %w", imageRef, err)
	}
	uid, name := imageUser(st.GetImage())
	switch {
	case uid != nil && *uid == 0:
		return fmt.Errorf("container has runAsNonRoot and image will run as root (pod: %q, container: %s)", podName, c.Name)
	case uid == nil && name != "":
		return fmt.Errorf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root (pod: %q, container: %s)", name, podName, c.Name)
	}
	return nil
}

// imageUser is the uid an image runs as, or its user name when it names one;
// an image without a user runs as root. Runtimes report a "uid:gid" user as
// the uid, or the whole string as the name.
func imageUser(img *runtimeapi.Image) (*int64, string) {
	if img.GetUid() != nil {
		v := img.GetUid().GetValue()
		return &v, ""
	}
	user, _, _ := strings.Cut(img.GetUsername(), ":")
	if user == "" {
		return new(int64), ""
	}
	if v, err := strconv.ParseInt(user, 10, 64); err == nil {
		return &v, ""
	}
	return nil, user
}

// mounts gives emptyDir (on disk), hostPath and the API-backed volumes
// (configMap, secret, downwardAPI, projected: read-only); the other volume
// types are not supported yet and refuse the container.
func (k *Kubelet) mounts(ctx context.Context, pod *corev1.Pod, c *corev1.Container) ([]*runtimeapi.Mount, error) {
	vols := map[string]*corev1.Volume{}
	for i := range pod.Spec.Volumes {
		vols[pod.Spec.Volumes[i].Name] = &pod.Spec.Volumes[i]
	}
	var out []*runtimeapi.Mount
	for _, vm := range c.VolumeMounts {
		v := vols[vm.Name]
		if v == nil {
			return nil, fmt.Errorf("volume %q is not in the pod", vm.Name)
		}
		var host string
		readOnly := vm.ReadOnly
		files, kind, apiVolume, err := k.apiVolumeFiles(ctx, pod, v)
		switch {
		case apiVolume:
			if err != nil {
				return nil, err
			}
			host = filepath.Join(k.podDir(pod.UID), "volumes", kind, v.Name)
			// Secrets never touch the disk, as upstream: their volumes
			// (and projected ones, which may hold secrets) are tmpfs.
			if kind != "kubernetes.io~configmap" && kind != "kubernetes.io~downward-api" {
				if err := mountTmpfs(host, ""); err != nil {
					return nil, fmt.Errorf("volume %q: %w", v.Name, err)
				}
			}
			if err := writeVolume(host, files); err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
			readOnly = true
		case v.EmptyDir != nil:
			host = filepath.Join(k.podDir(pod.UID), "volumes", "kubernetes.io~empty-dir", v.Name)
			if v.EmptyDir.Medium == corev1.StorageMediumMemory {
				size := ""
				if v.EmptyDir.SizeLimit != nil {
					size = strconv.FormatInt(v.EmptyDir.SizeLimit.Value(), 10)
				}
				if err := mountTmpfs(host, size); err != nil {
					return nil, fmt.Errorf("volume %q: %w", v.Name, err)
				}
			} else if err := os.MkdirAll(host, 0o777); err != nil {
				return nil, err
			}
			// MkdirAll honours the umask; an emptyDir is world-writable.
			_ = os.Chmod(host, 0o777)
		case v.HostPath != nil:
			host = v.HostPath.Path
			if t := v.HostPath.Type; t != nil && *t == corev1.HostPathDirectoryOrCreate {
				if err := os.MkdirAll(host, 0o755); err != nil {
					return nil, err
				}
			}
		default:
			return nil, fmt.Errorf("volume %q: only emptyDir, hostPath, configMap, secret, downwardAPI and projected volumes are supported yet", vm.Name)
		}
		if vm.SubPath != "" {
			host = filepath.Join(host, vm.SubPath)
			if err := os.MkdirAll(host, 0o755); err != nil {
				return nil, err
			}
		}
		m := &runtimeapi.Mount{ContainerPath: vm.MountPath, HostPath: host, Readonly: readOnly}
		if vm.MountPropagation != nil {
			switch *vm.MountPropagation {
			case corev1.MountPropagationBidirectional:
				m.Propagation = runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL
			case corev1.MountPropagationHostToContainer:
				m.Propagation = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// containerEnv resolves envFrom, then env (values, fieldRef,
// resourceFieldRef, configMapKeyRef, secretKeyRef) in order, expanding
// $(VAR) references to variables defined earlier, as upstream does.
func (k *Kubelet) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container) ([]*runtimeapi.KeyValue, error) {
	vars := map[string]string{}
	var order []string
	set := func(name, val string) {
		if _, ok := vars[name]; !ok {
			order = append(order, name)
		}
		vars[name] = val
	}
	for _, nv := range k.serviceEnv(pod) {
		set(nv.name, nv.value)
	}
	for _, src := range c.EnvFrom {
		var data map[string][]byte
		switch {
		case src.ConfigMapRef != nil:
			cm, err := k.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, src.ConfigMapRef.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) && src.ConfigMapRef.Optional != nil && *src.ConfigMapRef.Optional {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("configmap %q: %w", src.ConfigMapRef.Name, err)
			}
			data = configMapData(cm)
		case src.SecretRef != nil:
			s, err := k.client.CoreV1().Secrets(pod.Namespace).Get(ctx, src.SecretRef.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) && src.SecretRef.Optional != nil && *src.SecretRef.Optional {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("secret %q: %w", src.SecretRef.Name, err)
			}
			data = s.Data
		}
		keys := make([]string, 0, len(data))
		for key := range data {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		for _, key := range keys {
			// Keys that are no valid variable names are skipped, as upstream.
			if name := src.Prefix + key; validEnvName(name) {
				set(name, string(data[key]))
			}
		}
	}
	for _, e := range c.Env {
		var val string
		switch {
		case e.ValueFrom == nil:
			val = expandVars(e.Value, vars)
		case e.ValueFrom.FieldRef != nil:
			v, err := k.fieldValue(pod, e.ValueFrom.FieldRef.FieldPath)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			val = v
		case e.ValueFrom.ResourceFieldRef != nil:
			v, err := resourceValue(c, e.ValueFrom.ResourceFieldRef)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			val = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			optional := ref.Optional != nil && *ref.Optional
			cm, err := k.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) && optional {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("configmap %q: %w", ref.Name, err)
			}
			v, ok := configMapData(cm)[ref.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)
			}
			val = string(v)
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			optional := ref.Optional != nil && *ref.Optional
			s, err := k.client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) && optional {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("secret %q: %w", ref.Name, err)
			}
			v, ok := s.Data[ref.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)
			}
			val = string(v)
		}
		set(e.Name, val)
	}
	out := make([]*runtimeapi.KeyValue, 0, len(order))
	for _, name := range order {
		out = append(out, &runtimeapi.KeyValue{Key: name, Value: []byte(vars[name])})
	}
	return out, nil
}

// validEnvName is upstream's rule for variable names from envFrom.
func validEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func (k *Kubelet) fieldValue(pod *corev1.Pod, path string) (string, error) {
	if rest, ok := strings.CutPrefix(path, "metadata.labels['"); ok && strings.HasSuffix(rest, "']") {
		return pod.Labels[strings.TrimSuffix(rest, "']")], nil
	}
	if rest, ok := strings.CutPrefix(path, "metadata.annotations['"); ok && strings.HasSuffix(rest, "']") {
		return pod.Annotations[strings.TrimSuffix(rest, "']")], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return k.nodeIP, nil
	case "status.podIP", "status.podIPs":
		// Containers start after the sandbox, so the IP is known.
		return pod.Status.PodIP, nil
	}
	return "", fmt.Errorf("unsupported fieldPath %q", path)
}

func resourceValue(c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	var q = c.Resources.Limits
	name := ref.Resource
	if rest, ok := strings.CutPrefix(name, "requests."); ok {
		q, name = c.Resources.Requests, rest
	} else {
		name = strings.TrimPrefix(name, "limits.")
	}
	v, ok := q[corev1.ResourceName(name)]
	if !ok {
		// An unset limit reads as the node's capacity upstream; without
		// it here, report 0 rather than guess.
		return "0", nil
	}
	div := ref.Divisor
	if div.IsZero() {
		if name == "cpu" {
			return strconv.FormatInt((v.MilliValue()+999)/1000, 10), nil
		}
		return strconv.FormatInt(v.Value(), 10), nil
	}
	if name == "cpu" {
		return strconv.FormatInt((v.MilliValue()+div.MilliValue()-1)/div.MilliValue(), 10), nil
	}
	return strconv.FormatInt((v.Value()+div.Value()-1)/div.Value(), 10), nil
}

// expandVars replaces $(NAME) by vars[NAME] when defined, $$ by $, and
// leaves other references as written, as upstream's expansion does.
func expandVars(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteByte(s[i])
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// mountTmpfs makes dir a tmpfs (of size bytes, "" for the default) unless
// it already is one. unmountPodDir undoes it with the pod.
func mountTmpfs(dir, size string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) == nil && st.Type == unix.TMPFS_MAGIC {
		return nil
	}
	opts := "mode=0755"
	if size != "" {
		opts += ",size=" + size
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

// removePodDir unmounts whatever the kubelet mounted under a pod's
// directory, then removes it; it never follows a mount out of it.
func removePodDir(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var mounts []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	// Deepest first.
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			return fmt.Errorf("unmount %s: %w", m, err)
		}
	}
	return os.RemoveAll(dir)
}

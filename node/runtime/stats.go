package runtime

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The calls here answer the kubelet's configuration and metrics questions
// from cgroup v1 files; they are what a kubelet asks of every runtime.

// UpdateRuntimeConfig accepts the pod CIDR the kubelet passes on; the pod
// network is NetworkSetup's business, so there is nothing to change.
func (s *Server) UpdateRuntimeConfig(context.Context, *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}

// RuntimeConfig tells the kubelet to use cgroupfs paths, as runc is run.
func (s *Server) RuntimeConfig(context.Context, *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	return &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: runtimeapi.CgroupDriver_CGROUPFS}}, nil
}

// ContainerStats reports one container's cpu and memory use.
func (s *Server) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: s.stats(c)}, nil
}

// ListContainerStats reports the use of the running containers matching the filter.
func (s *Server) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	f := req.GetFilter()
	var out []*runtimeapi.ContainerStats
	for _, c := range s.containersOf(f.GetId(), f.GetPodSandboxId()) {
		if st, _ := s.state(c); st != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		if !matchLabels(f.GetLabelSelector(), c.config().GetLabels()) {
			continue
		}
		out = append(out, s.stats(c))
	}
	return &runtimeapi.ListContainerStatsResponse{Stats: out}, nil
}

func (s *Server) stats(c *container) *runtimeapi.ContainerStats {
	cfg := c.config()
	cpu, mem := cgroupUsage(c.Cgroup)
	return &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{Id: c.ID, Metadata: cfg.GetMetadata(), Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations()},
		Cpu:        cpu,
		Memory:     mem,
	}
}

// cgroupUsage reads the cpu and memory use of a cgroup (v1 path).
func cgroupUsage(cgroup string) (*runtimeapi.CpuUsage, *runtimeapi.MemoryUsage) {
	now := time.Now().UnixNano()
	cpu, mem := &runtimeapi.CpuUsage{Timestamp: now}, &runtimeapi.MemoryUsage{Timestamp: now}
	if v, ok := readUint(filepath.Join("/sys/fs/cgroup/cpuacct", cgroup, "cpuacct.usage")); ok {
		cpu.UsageCoreNanoSeconds = &runtimeapi.UInt64Value{Value: v}
	}
	dir := filepath.Join("/sys/fs/cgroup/memory", cgroup)
	if usage, ok := readUint(filepath.Join(dir, "memory.usage_in_bytes")); ok {
		mem.UsageBytes = &runtimeapi.UInt64Value{Value: usage}
		// The working set is usage less the inactive file cache, as the
		// kubelet's eviction counts it.
		kv := memoryStat(filepath.Join(dir, "memory.stat"))
		ws := usage
		if inactive := kv["total_inactive_file"]; inactive < ws {
			ws -= inactive
		} else {
			ws = 0
		}
		mem.WorkingSetBytes = &runtimeapi.UInt64Value{Value: ws}
		mem.RssBytes = &runtimeapi.UInt64Value{Value: kv["total_rss"]}
		mem.PageFaults = &runtimeapi.UInt64Value{Value: kv["total_pgfault"]}
		mem.MajorPageFaults = &runtimeapi.UInt64Value{Value: kv["total_pgmajfault"]}
	}
	return cpu, mem
}

// PodSandboxStats reports one sandbox's use.
func (s *Server) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	s.mu.Lock()
	sb := s.sandboxes[req.GetPodSandboxId()]
	s.mu.Unlock()
	if sb == nil {
		return nil, notFound("sandbox", req.GetPodSandboxId())
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: s.sandboxStats(sb)}, nil
}

// ListPodSandboxStats reports the use of the ready sandboxes matching the filter.
func (s *Server) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	f := req.GetFilter()
	s.mu.Lock()
	var sbs []*sandbox
	for _, sb := range s.sandboxes {
		if (f.GetId() == "" || f.GetId() == sb.ID) && sb.Ready && matchLabels(f.GetLabelSelector(), sb.config().GetLabels()) {
			sbs = append(sbs, sb)
		}
	}
	s.mu.Unlock()
	out := make([]*runtimeapi.PodSandboxStats, 0, len(sbs))
	for _, sb := range sbs {
		out = append(out, s.sandboxStats(sb))
	}
	return &runtimeapi.ListPodSandboxStatsResponse{Stats: out}, nil
}

// sandboxStats is the pod cgroup's use when the kubelet gave one (the
// sandbox's CgroupParent), else its running containers' summed; with the
// process count and each running container's stats.
func (s *Server) sandboxStats(sb *sandbox) *runtimeapi.PodSandboxStats {
	cfg := sb.config()
	linux := &runtimeapi.LinuxPodSandboxStats{}
	for _, c := range s.containersOf("", sb.ID) {
		if st, _ := s.state(c); st == runtimeapi.ContainerState_CONTAINER_RUNNING {
			linux.Containers = append(linux.Containers, s.stats(c))
		}
	}
	if parent := cfg.GetLinux().GetCgroupParent(); parent != "" {
		linux.Cpu, linux.Memory = cgroupUsage(parent)
		if n, ok := readUint(filepath.Join("/sys/fs/cgroup/pids", parent, "pids.current")); ok {
			linux.Process = &runtimeapi.ProcessUsage{Timestamp: time.Now().UnixNano(), ProcessCount: &runtimeapi.UInt64Value{Value: n}}
		}
	} else {
		now := time.Now().UnixNano()
		linux.Cpu, linux.Memory = &runtimeapi.CpuUsage{Timestamp: now}, &runtimeapi.MemoryUsage{Timestamp: now}
		var cpu, usage, ws uint64
		for _, c := range linux.Containers {
			cpu += c.GetCpu().GetUsageCoreNanoSeconds().GetValue()
			usage += c.GetMemory().GetUsageBytes().GetValue()
			ws += c.GetMemory().GetWorkingSetBytes().GetValue()
		}
		linux.Cpu.UsageCoreNanoSeconds = &runtimeapi.UInt64Value{Value: cpu}
		linux.Memory.UsageBytes, linux.Memory.WorkingSetBytes = &runtimeapi.UInt64Value{Value: usage}, &runtimeapi.UInt64Value{Value: ws}
	}
	return &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{Id: sb.ID, Metadata: cfg.GetMetadata(), Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations()},
		Linux:      linux,
	}
}

func readUint(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil
}

func memoryStat(path string) map[string]uint64 {
	out := map[string]uint64{}
	b, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				out[f[0]] = v
			}
		}
	}
	return out
}

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
	now := time.Now().UnixNano()
	st := &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{Id: c.ID, Metadata: cfg.GetMetadata(), Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations()},
		Cpu:        &runtimeapi.CpuUsage{Timestamp: now},
		Memory:     &runtimeapi.MemoryUsage{Timestamp: now},
	}
	if v, ok := readUint(filepath.Join("/sys/fs/cgroup/cpuacct", c.Cgroup, "cpuacct.usage")); ok {
		st.Cpu.UsageCoreNanoSeconds = &runtimeapi.UInt64Value{Value: v}
	}
	mem := filepath.Join("/sys/fs/cgroup/memory", c.Cgroup)
	if usage, ok := readUint(filepath.Join(mem, "memory.usage_in_bytes")); ok {
		st.Memory.UsageBytes = &runtimeapi.UInt64Value{Value: usage}
		// The working set is usage less the inactive file cache, as the
		// kubelet's eviction counts it.
		kv := memoryStat(filepath.Join(mem, "memory.stat"))
		ws := usage
		if inactive := kv["total_inactive_file"]; inactive < ws {
			ws -= inactive
		} else {
			ws = 0
		}
		st.Memory.WorkingSetBytes = &runtimeapi.UInt64Value{Value: ws}
		st.Memory.RssBytes = &runtimeapi.UInt64Value{Value: kv["total_rss"]}
		st.Memory.PageFaults = &runtimeapi.UInt64Value{Value: kv["total_pgfault"]}
		st.Memory.MajorPageFaults = &runtimeapi.UInt64Value{Value: kv["total_pgmajfault"]}
	}
	return st
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

package libct

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/cgroups"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// validateProcess refuses what runc refuses of a process before starting it.
func validateProcess(p *specs.Process) error {
	switch {
	case p == nil:
		return errors.New("process property must not be empty")
	case p.Cwd == "":
		return errors.New("Cwd property must not be empty")
	case !filepath.IsAbs(p.Cwd):
		return errors.New("Cwd must be an absolute path")
	case len(p.Args) == 0:
		return errors.New("args must not be empty")
	}
	return nil
}

// newProcess turns an OCI process into libcontainer's.
func newProcess(p *specs.Process) (*libcontainer.Process, error) {
	nnp := p.NoNewPrivileges
	lp := &libcontainer.Process{
		Args:            p.Args,
		Env:             p.Env,
		User:            fmt.Sprintf("%d:%d", p.User.UID, p.User.GID),
		Cwd:             p.Cwd,
		Label:           p.SelinuxLabel,
		NoNewPrivileges: &nnp,
		AppArmorProfile: p.ApparmorProfile,
		LogLevel:        strconv.Itoa(int(logrus.GetLevel())),
	}
	if p.ConsoleSize != nil {
		lp.ConsoleWidth, lp.ConsoleHeight = uint16(p.ConsoleSize.Width), uint16(p.ConsoleSize.Height)
	}
	if p.Scheduler != nil {
		s := configs.Scheduler(*p.Scheduler)
		lp.Scheduler = &s
	}
	if p.IOPriority != nil {
		prio := configs.IOPriority(*p.IOPriority)
		lp.IOPriority = &prio
	}
	if c := p.Capabilities; c != nil {
		lp.Capabilities = &configs.Capabilities{Bounding: c.Bounding, Effective: c.Effective,
			Inheritable: c.Inheritable, Permitted: c.Permitted, Ambient: c.Ambient}
	}
	for _, gid := range p.User.AdditionalGids {
		lp.AdditionalGroups = append(lp.AdditionalGroups, strconv.FormatUint(uint64(gid), 10))
	}
	for _, rl := range p.Rlimits {
		t, ok := rlimits[rl.Type]
		if !ok {
			return nil, fmt.Errorf("wrong rlimit value: %s", rl.Type)
		}
		lp.Rlimits = append(lp.Rlimits, configs.Rlimit{Type: t, Hard: rl.Hard, Soft: rl.Soft})
	}
	return lp, nil
}

var rlimits = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC,
	"RLIMIT_RSS": unix.RLIMIT_RSS, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING, "RLIMIT_STACK": unix.RLIMIT_STACK,
}

// applyResources sets the limits r names on a container's cgroup
// resources, as `runc update --resources` does: what r leaves out keeps
// its value, except the cpuset, which r always gives.
func applyResources(res *configs.Resources, r *specs.LinuxResources) {
	if c := r.CPU; c != nil {
		var period uint64
		var quota int64
		if c.Period != nil {
			period = *c.Period
		}
		if c.Quota != nil {
			quota = *c.Quota
		}
		// A period or quota alone changes only itself.
		if (period == 0) == (quota == 0) {
			res.CpuPeriod, res.CpuQuota = period, quota
		} else if period != 0 {
			res.CpuPeriod = period
		} else {
			res.CpuQuota = quota
		}
		if c.Shares != nil {
			res.CpuShares = *c.Shares
			res.CpuWeight = cgroups.ConvertCPUSharesToCgroupV2Value(*c.Shares)
		}
		if c.RealtimePeriod != nil {
			res.CpuRtPeriod = *c.RealtimePeriod
		}
		if c.RealtimeRuntime != nil {
			res.CpuRtRuntime = *c.RealtimeRuntime
		}
		res.CpuBurst, res.CPUIdle = c.Burst, c.Idle
		res.CpusetCpus, res.CpusetMems = c.Cpus, c.Mems
	} else {
		res.CpusetCpus, res.CpusetMems = "", ""
	}
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			res.Memory = *m.Limit
			if *m.Limit == -1 && m.Swap == nil {
				res.MemorySwap = 0
			}
		}
		if m.Reservation != nil {
			res.MemoryReservation = *m.Reservation
		}
		if m.Swap != nil {
			res.MemorySwap = *m.Swap
		}
	}
	if r.BlockIO != nil && r.BlockIO.Weight != nil {
		res.BlkioWeight = *r.BlockIO.Weight
	}
	res.PidsLimit = 0
	if r.Pids != nil {
		res.PidsLimit = r.Pids.Limit
	}
	res.Unified = r.Unified
}

// dialUnix connects to a console socket and returns the connection as a
// file, for libcontainer to hand to the container's init.
func dialUnix(path string) (*os.File, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, errors.New("console socket is not a unix socket")
	}
	return uc.File()
}

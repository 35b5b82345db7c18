package nodetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const ipForward = "/proc/sys/net/ipv4/ip_forward"

// Host is what a node run may change host-wide, as it was before the run:
// net.ipv4.ip_forward, whether the built-in network's nftables table
// existed, and which cgroups of some patterns existed.
type Host struct {
	fwd      []byte
	fwdErr   error
	nftTable string
	nftErr   error
	cgroups  map[string]bool
}

// SaveHost records ip_forward, whether the IPv4 nftables table nftTable
// exists, and the cgroup directories matching cgroupGlobs.
func SaveHost(nftTable string, cgroupGlobs ...string) *Host {
	h := &Host{nftTable: nftTable, cgroups: map[string]bool{}}
	h.fwd, h.fwdErr = os.ReadFile(ipForward)
	_, h.nftErr = NFTTable(nftTable)
	for _, d := range cgroupDirs(cgroupGlobs) {
		h.cgroups[d] = true
	}
	return h
}

// NewCgroups lists the cgroup directories matching globs, in their order,
// that were not there when SaveHost ran.
func (h *Host) NewCgroups(globs ...string) []string {
	var out []string
	for _, d := range cgroupDirs(globs) {
		if !h.cgroups[d] {
			out = append(out, d)
		}
	}
	return out
}

func cgroupDirs(globs []string) []string {
	var out []string
	for _, g := range globs {
		hs, _ := filepath.Glob(g)
		for _, d := range hs {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() {
				out = append(out, d)
			}
		}
	}
	return out
}

// Restore deletes the nftables table if the run made it and puts
// ip_forward back as it was.
func (h *Host) Restore() []error {
	var errs []error
	if h.nftErr != nil {
		if _, err := NFTTable(h.nftTable); err == nil {
			if err := DeleteNFTTable(h.nftTable); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if h.fwdErr == nil {
		if now, _ := os.ReadFile(ipForward); !bytes.Equal(now, h.fwd) {
			if err := os.WriteFile(ipForward, h.fwd, 0o644); err != nil {
				errs = append(errs, fmt.Errorf("restore ip_forward: %w", err))
			}
		}
	}
	return errs
}

// ShimPIDs lists the built-in runtime's shims (`navarch runtime-shim`
// re-execs of the binary) that work under dir.
func ShimPIDs(dir string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) > 1 && args[1] == "runtime-shim" && strings.Contains(string(b), dir+"/") {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// RuncRoot is where the built-in runtime of a node with data dir dataDir
// keeps runc's state.
func RuncRoot(dataDir string) string { return filepath.Join(dataDir, "runtime", "runc") }

// RemoveNodeLeftovers removes what a stopped node's pods left under its
// data dir: runc containers, shims, mounts (rootfs, namespace files,
// volumes), deepest first. It returns what it found and what it could not
// remove.
func RemoveNodeLeftovers(dataDir string) (found []string, errs []error) {
	root := RuncRoot(dataDir)
	if out, err := exec.Command("runc", "--root", root, "list", "-q").Output(); err == nil {
		for _, id := range strings.Fields(string(out)) {
			found = append(found, "runc container "+id)
			if out, err := exec.Command("runc", "--root", root, "delete", "--force", id).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("runc delete %s: %w %s", id, err, out))
			}
		}
	}
	for _, pid := range ShimPIDs(dataDir) {
		found = append(found, fmt.Sprintf("shim %d", pid))
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return found, append(errs, Unmount(dataDir)...)
}

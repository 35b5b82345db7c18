package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

// ErrNoFreeIP is the CNI error code (plugin-specific range, >= 100) returned
// when every address of the subnet is allocated.
const ErrNoFreeIP = 100

const (
	lockFile         = "lock"
	lastReservedFile = "last_reserved_ip"
)

// allocator hands out the pod addresses of one network host-local style: one
// file per allocated IP in dir, named by the IP and holding "<containerID>\n
// <ifName>\n", so allocations survive restarts of the agent and of the
// machine's processes. Every operation holds an flock on dir/lock, which
// serialises concurrent plugin processes (and goroutines: each opens its own
// file description).
type allocator struct {
	network string
	dir     string
	subnet  *net.IPNet // IPv4 only
}

func newAllocator(network, dataDir string, subnet *net.IPNet) *allocator {
	return &allocator{network: network, dir: filepath.Join(dataDir, network), subnet: subnet}
}

// hostRange gives the first and last assignable addresses as integers: the
// network address is skipped, the first host address is the gateway and the
// broadcast address is skipped.
func hostRange(subnet *net.IPNet) (first, last uint32, err error) {
	ones, bits := subnet.Mask.Size()
	ip4 := subnet.IP.To4()
	if ip4 == nil || bits != 32 {
		return 0, 0, fmt.Errorf("subnet %s: only IPv4 subnets are supported", subnet)
	}
	if ones > 30 {
		return 0, 0, fmt.Errorf("subnet %s: too small, need at least a /30", subnet)
	}
	base := binary.BigEndian.Uint32(ip4)
	size := uint32(1) << (32 - ones)
	return base + 2, base + size - 2, nil
}

func u32ToIP(v uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, v)
	return ip
}

// gateway is the subnet's first host address, which the bridge carries.
func gateway(subnet *net.IPNet) net.IP {
	return u32ToIP(binary.BigEndian.Uint32(subnet.IP.To4()) + 1)
}

func (a *allocator) lock() (func(), error) {
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return nil, fmt.Errorf("network %q: ipam dir: %w", a.network, err)
	}
	f, err := os.OpenFile(filepath.Join(a.dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("network %q: ipam lock: %w", a.network, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("network %q: ipam lock: %w", a.network, err)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

func owner(containerID, ifName string) string { return containerID + "\n" + ifName + "\n" }

// allocations lists the allocation files (by IP) and their owners. Callers
// hold the lock.
func (a *allocator) allocations() (map[string]string, error) {
	entries, err := os.ReadDir(a.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	out := map[string]string{}
	for _, e := range entries {
		if net.ParseIP(e.Name()) == nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(a.dir, e.Name()))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		out[e.Name()] = string(b)
	}
	return out, nil
}

// Allocate returns the address held by containerID/ifName (fresh false), or
// reserves the next free one after the last reserved (round robin, so a
// released address is not handed out again at once).
func (a *allocator) Allocate(containerID, ifName string) (ip net.IP, fresh bool, err error) {
	ip, err = a.allocate(containerID, ifName, &fresh)
	return ip, fresh, err
}

func (a *allocator) allocate(containerID, ifName string, fresh *bool) (net.IP, error) {
	first, last, err := hostRange(a.subnet)
	if err != nil {
		return nil, err
	}
	unlock, err := a.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()

	held, err := a.allocations()
	if err != nil {
		return nil, fmt.Errorf("network %q: read allocations: %w", a.network, err)
	}
	if ip := heldBy(held, containerID, ifName); ip != nil {
		return ip, nil
	}
	*fresh = true

	start := first
	if b, err := os.ReadFile(filepath.Join(a.dir, lastReservedFile)); err == nil {
		if ip := net.ParseIP(strings.TrimSpace(string(b))).To4(); ip != nil {
			if v := binary.BigEndian.Uint32(ip); v >= first && v < last {
				start = v + 1
			}
		}
	}
	n := last - first + 1
	for i := uint32(0); i < n; i++ {
		v := first + (start-first+i)%n
		ip := u32ToIP(v)
		if _, taken := held[ip.String()]; taken {
			continue
		}
		ok, err := a.reserve(ip, owner(containerID, ifName))
		if err != nil {
			return nil, fmt.Errorf("network %q: reserve %s for %s: %w", a.network, ip, containerID, err)
		}
		if !ok {
			continue
		}
		// Losing the hint only costs round robin, not correctness.
		_ = os.WriteFile(filepath.Join(a.dir, lastReservedFile), []byte(ip.String()), 0o600)
		return ip, nil
	}
	return nil, types.NewError(ErrNoFreeIP,
		fmt.Sprintf("network %q: no free IP address in %s: all %d addresses are allocated", a.network, a.subnet, n),
		fmt.Sprintf("allocations under %s", a.dir))
}

// reserve creates the allocation file atomically: the content is written to
// a temporary file first and hard-linked to its final name, which fails if
// the name exists, so a crash never leaves a half-written allocation. No
// fsync: the page cache outlives the agent's restarts, and a machine that
// loses it has lost its pods' network namespaces too.
func (a *allocator) reserve(ip net.IP, who string) (bool, error) {
	tmp, err := os.CreateTemp(a.dir, ".reserve-")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(who); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Link(tmp.Name(), filepath.Join(a.dir, ip.String())); err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// Lookup returns the address held by containerID/ifName, or nil.
func (a *allocator) Lookup(containerID, ifName string) (net.IP, error) {
	unlock, err := a.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	held, err := a.allocations()
	if err != nil {
		return nil, fmt.Errorf("network %q: read allocations: %w", a.network, err)
	}
	return heldBy(held, containerID, ifName), nil
}

// heldBy is the address in held (address -> owner) that containerID/ifName
// owns, or nil.
func heldBy(held map[string]string, containerID, ifName string) net.IP {
	want := owner(containerID, ifName)
	for ip, who := range held {
		if who == want {
			return net.ParseIP(ip).To4()
		}
	}
	return nil
}

// Release frees what containerID/ifName holds; releasing nothing succeeds.
func (a *allocator) Release(containerID, ifName string) error {
	return a.releaseIf(func(who string) bool { return who == owner(containerID, ifName) })
}

// ReleaseAllExcept frees every allocation whose owner is not in keep (CNI GC).
func (a *allocator) ReleaseAllExcept(keep map[string]bool) error {
	return a.releaseIf(func(who string) bool { return !keep[who] })
}

func (a *allocator) releaseIf(match func(who string) bool) error {
	unlock, err := a.lock()
	if err != nil {
		return err
	}
	defer unlock()
	held, err := a.allocations()
	if err != nil {
		return fmt.Errorf("network %q: read allocations: %w", a.network, err)
	}
	for ip, who := range held {
		if !match(who) {
			continue
		}
		if err := os.Remove(filepath.Join(a.dir, ip)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("network %q: release %s: %w", a.network, ip, err)
		}
	}
	return nil
}

// Package servicealloc gives Services their cluster IPs and node ports. Every
// allocation is its own key in the store, created only if absent, so two
// servers or two concurrent creates can never hand out the same value, and a
// deleted Service's values return to the pool.
package servicealloc

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/storage"
)

const (
	ipPrefix   = "/registry/ranges/serviceips/"
	portPrefix = "/registry/ranges/servicenodeports/"
)

// Allocator allocates from one IPv4 service range and one node-port range.
type Allocator struct {
	store    storage.Store
	ipRange  netip.Prefix
	portBase int
	portSize int
}

// New returns an allocator for cidr (e.g. 10.43.0.0/16) and ports
// base..base+size-1 (e.g. 30000, 2768).
func New(store storage.Store, cidr string, portBase, portSize int) (*Allocator, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is4() || p.Bits() > 30 {
		return nil, fmt.Errorf("service cluster IP range %q: want an IPv4 CIDR of at least 4 addresses", cidr)
	}
	if portBase <= 0 || portSize <= 0 || portBase+portSize > 65536 {
		return nil, fmt.Errorf("node port range %d+%d is invalid", portBase, portSize)
	}
	return &Allocator{store: store, ipRange: p.Masked(), portBase: portBase, portSize: portSize}, nil
}

// FirstIP is the range's first usable address, which upstream reserves for
// the kubernetes Service.
func (a *Allocator) FirstIP() string { return a.ipRange.Addr().Next().String() }

func (a *Allocator) ipCount() int { return 1<<(32-a.ipRange.Bits()) - 2 }

func (a *Allocator) ipAt(i int) netip.Addr {
	base := binary.BigEndian.Uint32(a.ipRange.Addr().AsSlice())
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], base+uint32(i)+1)
	return netip.AddrFrom4(b)
}

var errFull = errors.New("range is full")

// claim creates key for owner, or confirms owner already holds it.
func (a *Allocator) claim(ctx context.Context, key, owner string) (bool, error) {
	_, err := a.store.Create(ctx, key, []byte(owner))
	if errors.Is(err, storage.ErrExists) {
		kv, gerr := a.store.Get(ctx, key)
		if gerr == nil && string(kv.Value) == owner {
			return false, nil
		}
		return false, err
	}
	return err == nil, err
}

// pick claims a random free slot of n, probing onward from a random start.
func (a *Allocator) pick(ctx context.Context, n int, key func(int) string, owner string) (int, error) {
	start, _ := rand.Int(rand.Reader, big.NewInt(int64(n)))
	for i := 0; i < n; i++ {
		slot := (int(start.Int64()) + i) % n
		// Only a key nobody holds will do, not even one this owner holds:
		// a service must not get the same port for two of its ports.
		_, err := a.store.Create(ctx, key(slot), []byte(owner))
		if err == nil {
			return slot, nil
		}
		if !errors.Is(err, storage.ErrExists) {
			return 0, err
		}
	}
	return 0, errFull
}

func (a *Allocator) release(ctx context.Context, key string) {
	a.store.Delete(ctx, key, 0)
}

func ipKey(ip string) string { return ipPrefix + ip }
func portKey(p int32) string { return portPrefix + strconv.Itoa(int(p)) }

func owner(svc *corev1.Service) string { return svc.Namespace + "/" + svc.Name }

func needsClusterIP(svc *corev1.Service) bool {
	return svc.Spec.Type != corev1.ServiceTypeExternalName && svc.Spec.ClusterIP != corev1.ClusterIPNone
}

func needsNodePorts(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer
}

func invalid(svc *corev1.Service, errs field.ErrorList) error {
	return apierrors.NewInvalid(schema.GroupKind{Kind: "Service"}, svc.Name, errs)
}

// allocate fills in and claims svc's cluster IP and node ports; held lists
// what old already owns (on update), which is not claimed again.
func (a *Allocator) allocate(ctx context.Context, svc, old *corev1.Service) (undo func(), err error) {
	var claimed []string
	undo = func() {
		for _, k := range claimed {
			a.release(ctx, k)
		}
	}
	fail := func(e error) (func(), error) {
		undo()
		return func() {}, e
	}
	who := owner(svc)
	if needsClusterIP(svc) {
		switch ip := svc.Spec.ClusterIP; {
		case ip == "":
			slot, err := a.pick(ctx, a.ipCount(), func(i int) string { return ipKey(a.ipAt(i).String()) }, who)
			if errors.Is(err, errFull) {
				return fail(apierrors.NewInternalError(fmt.Errorf("failed to allocate a serviceIP: range is full")))
			}
			if err != nil {
				return fail(err)
			}
			svc.Spec.ClusterIP = a.ipAt(slot).String()
			claimed = append(claimed, ipKey(svc.Spec.ClusterIP))
		case old == nil || old.Spec.ClusterIP != ip:
			addr, perr := netip.ParseAddr(ip)
			fld := field.NewPath("spec", "clusterIPs").Index(0)
			if perr != nil || !a.ipRange.Contains(addr) || addr == a.ipRange.Addr() {
				return fail(invalid(svc, field.ErrorList{field.Invalid(fld, ip,
					fmt.Sprintf("failed to allocate IP %s: the provided IP (%s) is not in the valid range. The range of valid IPs is %s", ip, ip, a.ipRange))}))
			}
			fresh, err := a.claim(ctx, ipKey(ip), who)
			if errors.Is(err, storage.ErrExists) {
				return fail(invalid(svc, field.ErrorList{field.Invalid(fld, ip, fmt.Sprintf("failed to allocate IP %s: provided IP is already allocated", ip))}))
			}
			if err != nil {
				return fail(err)
			}
			if fresh {
				claimed = append(claimed, ipKey(ip))
			}
		}
		svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	}
	if needsNodePorts(svc) {
		held := map[int32]bool{}
		if old != nil && needsNodePorts(old) {
			for _, p := range old.Spec.Ports {
				held[p.NodePort] = true
			}
		}
		for i := range svc.Spec.Ports {
			p := &svc.Spec.Ports[i]
			fld := field.NewPath("spec", "ports").Index(i).Child("nodePort")
			switch {
			case p.NodePort == 0:
				slot, err := a.pick(ctx, a.portSize, func(i int) string { return portKey(int32(a.portBase + i)) }, who)
				if errors.Is(err, errFull) {
					return fail(invalid(svc, field.ErrorList{field.Invalid(fld, p.NodePort, "failed to allocate a nodePort: range is full")}))
				}
				if err != nil {
					return fail(err)
				}
				p.NodePort = int32(a.portBase + slot)
				claimed = append(claimed, portKey(p.NodePort))
			case held[p.NodePort]:
			default:
				if int(p.NodePort) < a.portBase || int(p.NodePort) >= a.portBase+a.portSize {
					return fail(invalid(svc, field.ErrorList{field.Invalid(fld, p.NodePort,
						fmt.Sprintf("provided port is not in the valid range. The range of valid ports is %d-%d", a.portBase, a.portBase+a.portSize-1))}))
				}
				fresh, err := a.claim(ctx, portKey(p.NodePort), who)
				if errors.Is(err, storage.ErrExists) {
					return fail(invalid(svc, field.ErrorList{field.Invalid(fld, p.NodePort, "provided port is already allocated")}))
				}
				if err != nil {
					return fail(err)
				}
				if fresh {
					claimed = append(claimed, portKey(p.NodePort))
				}
			}
			held[p.NodePort] = true
		}
	}
	return undo, nil
}

// BeforeCreate implements apiserver.WriteHooks.
func (a *Allocator) BeforeCreate(ctx context.Context, obj runtime.Object) (func(), error) {
	return a.allocate(ctx, obj.(*corev1.Service), nil)
}

// BeforeUpdate implements apiserver.WriteHooks.
func (a *Allocator) BeforeUpdate(ctx context.Context, obj, old runtime.Object) (func(), error) {
	return a.allocate(ctx, obj.(*corev1.Service), old.(*corev1.Service))
}

// AfterUpdate releases what the old Service held and the new one does not.
func (a *Allocator) AfterUpdate(ctx context.Context, obj, old runtime.Object) {
	svc, was := obj.(*corev1.Service), old.(*corev1.Service)
	if needsClusterIP(was) && (!needsClusterIP(svc) || svc.Spec.ClusterIP != was.Spec.ClusterIP) {
		a.release(ctx, ipKey(was.Spec.ClusterIP))
	}
	if needsNodePorts(was) {
		keep := map[int32]bool{}
		if needsNodePorts(svc) {
			for _, p := range svc.Spec.Ports {
				keep[p.NodePort] = true
			}
		}
		for _, p := range was.Spec.Ports {
			if !keep[p.NodePort] && p.NodePort != 0 {
				a.release(ctx, portKey(p.NodePort))
			}
		}
	}
}

// AfterDelete returns a deleted Service's IP and ports to the pool.
func (a *Allocator) AfterDelete(ctx context.Context, obj runtime.Object) {
	svc := obj.(*corev1.Service)
	if needsClusterIP(svc) && svc.Spec.ClusterIP != "" {
		a.release(ctx, ipKey(svc.Spec.ClusterIP))
	}
	if needsNodePorts(svc) {
		for _, p := range svc.Spec.Ports {
			if p.NodePort != 0 {
				a.release(ctx, portKey(p.NodePort))
			}
		}
	}
}

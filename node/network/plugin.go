// Package network owns pod networking on a node: the built-in CNI plugin
// (navarch-bridge: a node bridge, a veth per pod, host-local style IPAM and
// an nftables masquerade rule), and the runtime's side of CNI, which finds a
// network configuration in a CNI config dir and invokes plugins through
// libcni.
package network

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// SupportedVersions are the CNI spec versions the built-in plugin answers.
var supportedVersions = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// PluginMain runs the built-in plugin as the CNI spec has it: the command in
// CNI_COMMAND and the rest of the environment, the configuration on stdin,
// the result or a JSON error on stdout. It returns the exit code.
func PluginMain(about string) int {
	err := skel.PluginMainFuncsWithError(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		Status: cmdStatus,
		GC:     cmdGC,
	}, supportedVersions, about)
	if err != nil {
		if perr := err.Print(); perr != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", PluginName, err)
		}
		return 1
	}
	return 0
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, res, err := add(args)
	if err != nil {
		return err
	}
	return types.PrintResult(res, conf.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error { return del(args) }

func cmdCheck(args *skel.CmdArgs) error { return check(args) }

// cmdStatus answers whether ADD can work: the configuration is valid and the
// IPAM directory is usable.
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	dir := newAllocator(conf.Name, conf.DataDir, conf.subnet).dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("network %q: ipam dir %s unusable", conf.Name, dir), err.Error())
	}
	return nil
}

// cmdGC releases the allocations of attachments the runtime no longer knows.
func cmdGC(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		keep[owner(a.ContainerID, a.IfName)] = true
	}
	return newAllocator(conf.Name, conf.DataDir, conf.subnet).ReleaseAllExcept(keep)
}

// hostVethName derives the host end's name from the attachment, so DEL and
// CHECK find it without state (15 characters at most, as the kernel wants).
func hostVethName(network, containerID, ifName string) string {
	sum := sha256.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifName))
	return "nv" + hex.EncodeToString(sum[:])[:11]
}

// bridgeMAC is fixed for a bridge name. Setting it explicitly keeps the
// kernel from giving the bridge the lowest MAC of its ports, which would
// change the gateway's MAC as pods come and go.
func bridgeMAC(name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("navarch bridge " + name))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01 // locally administered, unicast
	return mac
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

func add(args *skel.CmdArgs) (*PluginConf, *types100.Result, error) {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return nil, nil, err
	}
	alloc := newAllocator(conf.Name, conf.DataDir, conf.subnet)
	ip, fresh, err := alloc.Allocate(args.ContainerID, args.IfName)
	if err != nil {
		return nil, nil, err
	}
	done := false
	defer func() {
		// An address this ADD did not reserve belongs to an earlier ADD of
		// the same attachment, which may be working.
		if !done && fresh {
			_ = alloc.Release(args.ContainerID, args.IfName)
		}
	}()

	gw := gateway(conf.subnet)
	br, err := ensureBridge(conf, gw)
	if err != nil {
		return nil, nil, err
	}

	podNS, err := netns.GetFromPath(args.Netns)
	if err != nil {
		return nil, nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("container %s: open netns %q", args.ContainerID, args.Netns), err.Error())
	}
	defer podNS.Close()
	ph, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return nil, nil, fmt.Errorf("container %s: netlink in netns %q: %w", args.ContainerID, args.Netns, err)
	}
	defer ph.Close()
	if _, err := ph.LinkByName(args.IfName); err == nil {
		return nil, nil, fmt.Errorf("container %s: interface %q already exists in netns %q", args.ContainerID, args.IfName, args.Netns)
	}

	hostName := hostVethName(conf.Name, args.ContainerID, args.IfName)
	if stale, err := netlink.LinkByName(hostName); err == nil {
		// Left by an ADD that failed half way: its pod end is gone or elsewhere.
		_ = netlink.LinkDel(stale)
	}
	la := netlink.NewLinkAttrs()
	la.Name = hostName
	la.MTU = conf.MTU
	veth := &netlink.Veth{LinkAttrs: la, PeerName: args.IfName, PeerNamespace: netlink.NsFd(int(podNS)), PeerMTU: uint32(conf.MTU)}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("container %s: create veth %s: %w", args.ContainerID, hostName, err)
	}
	defer func() {
		if !done {
			_ = netlink.LinkDel(veth)
		}
	}()
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return nil, nil, fmt.Errorf("container %s: veth %s: %w", args.ContainerID, hostName, err)
	}
	if err := netlink.LinkSetMaster(host, br); err != nil {
		return nil, nil, fmt.Errorf("container %s: attach %s to bridge %s: %w", args.ContainerID, hostName, conf.Bridge, err)
	}
	if err := netlink.LinkSetHairpin(host, isTrue(conf.HairpinMode)); err != nil {
		return nil, nil, fmt.Errorf("container %s: hairpin on %s: %w", args.ContainerID, hostName, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return nil, nil, fmt.Errorf("container %s: set %s up: %w", args.ContainerID, hostName, err)
	}

	pod, err := ph.LinkByName(args.IfName)
	if err != nil {
		return nil, nil, fmt.Errorf("container %s: pod interface %s: %w", args.ContainerID, args.IfName, err)
	}
	addr := &net.IPNet{IP: ip, Mask: conf.subnet.Mask}
	if err := ph.AddrAdd(pod, &netlink.Addr{IPNet: addr}); err != nil {
		return nil, nil, fmt.Errorf("container %s: address %s on %s: %w", args.ContainerID, addr, args.IfName, err)
	}
	if err := ph.LinkSetUp(pod); err != nil {
		return nil, nil, fmt.Errorf("container %s: set %s up: %w", args.ContainerID, args.IfName, err)
	}
	// The runtime gets a working localhost without a loopback plugin.
	if lo, err := ph.LinkByName("lo"); err == nil {
		if err := ph.LinkSetUp(lo); err != nil {
			return nil, nil, fmt.Errorf("container %s: set lo up: %w", args.ContainerID, err)
		}
	}
	if err := ph.RouteReplace(&netlink.Route{LinkIndex: pod.Attrs().Index, Gw: gw}); err != nil {
		return nil, nil, fmt.Errorf("container %s: default route via %s: %w", args.ContainerID, gw, err)
	}

	if isTrue(conf.IPMasq) {
		if err := ensureMasquerade(conf.Name, conf.subnet, conf.clusterCIDR); err != nil {
			return nil, nil, err
		}
	}
	if isTrue(conf.IPForward) {
		if err := enableIPForward(); err != nil {
			return nil, nil, fmt.Errorf("network %q: %w", conf.Name, err)
		}
	}

	podIdx := 2
	res := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: conf.Bridge, Mac: br.Attrs().HardwareAddr.String()},
			{Name: hostName, Mac: host.Attrs().HardwareAddr.String()},
			{Name: args.IfName, Mac: pod.Attrs().HardwareAddr.String(), Mtu: conf.MTU, Sandbox: args.Netns},
		},
		IPs:    []*types100.IPConfig{{Interface: &podIdx, Address: *addr, Gateway: gw}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw}},
		DNS:    conf.DNS,
	}
	done = true
	return conf, res, nil
}

// ensureBridge creates the node bridge with the gateway address, or checks
// the one that exists; concurrent ADDs may race to create it.
func ensureBridge(conf *PluginConf, gw net.IP) (netlink.Link, error) {
	l, err := netlink.LinkByName(conf.Bridge)
	if err != nil {
		if !isNotFound(err) {
			return nil, fmt.Errorf("bridge %s: %w", conf.Bridge, err)
		}
		la := netlink.NewLinkAttrs()
		la.Name = conf.Bridge
		la.MTU = conf.MTU
		la.HardwareAddr = bridgeMAC(conf.Bridge)
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("bridge %s: create: %w", conf.Bridge, err)
		}
		if l, err = netlink.LinkByName(conf.Bridge); err != nil {
			return nil, fmt.Errorf("bridge %s: %w", conf.Bridge, err)
		}
	}
	if _, ok := l.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("bridge %s: the link exists and is a %s, not a bridge", conf.Bridge, l.Type())
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: list addresses: %w", conf.Bridge, err)
	}
	want := &net.IPNet{IP: gw, Mask: conf.subnet.Mask}
	have := false
	for _, a := range addrs {
		if a.IPNet.String() == want.String() {
			have = true
		}
	}
	if !have {
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: want}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("bridge %s: gateway address %s: %w", conf.Bridge, want, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("bridge %s: set up: %w", conf.Bridge, err)
		}
	}
	return l, nil
}

// del removes the pod's veth and releases its address. Whatever is already
// gone (the netns, the veth, the allocation) is not an error.
func del(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if args.Netns != "" {
		if podNS, err := netns.GetFromPath(args.Netns); err == nil {
			ph, err := netlink.NewHandleAt(podNS)
			if err == nil {
				if l, err := ph.LinkByName(args.IfName); err == nil && l.Type() == "veth" {
					if err := ph.LinkDel(l); err != nil && !isNotFound(err) {
						ph.Close()
						podNS.Close()
						return fmt.Errorf("container %s: delete %s: %w", args.ContainerID, args.IfName, err)
					}
				}
				ph.Close()
			}
			podNS.Close()
		}
	}
	hostName := hostVethName(conf.Name, args.ContainerID, args.IfName)
	if l, err := netlink.LinkByName(hostName); err == nil {
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
			return fmt.Errorf("container %s: delete veth %s: %w", args.ContainerID, hostName, err)
		}
	}
	// Released last, so the address is never handed out while in use.
	return newAllocator(conf.Name, conf.DataDir, conf.subnet).Release(args.ContainerID, args.IfName)
}

// check verifies that what ADD set up is still there and as prevResult says.
func check(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	id := args.ContainerID
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "decode prevResult", err.Error())
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("container %s: CHECK needs prevResult", id), "")
	}
	prev, err := types100.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "convert prevResult", err.Error())
	}
	ip, err := newAllocator(conf.Name, conf.DataDir, conf.subnet).Lookup(id, args.IfName)
	if err != nil {
		return err
	}
	if ip == nil {
		return fmt.Errorf("container %s: no address allocated in network %q", id, conf.Name)
	}
	found := false
	for _, c := range prev.IPs {
		found = found || c.Address.IP.Equal(ip)
	}
	if !found {
		return fmt.Errorf("container %s: allocated %s is not in prevResult", id, ip)
	}
	br, err := netlink.LinkByName(conf.Bridge)
	if err != nil {
		return fmt.Errorf("container %s: bridge %s: %w", id, conf.Bridge, err)
	}
	hostName := hostVethName(conf.Name, id, args.IfName)
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("container %s: veth %s: %w", id, hostName, err)
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		return fmt.Errorf("container %s: veth %s is not on bridge %s", id, hostName, conf.Bridge)
	}
	podNS, err := netns.GetFromPath(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("container %s: open netns %q", id, args.Netns), err.Error())
	}
	defer podNS.Close()
	ph, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return fmt.Errorf("container %s: netlink in netns %q: %w", id, args.Netns, err)
	}
	defer ph.Close()
	pod, err := ph.LinkByName(args.IfName)
	if err != nil {
		return fmt.Errorf("container %s: pod interface %s: %w", id, args.IfName, err)
	}
	addrs, err := ph.AddrList(pod, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("container %s: addresses of %s: %w", id, args.IfName, err)
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			return nil
		}
	}
	return fmt.Errorf("container %s: %s does not carry %s", id, args.IfName, ip)
}

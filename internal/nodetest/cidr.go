package nodetest

import (
	"crypto/rand"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// FreeCIDR picks a 10.2xx.0.0/16 that no host interface address or IPv4
// route is in, so that every node's pod CIDR out of it is free too.
func FreeCIDR() (*net.IPNet, error) {
	addrs, _ := net.InterfaceAddrs()
	for i := 0; i < 100; i++ {
		b := make([]byte, 1)
		_, _ = rand.Read(b)
		_, n, _ := net.ParseCIDR(fmt.Sprintf("10.%d.0.0/16", 200+int(b[0])%50))
		clash := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && (n.Contains(ipn.IP) || ipn.Contains(n.IP)) {
				clash = true
			}
		}
		// Listed each time: other tests add and remove bridges meanwhile.
		routes, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.To4() == nil {
				continue // the default route
			}
			if ones, _ := r.Dst.Mask.Size(); ones > 0 && (n.Contains(r.Dst.IP) || r.Dst.Contains(n.IP)) {
				clash = true
			}
		}
		if !clash {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no free /16 in 10.200.0.0-10.249.0.0 for the cluster CIDR")
}

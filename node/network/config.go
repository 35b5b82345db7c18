package network

import (
	"encoding/json"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
)

// PluginName is the CNI "type" of the built-in plugin, and the name under
// which the navarch binary acts as it (argv[0], e.g. a symlink in a CNI bin
// dir).
const PluginName = "navarch-bridge"

// Defaults of the plugin's configuration.
const (
	DefaultBridge  = "navarch0"
	DefaultDataDir = "/var/lib/navarch/network/ipam"
	DefaultMTU     = 1500
)

// PluginConf is the built-in plugin's network configuration. Its IPAM is
// built in (host-local style over "subnet"); an "ipam" section is ignored.
type PluginConf struct {
	types.PluginConf

	// Bridge is the node bridge the pods' veths are attached to.
	Bridge string `json:"bridge,omitempty"`
	// Subnet is the node's podCIDR; its first address is the gateway on the
	// bridge, pods get the following ones.
	Subnet string `json:"subnet"`
	// ClusterCIDR is every pod's address range; traffic from pods to
	// destinations outside it is masqueraded. Empty means Subnet.
	ClusterCIDR string `json:"clusterCIDR,omitempty"`
	MTU         int    `json:"mtu,omitempty"`
	// HairpinMode lets a pod reach itself through a Service (default true).
	HairpinMode *bool `json:"hairpinMode,omitempty"`
	// IPMasq installs the nftables masquerade rule (default true).
	IPMasq *bool `json:"ipMasq,omitempty"`
	// IPForward turns on net.ipv4.ip_forward so pods reach beyond the node
	// (default true).
	IPForward *bool `json:"ipForward,omitempty"`
	// DataDir holds the IPAM allocations, one directory per network.
	DataDir string `json:"dataDir,omitempty"`

	subnet      *net.IPNet
	clusterCIDR *net.IPNet
}

func isTrue(b *bool) bool { return b == nil || *b }

// parseConf decodes and validates a plugin configuration and fills defaults.
func parseConf(data []byte) (*PluginConf, error) {
	c := &PluginConf{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode network configuration", err.Error())
	}
	bad := func(format string, a ...any) error {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("network %q: ", c.Name)+fmt.Sprintf(format, a...), "")
	}
	if c.Name == "" {
		return nil, bad("name is required")
	}
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if len(c.Bridge) > 15 {
		return nil, bad("bridge name %q is longer than 15 characters", c.Bridge)
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return nil, bad("mtu %d out of range", c.MTU)
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Subnet == "" {
		return nil, bad("subnet is required (the node's podCIDR, e.g. 10.42.0.0/24)")
	}
	_, sn, err := net.ParseCIDR(c.Subnet)
	if err != nil {
		return nil, bad("subnet %q: %v", c.Subnet, err)
	}
	if _, _, err := hostRange(sn); err != nil {
		return nil, bad("%v", err)
	}
	c.subnet = sn
	c.clusterCIDR = sn
	if c.ClusterCIDR != "" {
		_, cc, err := net.ParseCIDR(c.ClusterCIDR)
		if err != nil || cc.IP.To4() == nil {
			return nil, bad("clusterCIDR %q is not an IPv4 CIDR", c.ClusterCIDR)
		}
		if !cc.Contains(sn.IP) {
			return nil, bad("subnet %s is not inside clusterCIDR %s", sn, cc)
		}
		c.clusterCIDR = cc
	}
	return c, nil
}

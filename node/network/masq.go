package network

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Masquerading uses nftables through netlink (github.com/google/nftables), so
// it needs neither the nft nor the iptables binary. Each network owns one
// table, "ip cni-<network>", with one chain hooked at postrouting (srcnat
// priority) and one rule:
//
//	ip saddr <subnet> ip daddr != <clusterCIDR> ip daddr != 224.0.0.0/4 masquerade
//
// so pod-to-pod traffic inside the cluster keeps its source address. The
// rules are per node, not per pod: ADD makes sure they are there and DEL
// leaves them.

const masqChain = "postrouting"

func masqTable(network string) string { return "cni-" + network }

var multicast = &net.IPNet{IP: net.IPv4(224, 0, 0, 0).To4(), Mask: net.CIDRMask(4, 32)}

// ensureMasquerade installs the network's masquerade rule unless it is
// already there as wanted. The rewrite is one nftables transaction (add
// table, delete it, recreate it with its chain and rule), so concurrent ADDs
// converge on exactly one rule.
func ensureMasquerade(network string, subnet, cluster *net.IPNet) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("network %q: nftables: %w", network, err)
	}
	tag := []byte(fmt.Sprintf("navarch masquerade %s not to %s", subnet, cluster))
	table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: masqTable(network)}
	chain := &nftables.Chain{
		Name:     masqChain,
		Table:    table,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	}
	if rules, err := c.GetRules(table, chain); err == nil && len(rules) == 1 && bytes.Equal(rules[0].UserData, tag) {
		return nil
	}
	var exprs []expr.Any
	exprs = append(exprs, matchNet(12, subnet, expr.CmpOpEq)...)
	exprs = append(exprs, matchNet(16, cluster, expr.CmpOpNeq)...)
	exprs = append(exprs, matchNet(16, multicast, expr.CmpOpNeq)...)
	exprs = append(exprs, &expr.Masq{})
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	c.AddChain(chain)
	c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: exprs, UserData: tag})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network %q: install masquerade rule: %w", network, err)
	}
	return nil
}

// matchNet compares the IPv4 address at offset (12 source, 16 destination)
// of the network header, masked, with n.
func matchNet(offset uint32, n *net.IPNet, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte(net.IP(n.Mask).To4()), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: op, Register: 1, Data: []byte(n.IP.To4())},
	}
}

// removeMasquerade deletes the network's table; a missing table is fine.
func removeMasquerade(network string) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	if _, err := c.ListTableOfFamily(masqTable(network), nftables.TableFamilyIPv4); err != nil {
		return nil
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: masqTable(network)})
	return c.Flush()
}

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// enableIPForward turns on IPv4 forwarding, writing only when it is off.
func enableIPForward() error {
	b, err := os.ReadFile(ipForwardPath)
	if err != nil {
		return fmt.Errorf("read %s: %w", ipForwardPath, err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(ipForwardPath, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	}
	return nil
}

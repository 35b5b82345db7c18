package nodeipam

import (
	"errors"
	"fmt"
	"math/big"
	"net"
)

// ErrExhausted is returned when every subnet of the cluster CIDR is taken.
var ErrExhausted = errors.New("no CIDR left in the cluster CIDR")

// maxBits bounds how many subnets a range may have (2^16), as upstream
// does, so that the used set stays small.
const maxBits = 16

// cidrSet hands out the subnets of one size inside a cluster CIDR, each at
// most once. It is not safe for concurrent use; the controller locks it.
type cidrSet struct {
	cluster  *net.IPNet
	maskSize int
	bits     int // address length: 32 or 128
	used     []bool
	next     int // where the search for a free subnet starts, so a released one is not reused at once
}

// parseRange checks a cluster CIDR and a node mask size.
func parseRange(clusterCIDR string, maskSize int) (*cidrSet, error) {
	_, cluster, err := net.ParseCIDR(clusterCIDR)
	if err != nil {
		return nil, fmt.Errorf("cluster CIDR %q: %w", clusterCIDR, err)
	}
	ones, bits := cluster.Mask.Size()
	if maskSize < ones || maskSize > bits {
		return nil, fmt.Errorf("node CIDR mask size %d must be between %d (the cluster CIDR's) and %d", maskSize, ones, bits)
	}
	if maskSize-ones > maxBits {
		return nil, fmt.Errorf("node CIDR mask size %d is more than %d bits longer than the cluster CIDR's /%d", maskSize, maxBits, ones)
	}
	return &cidrSet{cluster: cluster, maskSize: maskSize, bits: bits, used: make([]bool, 1<<(maskSize-ones))}, nil
}

// ValidateRange says whether --cluster-cidr and --node-cidr-mask-size fit
// together, for the server's flag checks.
func ValidateRange(clusterCIDR string, maskSize int) error {
	_, err := parseRange(clusterCIDR, maskSize)
	return err
}

// subnet returns the i-th subnet.
func (s *cidrSet) subnet(i int) *net.IPNet {
	base := new(big.Int).SetBytes(s.cluster.IP)
	base.Add(base, new(big.Int).Lsh(big.NewInt(int64(i)), uint(s.bits-s.maskSize)))
	ip := make(net.IP, s.bits/8)
	base.FillBytes(ip)
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(s.maskSize, s.bits)}
}

// index returns which subnet cidr is, or false if it is not exactly one of
// this set's subnets.
func (s *cidrSet) index(cidr string) (int, bool) {
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil || !s.cluster.Contains(ip) {
		return 0, false
	}
	if ones, bits := n.Mask.Size(); ones != s.maskSize || bits != s.bits {
		return 0, false
	}
	base := new(big.Int).SetBytes(s.cluster.IP)
	off := new(big.Int).SetBytes(n.IP.To16()[16-s.bits/8:])
	off.Sub(off, base).Rsh(off, uint(s.bits-s.maskSize))
	return int(off.Int64()), true
}

// allocate takes the next free subnet.
func (s *cidrSet) allocate() (string, error) {
	for k := 0; k < len(s.used); k++ {
		i := (s.next + k) % len(s.used)
		if !s.used[i] {
			s.used[i] = true
			s.next = (i + 1) % len(s.used)
			return s.subnet(i).String(), nil
		}
	}
	return "", ErrExhausted
}

// occupy marks a subnet used; it reports false for one outside the set.
func (s *cidrSet) occupy(cidr string) bool {
	i, ok := s.index(cidr)
	if ok {
		s.used[i] = true
	}
	return ok
}

// release frees a subnet; one outside the set is ignored.
func (s *cidrSet) release(cidr string) {
	if i, ok := s.index(cidr); ok {
		s.used[i] = false
	}
}

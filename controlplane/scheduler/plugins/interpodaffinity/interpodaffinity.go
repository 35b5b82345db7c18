// Package interpodaffinity places pods relative to other pods: the required
// pod affinity and anti-affinity of the incoming pod, and the required
// anti-affinity of the pods already placed (symmetry), filter nodes; the
// preferred terms of both sides score them. A term is about a topology
// domain (the nodes sharing a value of its topologyKey), so the plugin
// counts matching pods per domain once per decision from the snapshot and
// then looks each node's domain up.
package interpodaffinity

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/navarch/navarch/controlplane/scheduler/framework"
)

// Upstream's reasons.
const (
	ReasonAffinity         = "node(s) didn't match pod affinity rules"
	ReasonAntiAffinity     = "node(s) didn't match pod anti-affinity rules"
	ReasonExistingAntiRule = "node(s) didn't satisfy existing pods anti-affinity rules"
)

// hardAffinityWeight is what an existing pod's required affinity term that
// matches the incoming pod adds to the score (upstream's default
// hardPodAffinityWeight).
const hardAffinityWeight = 1

// Plugin is the InterPodAffinity filter and score.
type Plugin struct{}

// Name implements framework.SnapshotFilterPlugin and framework.SnapshotScorePlugin.
func (Plugin) Name() string { return "InterPodAffinity" }

type term = framework.AffinityTerm

// domains counts per topology key, then per value of that key.
type domains map[string]map[string]int64

func (d domains) add(key, value string, n int64) {
	m := d[key]
	if m == nil {
		m = map[string]int64{}
		d[key] = m
	}
	m[value] += n
}

// at is the count of node's domain for key; ok is false when the node
// does not have the key.
func (d domains) at(key string, node *corev1.Node) (n int64, ok bool) {
	v, ok := node.Labels[key]
	if !ok {
		return 0, false
	}
	return d[key][v], true
}

// PreFilter implements framework.SnapshotFilterPlugin.
func (Plugin) PreFilter(pod *corev1.Pod, snap *framework.Snapshot) framework.NodeFilter {
	info := framework.NewAffinityInfo(pod)
	affinity, anti := info.RequiredAffinity, info.RequiredAnti
	affinityCounts, antiCounts, existingAnti := domains{}, domains{}, domains{}
	anyAffinityMatch := false
	for _, n := range snap.Nodes {
		// Existing pods whose required anti-affinity the incoming pod matches
		// forbid their domains to it.
		for _, p := range n.WithAffinity {
			for i := range p.RequiredAnti {
				t := &p.RequiredAnti[i]
				if v, ok := n.Node.Labels[t.TopologyKey]; ok && t.MatchesPod(pod) {
					existingAnti.add(t.TopologyKey, v, 1)
				}
			}
		}
		if len(affinity) == 0 && len(anti) == 0 {
			continue
		}
		if len(affinity) > 0 {
			// As upstream, an existing pod counts for affinity only when it
			// matches all the incoming pod's affinity terms.
			for g := range n.GroupsWith(affinity[0].IndexLabel) {
				all := true
				for i := range affinity {
					all = all && affinity[i].Matches(g.Namespace, g.Labels)
				}
				if !all {
					continue
				}
				for i := range affinity {
					if v, ok := n.Node.Labels[affinity[i].TopologyKey]; ok {
						affinityCounts.add(affinity[i].TopologyKey, v, int64(g.Count))
						anyAffinityMatch = true
					}
				}
			}
		}
		for i := range anti {
			v, ok := n.Node.Labels[anti[i].TopologyKey]
			if !ok {
				continue
			}
			for g := range n.GroupsWith(anti[i].IndexLabel) {
				if anti[i].Matches(g.Namespace, g.Labels) {
					antiCounts.add(anti[i].TopologyKey, v, int64(g.Count))
				}
			}
		}
	}
	if len(affinity) == 0 && len(anti) == 0 && len(existingAnti) == 0 {
		return nil
	}
	// The first pod of a group whose affinity selects itself may go
	// anywhere the topology keys exist, or it could never start.
	selfMatch := len(affinity) > 0
	for i := range affinity {
		selfMatch = selfMatch && affinity[i].MatchesPod(pod)
	}
	return func(node *framework.NodeInfo) string {
		if len(affinity) > 0 {
			exist := true
			for i := range affinity {
				n, ok := affinityCounts.at(affinity[i].TopologyKey, node.Node)
				if !ok {
					return ReasonAffinity
				}
				if n <= 0 {
					exist = false
				}
			}
			if !exist && (anyAffinityMatch || !selfMatch) {
				return ReasonAffinity
			}
		}
		for i := range anti {
			if n, _ := antiCounts.at(anti[i].TopologyKey, node.Node); n > 0 {
				return ReasonAntiAffinity
			}
		}
		for key := range existingAnti {
			if n, _ := existingAnti.at(key, node.Node); n > 0 {
				return ReasonExistingAntiRule
			}
		}
		return ""
	}
}

// ScoreNodes implements framework.SnapshotScorePlugin: for each node, the
// sum of the weights of the preferred terms its domains satisfy (the
// incoming pod's affinity +w and anti-affinity -w over the pods there; the
// placed pods' preferred terms that match the incoming pod likewise, and
// their required affinity terms with weight 1), normalized to 0..100
// between the lowest and the highest node.
func (Plugin) ScoreNodes(pod *corev1.Pod, snap *framework.Snapshot, nodes []*framework.NodeInfo) []int64 {
	scores := make([]int64, len(nodes))
	info := framework.NewAffinityInfo(pod)
	terms := append([]term(nil), info.PreferredAffinity...)
	for _, t := range info.PreferredAnti {
		t.Weight = -t.Weight
		terms = append(terms, t)
	}
	sums := domains{}
	for _, n := range snap.Nodes {
		for i := range terms {
			v, ok := n.Node.Labels[terms[i].TopologyKey]
			if !ok {
				continue
			}
			for g := range n.GroupsWith(terms[i].IndexLabel) {
				if terms[i].Matches(g.Namespace, g.Labels) {
					sums.add(terms[i].TopologyKey, v, terms[i].Weight*int64(g.Count))
				}
			}
		}
		for _, p := range n.WithAffinity {
			existing := func(ts []term, sign, weight int64) {
				for i := range ts {
					if v, ok := n.Node.Labels[ts[i].TopologyKey]; ok && ts[i].MatchesPod(pod) {
						w := ts[i].Weight
						if weight != 0 {
							w = weight
						}
						sums.add(ts[i].TopologyKey, v, sign*w)
					}
				}
			}
			existing(p.PreferredAffinity, 1, 0)
			existing(p.PreferredAnti, -1, 0)
			existing(p.RequiredAffinity, 1, hardAffinityWeight)
		}
	}
	if len(sums) == 0 {
		return scores
	}
	for i, n := range nodes {
		for key := range sums {
			v, _ := sums.at(key, n.Node)
			scores[i] += v
		}
	}
	lo, hi := scores[0], scores[0]
	for _, s := range scores {
		lo, hi = min(lo, s), max(hi, s)
	}
	for i := range scores {
		if hi == lo {
			scores[i] = 0
			continue
		}
		scores[i] = 100 * (scores[i] - lo) / (hi - lo)
	}
	return scores
}

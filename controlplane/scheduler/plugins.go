package scheduler

import (
	"github.com/navarch/navarch/controlplane/scheduler/framework"
	"github.com/navarch/navarch/controlplane/scheduler/plugins/interpodaffinity"
	"github.com/navarch/navarch/controlplane/scheduler/plugins/nodeaffinity"
	"github.com/navarch/navarch/controlplane/scheduler/plugins/nodename"
	"github.com/navarch/navarch/controlplane/scheduler/plugins/nodeports"
	"github.com/navarch/navarch/controlplane/scheduler/plugins/noderesources"
	"github.com/navarch/navarch/controlplane/scheduler/plugins/nodeunschedulable"
	"github.com/navarch/navarch/controlplane/scheduler/plugins/podtopologyspread"
	"github.com/navarch/navarch/controlplane/scheduler/plugins/tainttoleration"
)

// DefaultPlugins is the scheduler's plugin set, in upstream's filter order
// and with upstream's default score weights.
func DefaultPlugins() framework.Plugins {
	return framework.Plugins{
		Filters: []framework.FilterPlugin{
			nodeunschedulable.Plugin{}, nodename.Plugin{}, tainttoleration.Plugin{},
			nodeaffinity.Plugin{}, nodeports.Plugin{}, noderesources.Fit{},
		},
		SnapshotFilters: []framework.SnapshotFilterPlugin{podtopologyspread.Plugin{}, interpodaffinity.Plugin{}},
		Scores: []framework.WeightedScore{
			{Plugin: noderesources.LeastAllocated{}, Weight: 1},
			{Plugin: noderesources.BalancedAllocation{}, Weight: 1},
			{Plugin: nodeaffinity.Plugin{}, Weight: 2},
			{Plugin: tainttoleration.Plugin{}, Weight: 3},
			{Snapshot: podtopologyspread.Plugin{}, Weight: 2},
			{Snapshot: interpodaffinity.Plugin{}, Weight: 2},
		},
	}
}

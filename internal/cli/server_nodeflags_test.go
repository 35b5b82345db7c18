package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/navarch/navarch/controlplane"
)

func nodeFlagsOf(grace, period, cidr, mask, gc, notReady, unreachable string) nodeFlags {
	return nodeFlags{&grace, &period, &cidr, &mask, &gc, &notReady, &unreachable}
}

func TestNodeFlags(t *testing.T) {
	var cfg controlplane.Config
	if err := nodeFlagsOf("50s", "5s", "10.42.0.0/16", "24", "12500", "300", "2").apply(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.NodeMonitorGracePeriod != 50*time.Second || cfg.NodeMonitorPeriod != 5*time.Second || cfg.ClusterCIDR != "10.42.0.0/16" ||
		cfg.NodeCIDRMaskSize != 24 || cfg.TerminatedPodGCThreshold != 12500 || cfg.DefaultNotReadyTolerationSeconds != 300 ||
		cfg.DefaultUnreachableTolerationSeconds != 2 {
		t.Fatalf("config %+v", cfg)
	}
	for _, tc := range []struct {
		f    nodeFlags
		flag string
	}{
		{nodeFlagsOf("soon", "5s", "10.42.0.0/16", "24", "1", "1", "1"), "--node-monitor-grace-period"},
		{nodeFlagsOf("50s", "0s", "10.42.0.0/16", "24", "1", "1", "1"), "--node-monitor-period"},
		{nodeFlagsOf("50s", "5s", "10.42.0.0/33", "24", "1", "1", "1"), "--cluster-cidr"},
		{nodeFlagsOf("50s", "5s", "10.42.0.0/16", "12", "1", "1", "1"), "--node-cidr-mask-size"},
		{nodeFlagsOf("50s", "5s", "10.42.0.0/16", "x", "1", "1", "1"), "--node-cidr-mask-size"},
		{nodeFlagsOf("50s", "5s", "10.42.0.0/16", "24", "many", "1", "1"), "--terminated-pod-gc-threshold"},
		{nodeFlagsOf("50s", "5s", "10.42.0.0/16", "24", "1", "-1", "1"), "--default-not-ready-toleration-seconds"},
		{nodeFlagsOf("50s", "5s", "10.42.0.0/16", "24", "1", "1", "1.5"), "--default-unreachable-toleration-seconds"},
	} {
		err := tc.f.apply(&controlplane.Config{})
		if err == nil || !strings.Contains(err.Error(), tc.flag) || strings.Contains(err.Error(), "\n") {
			t.Errorf("want a one-line error naming %s, got %v", tc.flag, err)
		}
	}
}

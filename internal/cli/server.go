package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/version"

	"github.com/navarch/navarch/controlplane"
	"github.com/navarch/navarch/controlplane/controllers/nodeipam"
)

func runServer(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("navarch server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "/var/lib/navarch", "directory for the cluster's state (etcd data, certificates)")
	bind := fs.String("bind-address", "127.0.0.1", "address the API server listens on")
	advertise := fs.String("advertise-address", "", "address of this server in the kubernetes Service's endpoints (default: the host's first global IPv4 address)")
	port := fs.Int("secure-port", 6443, "HTTPS port of the API server")
	kubeconfig := fs.String("write-kubeconfig", "", "where to write the admin kubeconfig (default DATA_DIR/admin.kubeconfig)")
	etcdServers := fs.String("etcd-servers", "", "comma-separated URLs of an external etcd cluster (default: an embedded member in DATA_DIR/etcd)")
	fs.Bool("disable-agent", false, "run no node agent in this process (the server does not start one yet: run navarch agent beside it)")
	serviceCIDR := fs.String("service-cluster-ip-range", "10.43.0.0/16", "CIDR that Service cluster IPs are allocated from")
	nodePorts := fs.String("service-node-port-range", "30000-32767", "port range that NodePort Services are allocated from")
	compaction := fs.Duration("etcd-compaction-interval", 5*time.Minute, "how often etcd history older than one interval is compacted (0 disables)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	nf := nodeFlags{
		grace:       fs.String("node-monitor-grace-period", "50s", "how long a node may go without a heartbeat (lease or status) before it is marked Unknown"),
		period:      fs.String("node-monitor-period", "5s", "how often node heartbeats are checked"),
		cidr:        fs.String("cluster-cidr", nodeipam.DefaultClusterCIDR, "CIDR that nodes' pod CIDRs are allocated from"),
		mask:        fs.String("node-cidr-mask-size", strconv.Itoa(nodeipam.DefaultMaskSize), "prefix length of each node's pod CIDR"),
		gc:          fs.String("terminated-pod-gc-threshold", "12500", "terminated pods kept before the oldest are deleted (0 or less keeps them all)"),
		notReady:    fs.String("default-not-ready-toleration-seconds", "300", "tolerationSeconds of the not-ready:NoExecute toleration added to pods that have none"),
		unreachable: fs.String("default-unreachable-toleration-seconds", "300", "tolerationSeconds of the unreachable:NoExecute toleration added to pods that have none"),
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "navarch server: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "navarch server: --log-level: %v\n", err)
		return 2
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})))
	base, size, err := parsePortRange(*nodePorts)
	if err != nil {
		fmt.Fprintf(stderr, "navarch server: --service-node-port-range: %v\n", err)
		return 2
	}
	if *port <= 0 || *port > 65535 {
		fmt.Fprintf(stderr, "navarch server: --secure-port %d is not a valid port\n", *port)
		return 2
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return exitOnError(stderr, err)
	}
	if *kubeconfig == "" {
		*kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	}
	var servers []string
	for _, s := range strings.Split(*etcdServers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			servers = append(servers, s)
		}
	}
	cfg := controlplane.Config{
		DataDir: dir, BindAddress: *bind, AdvertiseAddress: *advertise, SecurePort: *port, WriteKubeconfig: *kubeconfig,
		EtcdServers: servers, ServiceCIDR: *serviceCIDR, NodePortBase: base, NodePortSize: size,
		CompactionInterval: *compaction,
		Version: version.Info{Major: KubeMajor, Minor: KubeMinor, GitVersion: KubeVersion + "+navarch",
			GoVersion: runtime.Version(), Compiler: runtime.Compiler, Platform: runtime.GOOS + "/" + runtime.GOARCH},
	}
	if err := nf.apply(&cfg); err != nil {
		fmt.Fprintf(stderr, "navarch server: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return exitOnError(stderr, controlplane.Run(ctx, cfg))
}

// parsePortRange parses "30000-32767" into a base and a size.
func parsePortRange(s string) (int, int, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || a < 1 || b > 65535 || b < a {
		return 0, 0, fmt.Errorf("%q is not a range like 30000-32767", s)
	}
	return a, b - a + 1, nil
}

// nodeFlags are the node lifecycle, node IPAM, pod GC and default toleration
// flags. They are read as strings so that a bad value gets one line of
// error rather than the flag package's usage text.
type nodeFlags struct {
	grace, period, cidr, mask, gc, notReady, unreachable *string
}

// apply checks the flags and puts them in cfg.
func (f nodeFlags) apply(cfg *controlplane.Config) error {
	duration := func(name, v string) (time.Duration, error) {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("--%s: %q is not a positive duration like 50s", name, v)
		}
		return d, nil
	}
	number := func(name, v string, min int64) (int64, error) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < min {
			return 0, fmt.Errorf("--%s: %q is not a whole number of at least %d", name, v, min)
		}
		return n, nil
	}
	var err error
	if cfg.NodeMonitorGracePeriod, err = duration("node-monitor-grace-period", *f.grace); err != nil {
		return err
	}
	if cfg.NodeMonitorPeriod, err = duration("node-monitor-period", *f.period); err != nil {
		return err
	}
	mask, err := number("node-cidr-mask-size", *f.mask, 1)
	if err != nil {
		return err
	}
	if err := nodeipam.ValidateRange(*f.cidr, int(mask)); err != nil {
		return fmt.Errorf("--cluster-cidr, --node-cidr-mask-size: %w", err)
	}
	cfg.ClusterCIDR, cfg.NodeCIDRMaskSize = *f.cidr, int(mask)
	if cfg.TerminatedPodGCThreshold, err = strconv.Atoi(*f.gc); err != nil {
		return fmt.Errorf("--terminated-pod-gc-threshold: %q is not a whole number", *f.gc)
	}
	if cfg.DefaultNotReadyTolerationSeconds, err = number("default-not-ready-toleration-seconds", *f.notReady, 0); err != nil {
		return err
	}
	if cfg.DefaultUnreachableTolerationSeconds, err = number("default-unreachable-toleration-seconds", *f.unreachable, 0); err != nil {
		return err
	}
	return nil
}

package cli

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/rest"

	"github.com/navarch/navarch/controlplane"
	"github.com/navarch/navarch/controlplane/controllers/nodeipam"
	"github.com/navarch/navarch/internal/pki"
	"github.com/navarch/navarch/node/agent"
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
	disableAgent := fs.Bool("disable-agent", false, "run no node agent for this machine in this process (a control plane only; nodes join with navarch agent)")
	var node nodeAgentFlags
	node.ownNodeFlags(fs)
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
	// The CA is made here, before the control plane starts (which loads
	// it), because the node join token names it.
	ca, err := pki.EnsureCA(filepath.Join(dir, "pki"))
	if err != nil {
		return exitOnError(stderr, err)
	}
	tokenPath := filepath.Join(dir, "node-token")
	if _, _, err := pki.EnsureNodeToken(tokenPath, ca.CA); err != nil {
		return exitOnError(stderr, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	serverURL := "https://" + net.JoinHostPort(localHost(*bind), strconv.Itoa(*port))
	slog.Info("nodes join with", "command", fmt.Sprintf("navarch agent --server https://%s --token $(cat %s)",
		net.JoinHostPort(joinHost(*bind), strconv.Itoa(*port)), tokenPath))
	return exitOnError(stderr, runServerAndAgent(ctx, cfg, !*disableAgent, func(ctx context.Context) error {
		return runOwnAgent(ctx, ca, serverURL, dir, node, cfg.ClusterCIDR)
	}))
}

// runServerAndAgent runs the control plane and, with withAgent, the
// agent of this machine's node beside it. Stopping stops the agent first
// (it leaves the containers running, and its last status updates still
// reach the API server); a failure of either stops both.
func runServerAndAgent(ctx context.Context, cfg controlplane.Config, withAgent bool, runAgent func(context.Context) error) error {
	cpCtx, cpCancel := context.WithCancel(context.Background())
	defer cpCancel()
	cpDone := make(chan error, 1)
	go func() { cpDone <- controlplane.Run(cpCtx, cfg) }()
	if !withAgent {
		select {
		case err := <-cpDone:
			return err
		case <-ctx.Done():
			cpCancel()
			return <-cpDone
		}
	}
	agentCtx, agentCancel := context.WithCancel(context.Background())
	defer agentCancel()
	agentDone := make(chan error, 1)
	go func() { agentDone <- runAgent(agentCtx) }()
	select {
	case err := <-cpDone:
		agentCancel()
		<-agentDone
		return err
	case err := <-agentDone:
		cpCancel()
		cperr := <-cpDone
		if err != nil {
			return fmt.Errorf("node agent: %w (--disable-agent runs the server without one)", err)
		}
		return cperr
	case <-ctx.Done():
		agentCancel()
		if err := <-agentDone; err != nil {
			slog.Warn("node agent stopped", "err", err)
		}
		cpCancel()
		return <-cpDone
	}
}

// runOwnAgent waits until the API server at serverURL is ready, then runs
// this machine's node with the server's data dir. It authenticates as the
// node (system:node:NAME in system:nodes) with a client certificate from
// the cluster CA, not as admin.
func runOwnAgent(ctx context.Context, ca *pki.Bundle, serverURL, dataDir string, f nodeAgentFlags, clusterCIDR string) error {
	if err := waitReady(ctx, serverURL, ca); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	cfg := f.config(nil)
	cfg.DataDir = dataDir
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return err
		}
		cfg.NodeName = h
	}
	certPEM, keyPEM, err := ca.IssueNodeClientCert(cfg.NodeName)
	if err != nil {
		return err
	}
	cfg.REST = &rest.Config{Host: serverURL, UserAgent: "navarch-agent",
		TLSClientConfig: rest.TLSClientConfig{CAData: ca.CACertPEM, CertData: certPEM, KeyData: keyPEM}}
	cfg.ClusterCIDR = clusterCIDR
	if cfg.ClusterCIDR == "" {
		cfg.ClusterCIDR = nodeipam.DefaultClusterCIDR
	}
	// The node IPAM controller runs in this process: wait for its pod CIDR
	// rather than fall back to the agent's default.
	cfg.PodCIDRWait = 30 * time.Second
	slog.Info("starting node agent", "node", cfg.NodeName)
	return agent.Run(ctx, cfg)
}

// waitReady polls the API server's /readyz until it answers 200 or ctx
// ends.
func waitReady(ctx context.Context, serverURL string, ca *pki.Bundle) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.ClientCAs(), MinVersion: tls.VersionTLS12}}}
	defer client.CloseIdleConnections()
	for {
		if resp, err := client.Get(serverURL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// localHost is the address this machine reaches the API server at, as the
// control plane picks it: the bind address, or loopback for a wildcard.
func localHost(bind string) string {
	if bind == "" || bind == "0.0.0.0" || bind == "::" {
		return "127.0.0.1"
	}
	return bind
}

// joinHost is the address other machines join at: the bind address, or
// for a wildcard the hostname (which the serving certificate names).
func joinHost(bind string) string {
	if bind == "" || bind == "0.0.0.0" || bind == "::" {
		if h, err := os.Hostname(); err == nil {
			return h
		}
	}
	return bind
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

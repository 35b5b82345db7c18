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
	fs.Bool("disable-agent", false, "run no node agent in this process (the node agent does not exist yet, so this is always the case)")
	serviceCIDR := fs.String("service-cluster-ip-range", "10.43.0.0/16", "CIDR that Service cluster IPs are allocated from")
	nodePorts := fs.String("service-node-port-range", "30000-32767", "port range that NodePort Services are allocated from")
	compaction := fs.Duration("etcd-compaction-interval", 5*time.Minute, "how often etcd history older than one interval is compacted (0 disables)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
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

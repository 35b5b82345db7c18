package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/navarch/navarch/node/kubelet"
)

const agentUsage = `Usage: navarch agent [flags]

Runs a node agent: registers this machine as a Node and runs the pods bound
to it through the CRI. By default the built-in container runtime runs in this
process (socket DATA_DIR/runtime/runtime.sock, images DATA_DIR/images, CNI
configuration DATA_DIR/cni/net.d); --container-runtime-endpoint names another
CRI runtime instead (e.g. unix:///run/containerd/containerd.sock).

Stopping the agent (SIGINT, SIGTERM) leaves the containers running; the next
start re-adopts them. With --drain-on-stop it cordons the node and deletes its
pods (not DaemonSet pods) first, waiting for them to terminate.

Flags:
`

// runAgent is `navarch agent`.
func runAgent(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("navarch agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, agentUsage); fs.PrintDefaults() }
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the API server (default: $KUBECONFIG, then "+DefaultKubeconfigPath+")")
	dataDir := fs.String("data-dir", "/var/lib/navarch", "data directory of the node (pods, runtime state, images, network)")
	nodeName := fs.String("node-name", "", "name of the Node (default: the hostname)")
	endpoint := fs.String("container-runtime-endpoint", "", "CRI socket of the container runtime (default: the built-in runtime, started in this process)")
	bridge := fs.String("bridge-name", "navarch0", "bridge of the built-in CNI network")
	clusterCIDR := fs.String("cluster-cidr", "10.42.0.0/16", "every pod's address range (traffic leaving it is masqueraded)")
	podCIDR := fs.String("pod-cidr", "10.42.0.0/24", "pod CIDR used when the Node gets none from the node IPAM controller")
	podCIDRWait := fs.Duration("pod-cidr-wait", 5*time.Second, "how long to wait for the node IPAM controller to set the Node's podCIDR")
	nodeIP := fs.String("node-ip", "", "the node's InternalIP (default: the address of the default route's interface)")
	clusterDNS := fs.String("cluster-dns", "", "comma-separated DNS servers for pods of dnsPolicy ClusterFirst (default: the node's resolver)")
	clusterDomain := fs.String("cluster-domain", "cluster.local", "the cluster's DNS domain")
	insecureRegs := fs.String("insecure-registry", "", "comma-separated registries (host or host:port) pulled from over plain HTTP")
	drainOnStop := fs.Bool("drain-on-stop", false, "on SIGINT or SIGTERM, cordon the node and delete its pods before exiting")
	drainTimeout := fs.Duration("drain-timeout", 2*time.Minute, "how long --drain-on-stop waits for the pods to terminate")
	kubeletPort := fs.Int("kubelet-port", 10250, "port of the kubelet's HTTPS server (container logs for kubectl logs); 0 disables it")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "navarch agent: unexpected arguments %q\n", fs.Args())
		return 2
	}
	restCfg, err := clientConfig(*kubeconfig)
	if err != nil {
		return exitOnError(stderr, err)
	}
	restCfg.UserAgent = "navarch-agent"
	restCfg.QPS, restCfg.Burst = 50, 100
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return exitOnError(stderr, err)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(stderr, nil)))
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The node runs on ctx, which outlives the signal when draining: the
	// kubelet must run to terminate the pods the drain deletes.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	if *nodeName == "" {
		if *nodeName, err = os.Hostname(); err != nil {
			return exitOnError(stderr, err)
		}
	}
	cfg := kubelet.Config{
		Client: client, NodeName: *nodeName, DataDir: *dataDir,
		DefaultPodCIDR: *podCIDR, PodCIDRWait: *podCIDRWait, NodeIP: *nodeIP,
		ClusterDomain: *clusterDomain, Version: KubeVersion,
	}
	if *clusterDNS != "" {
		cfg.ClusterDNS = strings.Split(*clusterDNS, ",")
	}
	socket := strings.TrimPrefix(*endpoint, "unix://")
	served := make(chan error, 1)
	if socket == "" {
		var regs []string
		if *insecureRegs != "" {
			regs = strings.Split(*insecureRegs, ",")
		}
		b, err := kubelet.NewBuiltin(kubelet.BuiltinConfig{DataDir: *dataDir, Bridge: *bridge, ClusterCIDR: *clusterCIDR, InsecureRegistries: regs})
		if err != nil {
			return exitOnError(stderr, err)
		}
		socket = b.Socket()
		go func() { served <- b.Serve(ctx) }()
		cfg.OnPodCIDR = func(cidr string) error { return b.SetPodCIDR(ctx, cidr) }
	} else {
		close(served)
	}
	if !filepath.IsAbs(socket) {
		return exitOnError(stderr, fmt.Errorf("--container-runtime-endpoint %q: want unix:///path or /path", *endpoint))
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return exitOnError(stderr, err)
	}
	defer conn.Close()
	cfg.Runtime, cfg.Images = runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	if err := waitRuntime(sigCtx, cfg.Runtime, served); err != nil {
		return exitOnError(stderr, err)
	}
	if *kubeletPort != 0 {
		srv, err := kubeletServer(restCfg, *dataDir, *kubeletPort, cfg.Runtime, []string{*nodeName, *nodeIP})
		if err != nil {
			return exitOnError(stderr, err)
		}
		cfg.KubeletPort = srv.Port()
		go func() {
			if err := srv.Serve(ctx); err != nil {
				slog.Error("kubelet server stopped", "err", err)
			}
		}()
	}
	k, err := kubelet.New(cfg)
	if err != nil {
		return exitOnError(stderr, err)
	}
	ran := make(chan error, 1)
	go func() { ran <- k.Run(ctx) }()
	select {
	case err = <-ran:
	case <-sigCtx.Done():
		if *drainOnStop {
			slog.Info("agent draining the node", "node", cfg.NodeName)
			dctx, dcancel := context.WithTimeout(context.Background(), *drainTimeout)
			if derr := k.Drain(dctx); derr != nil {
				slog.Warn("agent drain incomplete", "err", derr)
			}
			dcancel()
		}
		cancel()
		err = <-ran
	}
	cancel()
	if serr := <-served; err == nil {
		err = serr
	}
	return exitOnError(stderr, err)
}

// kubeletServer listens on port for the kubelet's HTTPS server, which
// accepts the clients of the cluster CA the kubeconfig carries (the API
// server's kubelet client certificate).
func kubeletServer(restCfg *rest.Config, dataDir string, port int, rt runtimeapi.RuntimeServiceClient, hosts []string) (*kubelet.Server, error) {
	ca := restCfg.CAData
	if len(ca) == 0 && restCfg.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(restCfg.CAFile); err != nil {
			return nil, fmt.Errorf("--kubelet-port: cluster CA: %w", err)
		}
	}
	if len(ca) == 0 {
		return nil, errors.New("--kubelet-port: the kubeconfig has no cluster CA to verify the API server's client certificate by (use --kubelet-port=0)")
	}
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return nil, fmt.Errorf("--kubelet-port: %w", err)
	}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	srv, err := kubelet.NewServer(kubelet.ServerConfig{Listener: ln, Runtime: rt, CertDir: filepath.Join(dataDir, "pki"), Hosts: hosts, ClientCAPEM: ca})
	if err != nil {
		ln.Close()
		return nil, err
	}
	return srv, nil
}

// waitRuntime waits for the runtime to answer, or for the built-in one to
// fail to start.
func waitRuntime(ctx context.Context, rt runtimeapi.RuntimeServiceClient, served <-chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := rt.Version(ctx, &runtimeapi.VersionRequest{})
		if err == nil {
			return nil
		}
		select {
		case serr, ok := <-served:
			if ok && serr != nil {
				return serr
			}
		default:
		}
		if ctx.Err() != nil {
			return errors.New("stopped before the container runtime answered")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container runtime: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

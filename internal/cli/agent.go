package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"

	"github.com/navarch/navarch/node/agent"
)

const agentUsage = `Usage: navarch agent [flags]

Runs a node agent: registers this machine as a Node and runs the pods bound
to it through the CRI. It reaches the API server with a kubeconfig, or joins
with --server and --token (the content of the server's DATA_DIR/node-token;
the CA is pinned by the hash in the token, so nothing else is copied):

  navarch agent --server https://SERVER:6443 --token $(cat DATA_DIR/node-token)

(navarch server runs an agent for its own node unless --disable-agent.)

By default the built-in container runtime runs in this process (socket
DATA_DIR/runtime/runtime.sock, images DATA_DIR/images, CNI configuration
DATA_DIR/cni/net.d); --container-runtime-endpoint names another CRI runtime
instead (e.g. unix:///run/containerd/containerd.sock).

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
	serverURL := fs.String("server", "", "URL of the API server to join with --token (instead of a kubeconfig)")
	token := fs.String("token", "", "the server's node join token (DATA_DIR/node-token of the server), with --server")
	a := agentFlags(fs)
	drainOnStop := fs.Bool("drain-on-stop", false, "on SIGINT or SIGTERM, cordon the node and delete its pods before exiting")
	drainTimeout := fs.Duration("drain-timeout", 2*time.Minute, "how long --drain-on-stop waits for the pods to terminate")
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
	if (*serverURL == "") != (*token == "") {
		fmt.Fprintln(stderr, "navarch agent: --server and --token go together")
		return 2
	}
	if *serverURL != "" && *kubeconfig != "" {
		fmt.Fprintln(stderr, "navarch agent: --kubeconfig or --server with --token, not both")
		return 2
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(stderr, nil)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var restCfg *rest.Config
	var err error
	if *serverURL != "" {
		restCfg, err = agent.JoinConfig(ctx, *serverURL, strings.TrimSpace(*token))
	} else {
		restCfg, err = clientConfig(*kubeconfig)
	}
	if err != nil {
		return exitOnError(stderr, err)
	}
	cfg := a.config(restCfg)
	cfg.DrainOnStop, cfg.DrainTimeout = *drainOnStop, *drainTimeout
	return exitOnError(stderr, agent.Run(ctx, cfg))
}

// defaultOCIRuntime is --oci-runtime's default.
const defaultOCIRuntime = ""

// nodeAgentFlags are the flags of a node that `navarch agent` and
// `navarch server` (for its own node) share, under the same names.
type nodeAgentFlags struct {
	dataDir, nodeName, endpoint, bridge, clusterCIDR, podCIDR, nodeIP *string
	clusterDNS, clusterDomain, insecureRegs, cgroupRoot               *string
	ociRuntime                                                        *string
	podCIDRWait                                                       *time.Duration
	kubeletPort                                                       *int
	podMaxPids                                                        *int64
}

// agentFlags defines every node flag of `navarch agent`.
func agentFlags(fs *flag.FlagSet) nodeAgentFlags {
	f := nodeAgentFlags{dataDir: fs.String("data-dir", "/var/lib/navarch", "data directory of the node (pods, runtime state, images, network)")}
	f.ownNodeFlags(fs)
	f.clusterCIDR = fs.String("cluster-cidr", "10.42.0.0/16", "every pod's address range (traffic leaving it is masqueraded)")
	f.podCIDR = fs.String("pod-cidr", "10.42.0.0/24", "pod CIDR used when the Node gets none from the node IPAM controller")
	f.podCIDRWait = fs.Duration("pod-cidr-wait", 5*time.Second, "how long to wait for the node IPAM controller to set the Node's podCIDR")
	f.clusterDNS = fs.String("cluster-dns", "", "comma-separated DNS servers for pods of dnsPolicy ClusterFirst (default: the node's resolver)")
	f.clusterDomain = fs.String("cluster-domain", "cluster.local", "the cluster's DNS domain")
	f.insecureRegs = fs.String("insecure-registry", "", "comma-separated registries (host or host:port) pulled from over plain HTTP")
	f.podMaxPids = fs.Int64("pod-max-pids", -1, "most processes a pod may run (its cgroup's pids.max); -1 is unlimited")
	return f
}

// ownNodeFlags defines the node flags `navarch server` passes to its
// own node's agent.
func (f *nodeAgentFlags) ownNodeFlags(fs *flag.FlagSet) {
	f.nodeName = fs.String("node-name", "", "name of the Node (default: the hostname)")
	f.endpoint = fs.String("container-runtime-endpoint", "", "CRI socket of the container runtime (default: the built-in runtime, started in this process, on DATA_DIR/runtime/runtime.sock)")
	f.bridge = fs.String("bridge-name", "navarch0", "bridge of the built-in CNI network")
	f.nodeIP = fs.String("node-ip", "", "the node's InternalIP (default: the address of the default route's interface)")
	f.kubeletPort = fs.Int("kubelet-port", 10250, "port of the kubelet's HTTPS server (container logs for kubectl logs); 0 disables it")
	f.cgroupRoot = fs.String("cgroup-root", "/", "cgroup under which the pod cgroups go (ROOT/kubepods/...); each node on one machine needs its own")
	f.ociRuntime = fs.String("oci-runtime", defaultOCIRuntime, "OCI runtime binary of the built-in runtime, driven by runc's command line: runc, crun or a path; \"\" is the one built into navarch (runc's libcontainer)")
}

// config is the agent's Config from the flags; flags not defined are
// left at the agent's defaults.
func (f nodeAgentFlags) config(restCfg *rest.Config) agent.Config {
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	list := func(p *string) []string {
		if str(p) == "" {
			return nil
		}
		return strings.Split(*p, ",")
	}
	cfg := agent.Config{
		REST: restCfg, DataDir: str(f.dataDir), NodeName: str(f.nodeName), RuntimeEndpoint: str(f.endpoint),
		Bridge: str(f.bridge), ClusterCIDR: str(f.clusterCIDR), PodCIDR: str(f.podCIDR), NodeIP: str(f.nodeIP),
		ClusterDNS: list(f.clusterDNS), ClusterDomain: str(f.clusterDomain), InsecureRegistries: list(f.insecureRegs), CgroupRoot: str(f.cgroupRoot),
		PodCIDRWait: 5 * time.Second, Version: KubeVersion, OCIRuntime: str(f.ociRuntime),
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	if f.podCIDRWait != nil {
		cfg.PodCIDRWait = *f.podCIDRWait
	}
	if f.kubeletPort != nil {
		cfg.KubeletPort = *f.kubeletPort
	}
	if f.podMaxPids != nil {
		cfg.PodMaxPids = *f.podMaxPids
	}
	return cfg
}

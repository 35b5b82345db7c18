// Package agent assembles a node from the kubelet (node/kubelet) and a CRI
// runtime: the built-in one (node/runtime with node/images and
// node/network, served in this process on a socket under the data dir) or
// another on its own socket, plus the kubelet's HTTPS server. Both
// `navarch agent` and the agent `navarch server` runs for its own node are
// this; join.go makes the client config of an agent that joins with the
// server's node token.
//
// Stopping (the end of Run's context) leaves the containers running: the
// next start re-adopts them. With DrainOnStop the node is cordoned and its
// pods deleted first.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/navarch/navarch/node/kubelet"
)

// Config is a node: how it reaches the API server and what it runs on.
type Config struct {
	// REST reaches the API server; its CA also verifies the API server's
	// client certificate at the kubelet's HTTPS server.
	REST     *rest.Config
	NodeName string
	// DataDir holds pods, the built-in runtime's state, images, CNI
	// configuration and the kubelet's serving certificate (DATA_DIR/pki).
	DataDir string
	// RuntimeEndpoint is another CRI runtime's socket (unix:///path or
	// /path); "" runs the built-in runtime in this process.
	RuntimeEndpoint string
	// Bridge of the built-in CNI network (default navarch0).
	Bridge             string
	ClusterCIDR        string // every pod's range: traffic leaving it is masqueraded
	PodCIDR            string // used when the Node gets none within PodCIDRWait
	PodCIDRWait        time.Duration
	NodeIP             string
	ClusterDNS         []string
	ClusterDomain      string
	InsecureRegistries []string
	DrainOnStop        bool
	DrainTimeout       time.Duration
	// CgroupRoot is where the pod cgroups go (ROOT/kubepods/...), "/" by
	// default; two nodes on one machine need their own.
	CgroupRoot string
	// OCIRuntime is the built-in runtime's OCI runtime binary (runc, crun
	// or a path); "" is the one built into the binary (node/runtime/libct).
	OCIRuntime string
	// PodMaxPids is each pod's pids.max; -1 (or 0) is unlimited.
	PodMaxPids int64
	// KubeletPort of the HTTPS server (kubectl logs); 0 runs none.
	KubeletPort int
	Version     string
}

// Run runs the node until ctx ends (draining first with DrainOnStop).
func Run(ctx context.Context, cfg Config) error {
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return err
		}
		cfg.NodeName = h
	}
	restCfg := rest.CopyConfig(cfg.REST)
	if restCfg.UserAgent == "" {
		restCfg.UserAgent = "navarch-agent"
	}
	restCfg.QPS, restCfg.Burst = 50, 100
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	// The node runs on runCtx, which outlives ctx when draining: the
	// kubelet must run to terminate the pods the drain deletes.
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()

	kcfg := kubelet.Config{
		Client: client, NodeName: cfg.NodeName, DataDir: cfg.DataDir,
		DefaultPodCIDR: cfg.PodCIDR, PodCIDRWait: cfg.PodCIDRWait, NodeIP: cfg.NodeIP,
		ClusterDNS: cfg.ClusterDNS, ClusterDomain: cfg.ClusterDomain, Version: cfg.Version, CgroupRoot: cfg.CgroupRoot,
		PodMaxPids: cfg.PodMaxPids,
	}
	socket := strings.TrimPrefix(cfg.RuntimeEndpoint, "unix://")
	// served closes when the built-in runtime has stopped (servedErr says
	// why), at once for another runtime.
	served := make(chan struct{})
	var servedErr error
	if socket == "" {
		bcfg := kubelet.BuiltinConfig{DataDir: cfg.DataDir, Bridge: cfg.Bridge, ClusterCIDR: cfg.ClusterCIDR, InsecureRegistries: cfg.InsecureRegistries, OCIRuntime: cfg.OCIRuntime}
		b, err := kubelet.NewBuiltin(bcfg)
		if err != nil {
			return err
		}
		socket = b.Socket()
		go func() { servedErr = b.Serve(runCtx); close(served) }()
		kcfg.OnPodCIDR = func(cidr string) error { return b.SetPodCIDR(runCtx, cidr) }
	} else {
		close(served)
	}
	// The built-in runtime stops with runCtx; wait for it on every return.
	defer func() { cancel(); <-served }()
	if !filepath.IsAbs(socket) {
		return fmt.Errorf("container runtime endpoint %q: want unix:///path or /path", cfg.RuntimeEndpoint)
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	kcfg.Runtime, kcfg.Images = runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	if err := waitRuntime(ctx, kcfg.Runtime, served, &servedErr); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: not a failure
		}
		return err
	}
	if cfg.KubeletPort != 0 {
		srv, err := kubeletServer(restCfg, cfg.DataDir, cfg.KubeletPort, kcfg.Runtime, []string{cfg.NodeName, cfg.NodeIP})
		if err != nil {
			return err
		}
		kcfg.KubeletPort = srv.Port()
		go func() {
			if err := srv.Serve(runCtx); err != nil {
				slog.Error("kubelet server stopped", "err", err)
			}
		}()
	}
	k, err := kubelet.New(kcfg)
	if err != nil {
		return err
	}
	ran := make(chan error, 1)
	go func() { ran <- k.Run(runCtx) }()
	select {
	case err = <-ran:
	case <-ctx.Done():
		if cfg.DrainOnStop {
			slog.Info("agent draining the node", "node", cfg.NodeName)
			dctx, dcancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
			if derr := k.Drain(dctx); derr != nil {
				slog.Warn("agent drain incomplete", "err", derr)
			}
			dcancel()
		}
		cancel()
		err = <-ran
	}
	cancel()
	<-served
	if err == nil {
		err = servedErr
	}
	return err
}

// kubeletServer listens on port for the kubelet's HTTPS server, which
// accepts the clients of the cluster CA the client config carries (the API
// server's kubelet client certificate).
func kubeletServer(restCfg *rest.Config, dataDir string, port int, rt runtimeapi.RuntimeServiceClient, hosts []string) (*kubelet.Server, error) {
	ca := restCfg.CAData
	if len(ca) == 0 && restCfg.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(restCfg.CAFile); err != nil {
			return nil, fmt.Errorf("kubelet port: cluster CA: %w", err)
		}
	}
	if len(ca) == 0 {
		return nil, errors.New("kubelet port: the client config has no cluster CA to verify the API server's client certificate by (use --kubelet-port=0)")
	}
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return nil, fmt.Errorf("kubelet port: %w", err)
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
func waitRuntime(ctx context.Context, rt runtimeapi.RuntimeServiceClient, served <-chan struct{}, servedErr *error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := rt.Version(ctx, &runtimeapi.VersionRequest{})
		if err == nil {
			return nil
		}
		select {
		case <-served:
			if *servedErr != nil {
				return *servedErr
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

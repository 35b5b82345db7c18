package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/navarch/navarch/node/images"
	"github.com/navarch/navarch/node/network"
	noderuntime "github.com/navarch/navarch/node/runtime"
)

// This file wires the built-in node: the runtime (node/runtime) with the
// image store (node/images) and CNI (node/network), served on one socket.
// The kubelet itself never calls into them: it reaches the socket through
// CRI like any runtime's.

// BuiltinConfig places the built-in runtime's state under a data dir.
type BuiltinConfig struct {
	DataDir string
	// Socket defaults to DATA_DIR/runtime/runtime.sock.
	Socket string
	// CNIConfDir defaults to DATA_DIR/cni/net.d.
	CNIConfDir string
	// Bridge and NetworkName of the default CNI configuration (navarch0,
	// navarch); the network name also names the nftables table (cni-NAME)
	// and the IPAM directory.
	Bridge      string
	NetworkName string
	// ClusterCIDR is every pod's range, 10.42.0.0/16 by default.
	ClusterCIDR string
	// NoIPForward leaves net.ipv4.ip_forward alone (tests).
	NoIPForward bool
	// CgroupParent and ShimBinary as node/runtime's Config.
	CgroupParent string
	ShimBinary   string
	// OCIRuntime is node/runtime's Config.Runc: "" is the built-in one.
	OCIRuntime string
	// InsecureRegistries are pulled from over plain HTTP.
	InsecureRegistries []string
	// StreamAddress is where the runtime's streaming server (exec, attach,
	// port-forward) listens; "" is 127.0.0.1 on a free port.
	StreamAddress string
}

// Builtin is the built-in runtime with its images and network.
type Builtin struct {
	cfg     BuiltinConfig
	Store   *images.Store
	Network *network.Network
	Runtime *noderuntime.Server
}

// NewBuiltin opens the image store, prepares CNI and loads the runtime's
// records (re-adopting what runs).
func NewBuiltin(cfg BuiltinConfig) (*Builtin, error) {
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("built-in runtime: no data directory")
	}
	if cfg.Socket == "" {
		cfg.Socket = filepath.Join(cfg.DataDir, "runtime", "runtime.sock")
	}
	if cfg.CNIConfDir == "" {
		cfg.CNIConfDir = filepath.Join(cfg.DataDir, "cni", "net.d")
	}
	if cfg.Bridge == "" {
		cfg.Bridge = network.DefaultBridge
	}
	if cfg.NetworkName == "" {
		cfg.NetworkName = network.DefaultNetworkName
	}
	if cfg.ClusterCIDR == "" {
		cfg.ClusterCIDR = "10.42.0.0/16"
	}
	store, err := images.Open(filepath.Join(cfg.DataDir, "images"))
	if err != nil {
		return nil, err
	}
	nw, err := network.New(network.Config{
		ConfDir:   cfg.CNIConfDir,
		PluginDir: filepath.Join(cfg.DataDir, "network", "bin"),
		CacheDir:  filepath.Join(cfg.DataDir, "network", "cache"),
	})
	if err != nil {
		return nil, err
	}
	rt, err := noderuntime.New(noderuntime.Config{
		StateDir:      filepath.Join(cfg.DataDir, "runtime"),
		ShimBinary:    cfg.ShimBinary,
		Runc:          cfg.OCIRuntime,
		Images:        store,
		ImageService:  images.NewImageService(store, cfg.InsecureRegistries),
		CgroupParent:  cfg.CgroupParent,
		StreamAddress: cfg.StreamAddress,
		NetworkSetup: func(ctx context.Context, id, netns string, c *runtimeapi.PodSandboxConfig) (string, error) {
			return nw.Setup(ctx, id, netns, c.GetMetadata().GetNamespace(), c.GetMetadata().GetName())
		},
		NetworkTeardown: func(ctx context.Context, id, netns string, c *runtimeapi.PodSandboxConfig) error {
			return nw.Teardown(ctx, id, netns, c.GetMetadata().GetNamespace(), c.GetMetadata().GetName())
		},
		NetworkStatus: func() error { return nw.Status(context.Background()) },
	})
	if err != nil {
		return nil, err
	}
	return &Builtin{cfg: cfg, Store: store, Network: nw, Runtime: rt}, nil
}

// Socket is where Serve listens.
func (b *Builtin) Socket() string { return b.cfg.Socket }

// Serve answers CRI calls until ctx ends.
func (b *Builtin) Serve(ctx context.Context) error { return b.Runtime.Serve(ctx, b.cfg.Socket) }

// SetPodCIDR writes the built-in plugin's configuration for the node's pod
// CIDR, unless the conf dir already holds one (a user's plugin wins), then
// releases what a crash may have leaked from sandboxes no longer there.
func (b *Builtin) SetPodCIDR(ctx context.Context, podCIDR string) error {
	if err := writeCNIConfig(b.cfg, podCIDR); err != nil {
		return err
	}
	sbs, err := b.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return err
	}
	var live []string
	for _, sb := range sbs.GetItems() {
		if sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
			live = append(live, sb.GetId())
		}
	}
	if err := b.Network.GC(ctx, live); err != nil {
		// Not fatal: pods still get addresses.
		fmt.Fprintf(os.Stderr, "navarch: cni gc: %v\n", err)
	}
	return nil
}

// writeCNIConfig writes network.DefaultConfig with this node's bridge,
// network name and IPAM directory.
func writeCNIConfig(cfg BuiltinConfig, podCIDR string) error {
	for _, pat := range []string{"*.conflist", "*.conf", "*.json"} {
		if m, _ := filepath.Glob(filepath.Join(cfg.CNIConfDir, pat)); len(m) > 0 {
			return nil
		}
	}
	raw, err := network.DefaultConfig(podCIDR, cfg.ClusterCIDR)
	if err != nil {
		return err
	}
	var list map[string]any
	if err := json.Unmarshal(raw, &list); err != nil {
		return err
	}
	list["name"] = cfg.NetworkName
	plugins, _ := list["plugins"].([]any)
	if len(plugins) == 0 {
		return fmt.Errorf("cni default config has no plugin")
	}
	p := plugins[0].(map[string]any)
	p["bridge"] = cfg.Bridge
	p["dataDir"] = filepath.Join(cfg.DataDir, "network", "ipam")
	if cfg.NoIPForward {
		p["ipForward"] = false
	}
	out, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.CNIConfDir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(cfg.CNIConfDir, network.DefaultConfName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(out, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

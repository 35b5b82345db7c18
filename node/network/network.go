package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// Defaults of the runtime's side of CNI.
const (
	DefaultConfDir   = "/etc/cni/net.d"
	DefaultPluginDir = "/var/lib/navarch/network/bin"
	DefaultCacheDir  = "/var/lib/navarch/network/cache"
	DefaultIfName    = "eth0"
	// DefaultConfName is the file WriteDefaultConfig writes.
	DefaultConfName = "10-navarch.conflist"
	// DefaultNetworkName is the network name of the default configuration.
	DefaultNetworkName = "navarch"
)

// DefaultBinDirs are searched for plugins after the built-in plugin's dir.
var DefaultBinDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// Config says where Network finds configurations and plugins.
type Config struct {
	// ConfDir holds the network configuration: the first *.conflist, *.conf
	// or *.json by name is used, as CRI runtimes do.
	ConfDir string
	// PluginDir is prepared with a navarch-bridge symlink to Executable,
	// and searched first.
	PluginDir string
	// BinDirs are searched after PluginDir (DefaultBinDirs when nil).
	BinDirs []string
	// CacheDir is libcni's cache of results, which DEL and CHECK pass to
	// plugins as prevResult.
	CacheDir string
	// Executable is the binary that acts as the built-in plugin under the
	// name navarch-bridge (default: this process's executable).
	Executable string
	// IfName is the pod's interface name.
	IfName string
	// ExecBuiltin runs the built-in plugin as a process like any other,
	// instead of inside this process (see pluginExec).
	ExecBuiltin bool
}

// Network attaches pods to the node's pod network through libcni.
type Network struct {
	cfg Config
	cni *libcni.CNIConfig
}

// New fills cfg's defaults and prepares the built-in plugin's symlink.
func New(cfg Config) (*Network, error) {
	if cfg.ConfDir == "" {
		cfg.ConfDir = DefaultConfDir
	}
	if cfg.PluginDir == "" {
		cfg.PluginDir = DefaultPluginDir
	}
	if cfg.BinDirs == nil {
		cfg.BinDirs = DefaultBinDirs
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = DefaultCacheDir
	}
	if cfg.IfName == "" {
		cfg.IfName = DefaultIfName
	}
	if cfg.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("cni: own executable: %w", err)
		}
		cfg.Executable = exe
	}
	if err := linkPlugin(cfg.PluginDir, cfg.Executable); err != nil {
		return nil, err
	}
	path := append([]string{cfg.PluginDir}, cfg.BinDirs...)
	var exec invoke.Exec // nil: libcni's default, every plugin a process
	if !cfg.ExecBuiltin {
		exec = newPluginExec()
	}
	return &Network{cfg: cfg, cni: libcni.NewCNIConfigWithCacheDir(path, cfg.CacheDir, exec)}, nil
}

// linkPlugin points dir/navarch-bridge at exe, replacing a link to anything
// else atomically (a new link renamed over the old).
func linkPlugin(dir, exe string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cni plugin dir %s: %w", dir, err)
	}
	link := filepath.Join(dir, PluginName)
	if cur, err := os.Readlink(link); err == nil && cur == exe {
		return nil
	}
	tmp := link + ".new"
	_ = os.Remove(tmp)
	if err := os.Symlink(exe, tmp); err != nil {
		return fmt.Errorf("cni plugin link %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("cni plugin link %s: %w", link, err)
	}
	return nil
}

// confFiles lists the configuration files of dir in the order they are
// chosen.
func confFiles(dir string) ([]string, error) {
	files, err := libcni.ConfFiles(dir, []string{".conflist", ".conf", ".json"})
	if err != nil {
		return nil, fmt.Errorf("cni config dir %s: %w", dir, err)
	}
	sort.Strings(files)
	return files, nil
}

// load reads the configuration in use. It is read on every call, so a user
// swapping configurations needs no restart.
func (n *Network) load() (*libcni.NetworkConfigList, error) {
	files, err := confFiles(n.cfg.ConfDir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("cni config dir %s: no network configuration (*.conflist, *.conf)", n.cfg.ConfDir)
	}
	f := files[0]
	if filepath.Ext(f) == ".conflist" {
		list, err := libcni.NetworkConfFromFile(f)
		if err != nil {
			return nil, fmt.Errorf("cni config %s: %w", f, err)
		}
		return list, nil
	}
	conf, err := libcni.ConfFromFile(f) //nolint:staticcheck // single-plugin files are still common
	if err != nil {
		return nil, fmt.Errorf("cni config %s: %w", f, err)
	}
	list, err := libcni.ConfListFromConf(conf) //nolint:staticcheck
	if err != nil {
		return nil, fmt.Errorf("cni config %s: %w", f, err)
	}
	return list, nil
}

func (n *Network) runtimeConf(containerID, netnsPath, podNamespace, podName string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: containerID,
		NetNS:       netnsPath,
		IfName:      n.cfg.IfName,
		Args: [][2]string{
			// Plugins that parse CNI_ARGS strictly (host-local) refuse
			// unknown keys without it.
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", podNamespace},
			{"K8S_POD_NAME", podName},
			{"K8S_POD_INFRA_CONTAINER_ID", containerID},
		},
	}
}

// Setup attaches the pod sandbox containerID, whose network namespace is at
// netnsPath, and returns its IPv4 address.
func (n *Network) Setup(ctx context.Context, containerID, netnsPath, podNamespace, podName string) (string, error) {
	list, err := n.load()
	if err != nil {
		return "", fmt.Errorf("pod %s/%s: %w", podNamespace, podName, err)
	}
	res, err := n.cni.AddNetworkList(ctx, list, n.runtimeConf(containerID, netnsPath, podNamespace, podName))
	if err != nil {
		return "", fmt.Errorf("pod %s/%s: network %q: add: %w", podNamespace, podName, list.Name, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return "", fmt.Errorf("pod %s/%s: network %q: result: %w", podNamespace, podName, list.Name, err)
	}
	if ip := podIP(r); ip != nil {
		return ip.String(), nil
	}
	// Tear down what was set up rather than leave a pod without an address.
	_ = n.cni.DelNetworkList(ctx, list, n.runtimeConf(containerID, netnsPath, podNamespace, podName))
	return "", fmt.Errorf("pod %s/%s: network %q: the plugins returned no IPv4 address", podNamespace, podName, list.Name)
}

// podIP picks the first IPv4 address on an interface inside the sandbox, or
// the first IPv4 address when the plugins name no interface.
func podIP(r *types100.Result) net.IP {
	var any4 net.IP
	for _, c := range r.IPs {
		ip := c.Address.IP.To4()
		if ip == nil {
			continue
		}
		if c.Interface != nil && *c.Interface >= 0 && *c.Interface < len(r.Interfaces) && r.Interfaces[*c.Interface].Sandbox != "" {
			return ip
		}
		if any4 == nil {
			any4 = ip
		}
	}
	return any4
}

// Teardown detaches the pod sandbox; tearing down what is already gone
// succeeds.
func (n *Network) Teardown(ctx context.Context, containerID, netnsPath, podNamespace, podName string) error {
	list, err := n.load()
	if err != nil {
		return fmt.Errorf("pod %s/%s: %w", podNamespace, podName, err)
	}
	if err := n.cni.DelNetworkList(ctx, list, n.runtimeConf(containerID, netnsPath, podNamespace, podName)); err != nil {
		return fmt.Errorf("pod %s/%s: network %q: del: %w", podNamespace, podName, list.Name, err)
	}
	return nil
}

// Check asks the plugins whether the pod's attachment is still as set up.
func (n *Network) Check(ctx context.Context, containerID, netnsPath, podNamespace, podName string) error {
	list, err := n.load()
	if err != nil {
		return fmt.Errorf("pod %s/%s: %w", podNamespace, podName, err)
	}
	if err := n.cni.CheckNetworkList(ctx, list, n.runtimeConf(containerID, netnsPath, podNamespace, podName)); err != nil {
		return fmt.Errorf("pod %s/%s: network %q: check: %w", podNamespace, podName, list.Name, err)
	}
	return nil
}

// Status asks the plugins whether the network is ready for pods (CNI
// STATUS; plugins older than spec 1.1.0 are taken as ready).
func (n *Network) Status(ctx context.Context) error {
	list, err := n.load()
	if err != nil {
		return err
	}
	if err := n.cni.GetStatusNetworkList(ctx, list); err != nil {
		return fmt.Errorf("network %q: status: %w", list.Name, err)
	}
	return nil
}

// GC tears down every attachment of the network whose sandbox is not in
// sandboxIDs (those libcni's cache knows, as DEL), then asks the plugins to
// drop what they still hold for others (CNI GC, configs of spec 1.1.0 and
// later): what a crash between a sandbox's removal and its Teardown leaks.
func (n *Network) GC(ctx context.Context, sandboxIDs []string) error {
	list, err := n.load()
	if err != nil {
		return err
	}
	args := &libcni.GCArgs{}
	for _, id := range sandboxIDs {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: id, IfName: n.cfg.IfName})
	}
	if err := n.cni.GCNetworkList(ctx, list, args); err != nil {
		return fmt.Errorf("network %q: gc: %w", list.Name, err)
	}
	return nil
}

// DefaultConfig is the configuration list of the built-in plugin for a
// node's podCIDR within the cluster's clusterCIDR (empty: the podCIDR).
func DefaultConfig(podCIDR, clusterCIDR string) ([]byte, error) {
	plugin := map[string]any{
		"type":   PluginName,
		"bridge": DefaultBridge,
		"subnet": podCIDR,
		"mtu":    DefaultMTU,
	}
	if clusterCIDR != "" {
		plugin["clusterCIDR"] = clusterCIDR
	}
	list := map[string]any{
		// 1.1.0 for STATUS and GC; the plugin answers 1.0.0 and 0.4.0 too.
		"cniVersion": "1.1.0",
		"name":       DefaultNetworkName,
		"plugins":    []any{plugin},
	}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, err
	}
	// Validate as the plugin will.
	pc, _ := json.Marshal(map[string]any{"name": DefaultNetworkName, "cniVersion": "1.1.0", "type": PluginName, "subnet": podCIDR, "clusterCIDR": clusterCIDR})
	if _, err := parseConf(pc); err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// WriteDefaultConfig writes the built-in plugin's configuration to dir
// unless dir already holds a configuration, which then wins (a user's
// third-party plugin). It returns the path of the configuration in use.
func WriteDefaultConfig(dir, podCIDR, clusterCIDR string) (string, error) {
	files, err := confFiles(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if len(files) > 0 {
		return files[0], nil
	}
	b, err := DefaultConfig(podCIDR, clusterCIDR)
	if err != nil {
		return "", fmt.Errorf("cni default config for podCIDR %s: %w", podCIDR, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("cni config dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, DefaultConfName)
	tmp, err := os.CreateTemp(dir, ".navarch-")
	if err != nil {
		return "", fmt.Errorf("cni config %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return "", fmt.Errorf("cni config %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("cni config %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", fmt.Errorf("cni config %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("cni config %s: %w", path, err)
	}
	return path, nil
}

package network

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// pluginExec is libcni's plugin executor with one shortcut: the built-in
// plugin runs inside the calling process. Executing the navarch binary costs
// ~80 ms of start-up per call (the bundled kubectl's package initialisers)
// and ~100 MB of transient memory, against ~25 ms for the whole ADD+DEL in
// process. Every other plugin is a process, as the CNI spec has it; so is
// the built-in one for other runtimes (containerd) through its symlink.
type pluginExec struct {
	raw *invoke.RawExec
}

var _ invoke.Exec = pluginExec{}

func (e pluginExec) FindInPath(plugin string, paths []string) (string, error) {
	return e.raw.FindInPath(plugin, paths)
}

func (e pluginExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

func (e pluginExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	if filepath.Base(pluginPath) != PluginName {
		return e.raw.ExecPlugin(ctx, pluginPath, stdin, environ)
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "CNI_") {
			env[k] = v
		}
	}
	out, err := runInProcess(env, stdin)
	if err != nil {
		var cniErr *types.Error
		if errors.As(err, &cniErr) {
			return nil, cniErr
		}
		return nil, types.NewError(types.ErrInternal, err.Error(), "")
	}
	return out, nil
}

// runInProcess does what skel's dispatcher does for a plugin process, from
// the CNI_* variables and the configuration.
func runInProcess(env map[string]string, stdin []byte) ([]byte, error) {
	cmd := env["CNI_COMMAND"]
	if cmd == "VERSION" {
		var b bytes.Buffer
		if err := supportedVersions.Encode(&b); err != nil {
			return nil, err
		}
		return b.Bytes(), nil
	}
	confVersion, err := (&version.ConfigDecoder{}).Decode(stdin)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	if !slices.Contains(supportedVersions.SupportedVersions(), confVersion) {
		return nil, types.NewError(types.ErrIncompatibleCNIVersion, "incompatible CNI versions",
			fmt.Sprintf("config is %q, plugin supports %v", confVersion, supportedVersions.SupportedVersions()))
	}
	args := &skel.CmdArgs{
		ContainerID: env["CNI_CONTAINERID"],
		Netns:       env["CNI_NETNS"],
		IfName:      env["CNI_IFNAME"],
		Args:        env["CNI_ARGS"],
		Path:        env["CNI_PATH"],
		StdinData:   stdin,
	}
	switch cmd {
	case "ADD":
		conf, res, err := add(args)
		if err != nil {
			return nil, err
		}
		r, err := res.GetAsVersion(conf.CNIVersion)
		if err != nil {
			return nil, err
		}
		return json.Marshal(r)
	case "DEL":
		return nil, del(args)
	case "CHECK":
		return nil, check(args)
	case "STATUS":
		return nil, cmdStatus(args)
	case "GC":
		return nil, cmdGC(args)
	default:
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("unknown CNI_COMMAND %q", cmd), "")
	}
}

func newPluginExec() pluginExec { return pluginExec{raw: &invoke.RawExec{Stderr: os.Stderr}} }

package cli

import (
	"os"
	"path/filepath"

	"github.com/navarch/navarch/node/network"
)

// maybeRunCNI runs the built-in CNI plugin when this process is one: invoked
// as `navarch cni` (hidden) or under the plugin's name, which is how CNI
// runtimes call it (a navarch-bridge symlink in a CNI bin dir). The plugin
// reads its command from the CNI_* environment and its config from stdin,
// and writes its result to stdout, as the CNI spec has it.
func maybeRunCNI(args []string) (code int, ran bool) {
	if filepath.Base(os.Args[0]) != network.PluginName && (len(args) == 0 || args[0] != "cni") {
		return 0, false
	}
	return network.PluginMain(network.PluginName + ": Navarch's built-in CNI plugin " + Version), true
}

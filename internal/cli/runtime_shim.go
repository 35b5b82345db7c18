package cli

import (
	"runtime/debug"

	noderuntime "github.com/navarch/navarch/node/runtime"
)

// runRuntimeShim is the hidden `navarch runtime-shim` subcommand: the
// built-in runtime re-executes the binary this way for each container's shim
// (log copier, exit-status keeper, and holder of the container's stdio and
// terminal for attach), so that it outlives the runtime.
func runRuntimeShim(args []string) int {
	// A node runs one shim per container, each a copy of this whole binary
	// whose package initialisers leave megabytes of garbage behind. A shim
	// itself allocates little: hand that garbage back to the kernel now and
	// keep the heap tight (measured: 14 MB private per shim down to about
	// 10 MB).
	debug.SetGCPercent(25)
	debug.FreeOSMemory()
	return noderuntime.ShimMain(args)
}

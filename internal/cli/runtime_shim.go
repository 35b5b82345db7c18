package cli

import (
	noderuntime "github.com/navarch/navarch/node/runtime"
)

// runRuntimeShim is the hidden `navarch runtime-shim` subcommand: the
// built-in runtime re-executes the binary this way for each container's shim
// (log copier, exit-status keeper, and holder of the container's stdio and
// terminal for attach), so that it outlives the runtime.
func runRuntimeShim(args []string) int {
	return noderuntime.ShimMain(args)
}

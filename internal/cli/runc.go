package cli

import "github.com/navarch/navarch/node/runtime/libct"

// runRunc is the hidden `navarch runc` subcommand: the built-in runtime's
// default OCI executor, answering the part of runc's command line the
// runtime uses, on runc's libcontainer (node/runtime/libct), so that a node
// needs no runc binary.
func runRunc(args []string) int {
	return libct.Main(args)
}

// RunContainerInit runs libcontainer's container init and does not return,
// if this process is one (libcontainer re-executes the binary as `init`
// for each container and exec); otherwise it returns at once. main calls
// it before anything else.
func RunContainerInit(args []string) {
	if libct.IsInit(args) {
		libct.Init()
	}
}

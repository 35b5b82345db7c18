// Command navarch is the whole Navarch orchestrator in one binary.
package main

import (
	"os"

	"github.com/navarch/navarch/internal/cli"
)

func main() {
	// A container's init, re-executed by libcontainer, must run before
	// anything else.
	cli.RunContainerInit(os.Args)
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}

// Command navarch is the whole Navarch orchestrator in one binary.
package main

import (
	"os"

	"github.com/navarch/navarch/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }

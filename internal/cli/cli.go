// Package cli implements the navarch command line: one binary whose
// subcommands (server, agent, kubectl, sim, image, version) each turn flags into the
// configuration of the component they run.
package cli

import (
	"fmt"
	"io"
)

// Version is the Kubernetes version Navarch speaks, reported by /version and
// `navarch version`.
const (
	KubeMajor   = "1"
	KubeMinor   = "34"
	KubeVersion = "v1.34.0"
	Version     = "v0.1.0"
)

const usage = `navarch: a Kubernetes-compatible container orchestrator in one binary.

Usage:
  navarch server [flags]     run the control plane (API server over etcd, scheduler, controllers)
                             and, unless --disable-agent, a node agent for this machine
  navarch kubectl [args]     run the bundled kubectl against this cluster
  navarch sim [flags]        run hollow nodes against an API server (for rehearsals and tests)
  navarch agent [flags]      run a node agent: the kubelet with the built-in container runtime
  navarch image CMD          import, list and remove the node's images (import FILE.tar, ls, rm REF)
  navarch version            print the version

Run 'navarch server --help' and 'navarch agent --help' for their flags.
`

// Main runs the command line and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if code, ran := maybeRunCNI(args); ran {
		return code
	}
	if len(args) < 1 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "server":
		return runServer(args[1:], stderr)
	case "kubectl":
		return RunKubectl(args[1:])
	case "sim":
		return runSim(args[1:], stderr)
	case "agent":
		return runAgent(args[1:], stderr)
	case "image":
		return runImage(args[1:], stdout, stderr)
	case "runtime-shim": // hidden: started by the built-in container runtime
		return runRuntimeShim(args[1:])
	case "runc": // hidden: the built-in runtime's OCI executor
		return runRunc(args[1:])
	case "version", "--version":
		fmt.Fprintf(stdout, "navarch %s (Kubernetes %s)\n", Version, KubeVersion)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "navarch: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

// exitOnError prints err as one line and returns exit code 1.
func exitOnError(stderr io.Writer, err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "navarch: %v\n", err)
	return 1
}

// Command pause is the sandbox ("pause") image of the kubelet's containerd
// test: containerd 1.6 runs a sandbox container holding the pod's
// namespaces, and there is no registry here to pull registry.k8s.io/pause
// from. It sleeps until SIGTERM or SIGINT, reaping any zombie it inherits as
// the pod's PID 1 would.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}

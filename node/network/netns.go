package network

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// inNetns runs fn on a fresh OS thread switched into the network namespace
// at path. The thread is never switched back: it stays locked and Go ends it
// when the goroutine returns, so no other goroutine ever runs in the wrong
// namespace. Netlink work does not need this (netlink.NewHandleAt opens its
// sockets in the namespace); sockets do, e.g. a listener for a pod.
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromPath(path)
		if err != nil {
			errc <- fmt.Errorf("netns %s: %w", path, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

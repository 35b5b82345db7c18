// Package leaderlock runs a component only while this process holds its
// Lease in kube-system, as upstream's scheduler and controller manager do,
// so that several servers can share a cluster without two leaders acting
// at once. The lease timings are upstream's defaults.
package leaderlock

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Run blocks until ctx ends, running lead once this process holds the
// kube-system/name Lease. lead gets a context that ends when the lease is
// lost. Losing the lease while ctx lives is an error, so that the process
// stops, as upstream's components exit: another holder is acting now, and
// a component's caches cannot be trusted to resume where it left off.
func Run(ctx context.Context, client kubernetes.Interface, name string, lead func(context.Context) error) error {
	host, _ := os.Hostname()
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceSystem},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: host + "_" + uuid.NewString()},
	}
	// The elector runs lead in its own goroutine and returns when the lease
	// is lost or ctx ends, cancelling lead's context; lead ending first
	// (an error) ends the election through cancel.
	electCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var led atomic.Bool
	result := make(chan error, 1)
	leaderelection.RunOrDie(electCtx, leaderelection.LeaderElectionConfig{
		Lock: lock, ReleaseOnCancel: true, Name: name,
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leadCtx context.Context) {
				led.Store(true)
				result <- lead(leadCtx)
				cancel()
			},
			OnStoppedLeading: func() { slog.Info("leader lease released", "lease", name) },
		},
	})
	if !led.Load() {
		return nil // ctx ended before this process led
	}
	if err := <-result; err != nil || ctx.Err() != nil {
		return err
	}
	return fmt.Errorf("lost the %s lease", name)
}

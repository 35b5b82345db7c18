// Package workloop runs a controller's reconcile loop: wait for the
// informer caches, then let a few workers take keys off a rate-limited
// queue and sync them, retrying failures with back-off, until the context
// ends. Every controller has this loop; only its sync differs.
package workloop

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Run waits for synced, then runs workers that pass each key of queue to
// syncKey until ctx ends. name labels the log lines of failed syncs.
func Run[K comparable](ctx context.Context, name string, queue workqueue.TypedRateLimitingInterface[K], workers int,
	syncKey func(context.Context, K) error, synced ...cache.InformerSynced) error {
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return ctx.Err()
	}
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				key, quit := queue.Get()
				if quit {
					return
				}
				if err := syncKey(ctx, key); err != nil && ctx.Err() == nil {
					slog.Debug("sync failed, will retry", "controller", name, "key", fmt.Sprint(key), "err", err)
					queue.AddRateLimited(key)
				} else {
					queue.Forget(key)
				}
				queue.Done(key)
			}
		}()
	}
	wg.Wait()
	return nil
}

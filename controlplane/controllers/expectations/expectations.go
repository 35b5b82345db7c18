// Package expectations counts, per owner, the pod creations and deletions a
// sync asked for that the pod informer has not shown yet, as upstream's
// ControllerExpectations: until they have been seen, the owner's pods are
// not changed again, so that a stale cache never makes a controller create
// or delete twice. Expectations expire after five minutes, so that a lost
// watch event cannot hold an owner back for ever.
package expectations

import (
	"sync"
	"time"
)

// ttl is how long expectations are waited for.
const ttl = 5 * time.Minute

// Expectations holds the outstanding creations and deletions of every owner,
// by key. It is safe for concurrent use.
type Expectations struct {
	mu    sync.Mutex
	owner map[string]*counts
}

type counts struct {
	adds, dels int
	at         time.Time
}

// New returns empty expectations.
func New() *Expectations { return &Expectations{owner: map[string]*counts{}} }

// Expect records that a sync of key is about to make adds creations and dels
// deletions, replacing what was expected before.
func (e *Expectations) Expect(key string, adds, dels int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.owner[key] = &counts{adds: adds, dels: dels, at: time.Now()}
}

// Observe counts creations and deletions seen (or, from the sync itself,
// ones that will never be seen: a create that failed, a pod already gone).
func (e *Expectations) Observe(key string, adds, dels int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.owner[key]; c != nil {
		c.adds -= adds
		c.dels -= dels
	}
}

// Satisfied reports whether key may be synced: everything expected has been
// seen, or the expectations expired. A satisfied key's record is dropped.
func (e *Expectations) Satisfied(key string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.owner[key]
	if c == nil || (c.adds <= 0 && c.dels <= 0) || time.Since(c.at) > ttl {
		delete(e.owner, key)
		return true
	}
	return false
}

// Forget drops key's expectations (its owner is gone).
func (e *Expectations) Forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.owner, key)
}

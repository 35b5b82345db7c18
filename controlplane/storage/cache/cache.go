// Package cache keeps the current state of every served resource in memory,
// fed by one watch on the store, so that gets, lists and watches are answered
// without reading etcd and many watchers cost one etcd watch in all.
//
// The cache is at one revision for all resources at once: every store event
// and progress notice advances it. Readers that must see a write first wait
// for the cache to reach that write's revision (WaitFor).
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/btree"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/storage"
)

// Entry is one object as the cache holds it. Entries are immutable once made:
// callers must not change Object (DeepCopy it first).
type Entry struct {
	Key       string
	Namespace string
	Name      string
	Revision  int64
	Object    runtime.Object // decoded, with resourceVersion set
	Data      []byte         // Object encoded as JSON
	Labels    labels.Set
	Fields    fields.Set

	// alt is Object in a second encoding (the server's protobuf), made on
	// first use only: objects nobody asks for that way carry nothing, and
	// many watchers of one change share one encode.
	altOnce sync.Once
	alt     []byte
	altErr  error
}

// Alternate returns Object encoded by enc, encoding it on the first call
// only; later calls return the first result whatever enc they pass. The
// bytes are shared: callers must not modify them.
func (e *Entry) Alternate(enc func(runtime.Object) ([]byte, error)) ([]byte, error) {
	e.altOnce.Do(func() { e.alt, e.altErr = enc(e.Object) })
	return e.alt, e.altErr
}

// Decoder turns a stored value into an Entry (decoding, stamping the revision
// as resourceVersion, re-encoding, extracting labels and fields).
type Decoder func(key string, value []byte, revision int64) (*Entry, error)

// Restamp returns a copy of e at another revision (for deletion events, whose
// object is the last state stamped with the deletion's revision).
type Restamp func(e *Entry, revision int64) (*Entry, error)

// EventType is the kind of a watch event.
type EventType string

// Watch event kinds, as the Kubernetes watch protocol names them.
const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
	Bookmark EventType = "BOOKMARK"
)

// Event is one change to one object of a resource.
type Event struct {
	Type     EventType
	Entry    *Entry // the object after the change (for Deleted, the last state)
	Prev     *Entry // the object before the change, nil for Added
	Revision int64
}

// ErrGone means a watch asked for a revision older than the cache remembers.
var ErrGone = errors.New("too old resource version")

// historySize bounds the events kept per resource for watches that resume.
const historySize = 20000

// Resource is the cache of one key prefix (one resource type).
type Resource struct {
	prefix  string
	decode  Decoder
	restamp Restamp

	items    *btree.BTreeG[*Entry]
	history  []Event // ring of recent events, oldest first
	oldest   int64   // history is complete for revisions after this one
	watchers map[*Watcher]struct{}

	// History keeps superseded versions slim (see slim): base is the
	// position, counting every event ever recorded, of history[0], and
	// latest the position of each key's newest event.
	base   int64
	latest map[string]int64
}

// slim is e without its decoded object and second encoding, for versions
// only the history remembers: watch filtering needs just the labels and
// fields, and the rare watch that resumes into the past decodes the JSON
// again (fatten). A version's decoded object is most of its memory, and the
// history holds up to historySize of them.
func slim(e *Entry) *Entry {
	if e == nil || e.Object == nil {
		return e
	}
	return &Entry{Key: e.Key, Namespace: e.Namespace, Name: e.Name, Revision: e.Revision, Data: e.Data, Labels: e.Labels, Fields: e.Fields}
}

// fatten gives a slim entry its object back.
func (r *Resource) fatten(e *Entry) (*Entry, error) {
	if e.Object != nil {
		return e, nil
	}
	return r.decode(e.Key, e.Data, e.Revision)
}

// retire slims the history's copy of an entry that a newer version or a
// deletion supersedes.
func (r *Resource) retire(e *Entry) {
	pos, ok := r.latest[e.Key]
	if !ok {
		return
	}
	if i := pos - r.base; i >= 0 && i < int64(len(r.history)) && r.history[i].Entry == e {
		r.history[i].Entry = slim(e)
	}
}

// Cache is the in-memory state of all registered resources.
type Cache struct {
	store storage.Store

	mu        sync.RWMutex
	cond      *sync.Cond
	revision  int64
	resources map[string]*Resource // by prefix
	started   bool
}

// New returns an empty cache over store; register resources, then Run.
func New(store storage.Store) *Cache {
	c := &Cache{store: store, resources: map[string]*Resource{}}
	c.cond = sync.NewCond(c.mu.RLocker())
	return c
}

// Register adds a resource stored under prefix (ending in "/").
func (c *Cache) Register(prefix string, decode Decoder, restamp Restamp) *Resource {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.resources[prefix]; ok {
		return r
	}
	r := &Resource{prefix: prefix, decode: decode, restamp: restamp,
		items:    btree.NewG(32, func(a, b *Entry) bool { return a.Key < b.Key }),
		watchers: map[*Watcher]struct{}{}, latest: map[string]int64{}}
	c.resources[prefix] = r
	return r
}

// Load reads the current state of every resource under root (one range read),
// so that the cache is complete before the server serves.
func (c *Cache) Load(ctx context.Context, root string) error {
	kvs, rev, err := c.store.List(ctx, root)
	if err != nil {
		return fmt.Errorf("load cache: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, kv := range kvs {
		r := c.resourceFor(kv.Key)
		if r == nil {
			continue
		}
		e, err := r.decode(kv.Key, kv.Value, kv.Revision)
		if err != nil {
			slog.Warn("skipping undecodable object", "key", kv.Key, "err", err)
			continue
		}
		r.items.ReplaceOrInsert(e)
	}
	c.revision = rev
	for _, r := range c.resources {
		r.oldest = rev
	}
	c.started = true
	return nil
}

// Run follows the store from the loaded revision until ctx ends. A watch
// that breaks is resumed; if the store compacted past the cache, the cache
// reloads and watchers are ended so that their clients relist.
func (c *Cache) Run(ctx context.Context, root string) error {
	for ctx.Err() == nil {
		c.mu.RLock()
		from := c.revision
		c.mu.RUnlock()
		ch, err := c.store.Watch(ctx, root, from)
		if errors.Is(err, storage.ErrCompacted) {
			slog.Warn("cache fell behind compaction, reloading", "revision", from)
			c.endAllWatchers()
			if err := c.reload(ctx, root); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			slog.Warn("cache watch failed, retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for ev := range ch {
			c.apply(ev)
		}
	}
	return nil
}

func (c *Cache) reload(ctx context.Context, root string) error {
	c.mu.Lock()
	for _, r := range c.resources {
		r.items.Clear(false)
		r.history, r.base, r.latest = nil, 0, map[string]int64{}
	}
	c.mu.Unlock()
	return c.Load(ctx, root)
}

func (c *Cache) endAllWatchers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.resources {
		for w := range r.watchers {
			r.stop(w)
		}
	}
}

// resourceFor finds the resource whose prefix holds key. Keys look like
// /registry/<group>/<resource>/[<namespace>/]<name>.
func (c *Cache) resourceFor(key string) *Resource {
	i := strings.IndexByte(key[1:], '/') // after /registry
	if i < 0 {
		return nil
	}
	rest := key[i+2:]
	j := strings.IndexByte(rest, '/')
	if j < 0 {
		return nil
	}
	k := strings.IndexByte(rest[j+1:], '/')
	if k < 0 {
		return nil
	}
	return c.resources[key[:i+2+j+1+k+1]]
}

func (c *Cache) apply(ev storage.Event) {
	c.mu.Lock()
	defer func() {
		c.mu.Unlock()
		c.cond.Broadcast()
	}()
	if ev.Revision > c.revision {
		c.revision = ev.Revision
	}
	if ev.Progress {
		return
	}
	r := c.resourceFor(ev.Key)
	if r == nil {
		return
	}
	prev, _ := r.items.Get(&Entry{Key: ev.Key})
	var out Event
	switch ev.Type {
	case storage.Put:
		e, err := r.decode(ev.Key, ev.Value, ev.Revision)
		if err != nil {
			slog.Warn("skipping undecodable object", "key", ev.Key, "err", err)
			return
		}
		r.items.ReplaceOrInsert(e)
		out = Event{Type: Modified, Entry: e, Prev: prev, Revision: ev.Revision}
		if prev == nil {
			out.Type = Added
		}
	case storage.Delete:
		if prev == nil {
			return
		}
		r.items.Delete(prev)
		last, err := r.restamp(prev, ev.Revision)
		if err != nil {
			slog.Warn("cannot restamp deleted object", "key", ev.Key, "err", err)
			last = prev
		}
		out = Event{Type: Deleted, Entry: last, Prev: prev, Revision: ev.Revision}
	}
	// Watchers get the event as it is; the history keeps superseded
	// versions slim.
	stored := out
	stored.Prev = slim(out.Prev)
	if prev != nil {
		r.retire(prev)
	}
	if out.Type == Deleted {
		stored.Entry = slim(out.Entry)
		delete(r.latest, ev.Key)
	} else {
		r.latest[ev.Key] = r.base + int64(len(r.history))
	}
	r.record(stored)
	for w := range r.watchers {
		w.offer(r, out)
	}
}

func (r *Resource) record(ev Event) {
	if len(r.history) >= historySize {
		r.oldest = r.history[0].Revision
		// Drop the oldest tenth at once so trimming is amortised.
		n := historySize / 10
		r.oldest = r.history[n-1].Revision
		r.trim(n)
	}
	r.history = append(r.history, ev)
}

// trim drops the oldest n events of the history.
func (r *Resource) trim(n int) {
	r.history = append(r.history[:0:0], r.history[n:]...)
	r.base += int64(n)
}

// Compacted tells the cache the store discarded history up to revision, so
// watches from before it must be refused as upstream's are.
func (c *Cache) Compacted(revision int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.resources {
		if revision <= r.oldest {
			continue
		}
		r.oldest = revision
		i := 0
		for i < len(r.history) && r.history[i].Revision <= revision {
			i++
		}
		r.trim(i)
	}
}

// Revision returns the revision the cache has reached.
func (c *Cache) Revision() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.revision
}

// WaitFor blocks until the cache has reached revision or ctx ends.
func (c *Cache) WaitFor(ctx context.Context, revision int64) error {
	c.mu.RLock()
	if c.revision >= revision {
		c.mu.RUnlock()
		return nil
	}
	c.mu.RUnlock()
	// Taking the lock before broadcasting means a waiter is either still
	// before its ctx check or already inside Wait, so the wake-up is not lost.
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.mu.Unlock()
		c.cond.Broadcast()
	})
	defer stop()
	c.mu.RLock()
	defer c.mu.RUnlock()
	for c.revision < revision {
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for revision %d: %w", revision, ctx.Err())
		}
		c.cond.Wait()
	}
	return nil
}

// Get returns the entry at key, or nil, and the cache revision.
func (c *Cache) Get(r *Resource, key string) (*Entry, int64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, _ := r.items.Get(&Entry{Key: key})
	return e, c.revision
}

// List returns up to limit entries (0 = all) under prefix with keys after
// start that pass match, the cache revision, and whether more remain.
func (c *Cache) List(r *Resource, prefix, start string, limit int, match func(*Entry) bool) ([]*Entry, int64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []*Entry
	more := false
	from := prefix
	if start > from {
		from = start + "\x00"
	}
	r.items.AscendGreaterOrEqual(&Entry{Key: from}, func(e *Entry) bool {
		if !strings.HasPrefix(e.Key, prefix) {
			return false
		}
		if match != nil && !match(e) {
			return true
		}
		if limit > 0 && len(out) == limit {
			more = true
			return false
		}
		out = append(out, e)
		return true
	})
	return out, c.revision, more
}

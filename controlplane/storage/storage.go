// Package storage defines the key-value contract the API server keeps its state
// in. Values are opaque bytes; every write returns the store revision it made,
// which the API server exposes as resourceVersion. The etcd package implements it;
// storagetest holds the conformance suite every implementation must pass.
package storage

import (
	"context"
	"errors"
)

// Errors returned by every Store; callers compare with errors.Is.
var (
	ErrNotFound  = errors.New("key not found")
	ErrExists    = errors.New("key already exists")
	ErrConflict  = errors.New("revision does not match")
	ErrCompacted = errors.New("revision has been compacted")
)

// KV is one stored value and the revision that last modified it.
type KV struct {
	Key      string
	Value    []byte
	Revision int64
}

// EventType says what happened to a key.
type EventType int

// The kinds of change a watch reports.
const (
	Put EventType = iota
	Delete
)

// Event is one change seen by a watch. Revision is the store revision of the
// change; for a Delete, Value is empty.
type Event struct {
	Type     EventType
	Key      string
	Value    []byte
	Revision int64
	// Progress marks an event that carries no change, only the news that the
	// store has reached Revision.
	Progress bool
}

// Store is a transactional key-value store with revisions and watches.
type Store interface {
	// Get returns the current value of key, or ErrNotFound.
	Get(ctx context.Context, key string) (KV, error)
	// List returns every key under prefix, sorted by key, and the revision read at.
	List(ctx context.Context, prefix string) ([]KV, int64, error)
	// Create writes key only if it does not exist (ErrExists otherwise).
	Create(ctx context.Context, key string, value []byte) (int64, error)
	// Update writes key only if its current revision is expectedRevision
	// (ErrConflict otherwise, ErrNotFound if it is gone).
	Update(ctx context.Context, key string, value []byte, expectedRevision int64) (int64, error)
	// Delete removes key only if its current revision is expectedRevision
	// (0 means any), returning the revision of the deletion.
	Delete(ctx context.Context, key string, expectedRevision int64) (int64, error)
	// Watch streams changes under prefix after revision fromRevision until ctx
	// ends. The channel is closed when the watch ends; a watch that cannot start
	// because fromRevision was compacted returns ErrCompacted.
	Watch(ctx context.Context, prefix string, fromRevision int64) (<-chan Event, error)
	// Revision returns the store's current revision.
	Revision(ctx context.Context) (int64, error)
	// Compact discards history before revision.
	Compact(ctx context.Context, revision int64) error
}

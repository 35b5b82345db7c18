// Package etcd implements storage.Store over etcd v3, either a cluster the
// server connects to or a member embedded in the server's own process.
package etcd

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/navarch/navarch/controlplane/storage"
)

// Store is a storage.Store backed by an etcd v3 client.
type Store struct {
	client *clientv3.Client
}

// NewStore returns a Store using client.
func NewStore(client *clientv3.Client) *Store { return &Store{client: client} }

var _ storage.Store = (*Store)(nil)

// Get implements storage.Store.
func (s *Store) Get(ctx context.Context, key string) (storage.KV, error) {
	resp, err := s.client.Get(ctx, key)
	if err != nil {
		return storage.KV{}, fmt.Errorf("get %q: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return storage.KV{}, storage.ErrNotFound
	}
	kv := resp.Kvs[0]
	return storage.KV{Key: string(kv.Key), Value: kv.Value, Revision: kv.ModRevision}, nil
}

// List implements storage.Store.
func (s *Store) List(ctx context.Context, prefix string) ([]storage.KV, int64, error) {
	resp, err := s.client.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list %q: %w", prefix, err)
	}
	out := make([]storage.KV, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		out[i] = storage.KV{Key: string(kv.Key), Value: kv.Value, Revision: kv.ModRevision}
	}
	return out, resp.Header.Revision, nil
}

// Create implements storage.Store.
func (s *Store) Create(ctx context.Context, key string, value []byte) (int64, error) {
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(value))).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("create %q: %w", key, err)
	}
	if !resp.Succeeded {
		return 0, storage.ErrExists
	}
	return resp.Header.Revision, nil
}

// Update implements storage.Store.
func (s *Store) Update(ctx context.Context, key string, value []byte, expectedRevision int64) (int64, error) {
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", expectedRevision)).
		Then(clientv3.OpPut(key, string(value))).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("update %q: %w", key, err)
	}
	if !resp.Succeeded {
		if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
			return 0, storage.ErrNotFound
		}
		return 0, storage.ErrConflict
	}
	return resp.Header.Revision, nil
}

// Delete implements storage.Store.
func (s *Store) Delete(ctx context.Context, key string, expectedRevision int64) (int64, error) {
	cmp := clientv3.Compare(clientv3.CreateRevision(key), ">", 0)
	if expectedRevision != 0 {
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", expectedRevision)
	}
	resp, err := s.client.Txn(ctx).
		If(cmp).
		Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("delete %q: %w", key, err)
	}
	if !resp.Succeeded {
		if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
			return 0, storage.ErrNotFound
		}
		return 0, storage.ErrConflict
	}
	return resp.Header.Revision, nil
}

// Watch implements storage.Store.
func (s *Store) Watch(ctx context.Context, prefix string, fromRevision int64) (<-chan storage.Event, error) {
	// A read at the start revision tells synchronously whether it was
	// compacted, rather than through a watch that ends later.
	if fromRevision > 0 {
		if _, err := s.client.Get(ctx, prefix, clientv3.WithRev(fromRevision), clientv3.WithCountOnly()); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return nil, storage.ErrCompacted
			}
			return nil, fmt.Errorf("watch %q: %w", prefix, err)
		}
	}
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.client.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(fromRevision+1), clientv3.WithProgressNotify())
	out := make(chan storage.Event, 256)
	go func() {
		defer close(out)
		defer cancel()
		for resp := range wch {
			if resp.Err() != nil || resp.CompactRevision != 0 {
				return
			}
			if resp.IsProgressNotify() {
				select {
				case out <- storage.Event{Progress: true, Revision: resp.Header.Revision}:
				case <-ctx.Done():
					return
				}
			}
			for _, ev := range resp.Events {
				e := storage.Event{Key: string(ev.Kv.Key), Revision: ev.Kv.ModRevision}
				if ev.Type == clientv3.EventTypeDelete {
					e.Type = storage.Delete
				} else {
					e.Type = storage.Put
					e.Value = ev.Kv.Value
				}
				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// RequestProgress asks etcd to send a progress event on open watches, so a
// watcher learns the current revision even when nothing changed.
func (s *Store) RequestProgress(ctx context.Context) error {
	return s.client.RequestProgress(clientv3.WithRequireLeader(ctx))
}

// Revision implements storage.Store.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	resp, err := s.client.Get(ctx, "/navarch-revision-probe", clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	return resp.Header.Revision, nil
}

// Compact implements storage.Store.
func (s *Store) Compact(ctx context.Context, revision int64) error {
	_, err := s.client.Compact(ctx, revision)
	if err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		return fmt.Errorf("compact to %d: %w", revision, err)
	}
	return nil
}

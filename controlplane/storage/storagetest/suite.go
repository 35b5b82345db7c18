// Package storagetest is the conformance suite every storage.Store passes:
// create/update/delete preconditions, revisions, watches and compaction.
package storagetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/navarch/navarch/controlplane/storage"
)

// Run runs the suite against a fresh store under prefix.
func Run(t *testing.T, s storage.Store, prefix string) {
	ctx := context.Background()
	key := prefix + "/a"

	t.Run("create once", func(t *testing.T) {
		rev, err := s.Create(ctx, key, []byte("1"))
		if err != nil || rev == 0 {
			t.Fatalf("create: rev %d, err %v", rev, err)
		}
		if _, err := s.Create(ctx, key, []byte("2")); !errors.Is(err, storage.ErrExists) {
			t.Fatalf("second create: got %v, want ErrExists", err)
		}
		kv, err := s.Get(ctx, key)
		if err != nil || string(kv.Value) != "1" || kv.Revision != rev {
			t.Fatalf("get: %+v %v, want value 1 at %d", kv, err, rev)
		}
	})

	t.Run("update preconditions", func(t *testing.T) {
		kv, _ := s.Get(ctx, key)
		rev, err := s.Update(ctx, key, []byte("2"), kv.Revision)
		if err != nil || rev <= kv.Revision {
			t.Fatalf("update: rev %d err %v", rev, err)
		}
		if _, err := s.Update(ctx, key, []byte("3"), kv.Revision); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("stale update: got %v, want ErrConflict", err)
		}
		if _, err := s.Update(ctx, prefix+"/missing", []byte("3"), 5); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("update of missing key: got %v, want ErrNotFound", err)
		}
	})

	t.Run("list sorted", func(t *testing.T) {
		for _, k := range []string{"/c", "/b"} {
			if _, err := s.Create(ctx, prefix+k, []byte(k)); err != nil {
				t.Fatal(err)
			}
		}
		kvs, rev, err := s.List(ctx, prefix+"/")
		if err != nil || len(kvs) != 3 || rev == 0 {
			t.Fatalf("list: %d items at %d, err %v", len(kvs), rev, err)
		}
		if kvs[0].Key != prefix+"/a" || kvs[2].Key != prefix+"/c" {
			t.Fatalf("list not sorted: %s .. %s", kvs[0].Key, kvs[2].Key)
		}
	})

	t.Run("watch from revision", func(t *testing.T) {
		start, err := s.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := s.Watch(wctx, prefix+"/", start)
		if err != nil {
			t.Fatal(err)
		}
		kv, _ := s.Get(ctx, prefix+"/b")
		if _, err := s.Update(ctx, prefix+"/b", []byte("b2"), kv.Revision); err != nil {
			t.Fatal(err)
		}
		delRev, err := s.Delete(ctx, prefix+"/c", 0)
		if err != nil {
			t.Fatal(err)
		}
		want := []storage.EventType{storage.Put, storage.Delete}
		for i := 0; i < len(want); {
			select {
			case ev := <-ch:
				if ev.Progress {
					continue
				}
				if ev.Type != want[i] {
					t.Fatalf("event %d: type %v, want %v", i, ev.Type, want[i])
				}
				if i == 1 && ev.Revision != delRev {
					t.Fatalf("delete event at %d, want %d", ev.Revision, delRev)
				}
				i++
			case <-time.After(10 * time.Second):
				t.Fatalf("timed out waiting for event %d", i)
			}
		}
	})

	t.Run("compacted watch", func(t *testing.T) {
		rev, _ := s.Revision(ctx)
		if _, err := s.Create(ctx, prefix+"/d", nil); err != nil {
			t.Fatal(err)
		}
		now, _ := s.Revision(ctx)
		if err := s.Compact(ctx, now); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Watch(ctx, prefix+"/", rev-1); !errors.Is(err, storage.ErrCompacted) {
			t.Fatalf("watch from compacted revision: got %v, want ErrCompacted", err)
		}
	})

	t.Run("delete preconditions", func(t *testing.T) {
		if _, err := s.Delete(ctx, prefix+"/missing", 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("delete missing: %v", err)
		}
		if _, err := s.Delete(ctx, key, 1); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("delete with stale revision: %v", err)
		}
	})
}

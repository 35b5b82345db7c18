package cache

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/navarch/navarch/controlplane/storage/etcd"
)

func rawDecoder(key string, value []byte, rev int64) (*Entry, error) {
	return &Entry{Key: key, Name: key, Revision: rev, Data: value, Labels: labels.Set{"v": string(value)}, Fields: fields.Set{}}, nil
}

func rawRestamp(e *Entry, rev int64) (*Entry, error) {
	return &Entry{Key: e.Key, Name: e.Name, Revision: rev, Data: e.Data, Labels: e.Labels, Fields: e.Fields}, nil
}

func TestCacheFollowsStoreAndFiltersWatches(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	member, err := etcd.StartEmbedded(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	store := etcd.NewStore(member.Client)
	if _, err := store.Create(ctx, "/registry/g/things/a", []byte("red")); err != nil {
		t.Fatal(err)
	}
	c := New(store)
	res := c.Register("/registry/g/things/", rawDecoder, rawRestamp)
	if err := c.Load(ctx, "/registry/"); err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx, "/registry/")
	start := c.Revision()

	red := func(e *Entry) bool { return e.Labels["v"] == "red" }
	w, backlog, _, err := c.Watch(res, "/registry/g/things/", start, false, red)
	if err != nil || len(backlog) != 0 {
		t.Fatalf("watch: %v, backlog %d", err, len(backlog))
	}
	rev, _ := store.Create(ctx, "/registry/g/things/b", []byte("blue"))
	kv, _ := store.Get(ctx, "/registry/g/things/a")
	store.Update(ctx, "/registry/g/things/a", []byte("blue"), kv.Revision) // leaves the selector: DELETED
	rev2, _ := store.Update(ctx, "/registry/g/things/b", []byte("red"), rev)
	if err := c.WaitFor(ctx, rev2); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ EventType
		key string
	}{{Deleted, "/registry/g/things/a"}, {Added, "/registry/g/things/b"}}
	for _, wnt := range want {
		select {
		case ev := <-w.Events():
			if ev.Type != wnt.typ || ev.Entry.Key != wnt.key {
				t.Fatalf("got %s %s, want %s %s", ev.Type, ev.Entry.Key, wnt.typ, wnt.key)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no event, want %s %s", wnt.typ, wnt.key)
		}
	}
	entries, _, _ := c.List(res, "/registry/g/things/", "", 0, red)
	if len(entries) != 1 || entries[0].Key != "/registry/g/things/b" {
		t.Fatalf("list of red things: %v", entries)
	}

	// Once compacted, older versions are gone.
	c.Compacted(rev2)
	if _, _, _, err := c.Watch(res, "/registry/g/things/", start, false, nil); !errors.Is(err, ErrGone) {
		t.Fatalf("watch from before compaction: %v, want ErrGone", err)
	}

	// WaitFor gives up when its context ends.
	short, stop := context.WithTimeout(ctx, 50*time.Millisecond)
	defer stop()
	if err := c.WaitFor(short, rev2+1000); err == nil {
		t.Fatal("WaitFor for a future revision returned without error")
	}
}

// TestAlternateEncodesOnce checks that an entry's second encoding is made
// once however many readers ask for it at the same time, and not before.
func TestAlternateEncodesOnce(t *testing.T) {
	e := &Entry{Key: "k", Data: []byte("json")}
	var mu sync.Mutex
	calls := 0
	enc := func(runtime.Object) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return []byte("pb"), nil
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := e.Alternate(enc); err != nil || string(got) != "pb" {
				t.Errorf("Alternate = %q, %v", got, err)
			}
		}()
	}
	wg.Wait()
	if calls != 1 {
		t.Fatalf("encoder called %d times, want 1", calls)
	}
}

// TestHistoryKeepsSupersededVersionsSlim checks that the history drops the
// decoded object of versions that were replaced or deleted, keeps the
// current one shared with the items, and that a watch resuming from the
// past still gets every version whole.
func TestHistoryKeepsSupersededVersionsSlim(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	member, err := etcd.StartEmbedded(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	store := etcd.NewStore(member.Client)
	decoded := 0
	decode := func(key string, value []byte, rev int64) (*Entry, error) {
		decoded++
		e, _ := rawDecoder(key, value, rev)
		e.Object = &runtime.Unknown{Raw: value}
		return e, nil
	}
	restamp := func(e *Entry, rev int64) (*Entry, error) {
		out, _ := rawRestamp(e, rev)
		out.Object = e.Object
		return out, nil
	}
	c := New(store)
	res := c.Register("/registry/g/things/", decode, restamp)
	if err := c.Load(ctx, "/registry/"); err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx, "/registry/")
	start := c.Revision()

	rev, _ := store.Create(ctx, "/registry/g/things/a", []byte("v1"))
	rev, _ = store.Update(ctx, "/registry/g/things/a", []byte("v2"), rev)
	rev, _ = store.Update(ctx, "/registry/g/things/a", []byte("v3"), rev)
	gone, _ := store.Create(ctx, "/registry/g/things/b", []byte("b1"))
	if _, err := store.Delete(ctx, "/registry/g/things/b", gone); err != nil {
		t.Fatal(err)
	}
	apiWait := func() bool {
		c.mu.RLock()
		defer c.mu.RUnlock()
		return len(res.history) == 5
	}
	for deadline := time.Now().Add(5 * time.Second); !apiWait(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cache did not see the five changes")
		}
	}

	c.mu.RLock()
	var whole []string
	for _, ev := range res.history {
		if ev.Entry.Object != nil {
			whole = append(whole, string(ev.Entry.Data))
		}
		if ev.Prev != nil && ev.Prev.Object != nil {
			t.Errorf("history keeps the previous version of %s whole", ev.Entry.Key)
		}
	}
	current, _ := res.items.Get(&Entry{Key: "/registry/g/things/a"})
	c.mu.RUnlock()
	if len(whole) != 1 || whole[0] != "v3" {
		t.Errorf("whole versions in the history: %q, want only the current one, v3", whole)
	}
	if current == nil || current.Revision != rev {
		t.Fatalf("current entry of a: %+v", current)
	}

	before := decoded
	_, backlog, _, err := c.Watch(res, "/registry/g/things/", start, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range backlog {
		u, ok := ev.Entry.Object.(*runtime.Unknown)
		if !ok {
			t.Fatalf("%s event of %s replayed without its object", ev.Type, ev.Entry.Key)
		}
		got = append(got, string(ev.Type)+" "+string(u.Raw))
	}
	want := []string{"ADDED v1", "MODIFIED v2", "MODIFIED v3", "ADDED b1", "DELETED b1"}
	if len(got) != len(want) {
		t.Fatalf("replayed %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("replayed %q, want %q", got, want)
		}
	}
	// v1, v2, and b's two events (its last state is kept slim too).
	if decoded-before != 4 {
		t.Errorf("resuming decoded %d versions again, want the 4 superseded ones", decoded-before)
	}
}

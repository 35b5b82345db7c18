package apiserver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	protobufType      = "application/vnd.kubernetes.protobuf"
	protobufWatchType = "application/vnd.kubernetes.protobuf;stream=watch"
)

// contentTypes records the Content-Type of every response a client got, by
// verb and path ("GET /api/v1/...", "WATCH /api/v1/...").
type contentTypes struct {
	mu   sync.Mutex
	seen map[string][]string
}

func (c *contentTypes) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return resp, err
		}
		verb := req.Method
		if req.URL.Query().Get("watch") == "true" {
			verb = "WATCH"
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		key := verb + " " + req.URL.Path
		c.seen[key] = append(c.seen[key], resp.Header.Get("Content-Type"))
		return resp, nil
	})
}

// of returns the content types seen for verb on path.
func (c *contentTypes) of(verb, path string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[verb+" "+path]
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// recordingClient is a client with the given content types that records
// what the server answered in.
func recordingClient(t *testing.T, s *testServer, contentType, accept string) (*rest.Config, kubernetes.Interface, *contentTypes) {
	t.Helper()
	rec := &contentTypes{seen: map[string][]string{}}
	cfg := &rest.Config{Host: s.url, QPS: 1000, Burst: 1000, ContentConfig: rest.ContentConfig{ContentType: contentType, AcceptContentTypes: accept}, WrapTransport: rec.wrap}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, client, rec
}

func wantTypes(t *testing.T, rec *contentTypes, verb, path, want string) {
	t.Helper()
	got := rec.of(verb, path)
	if len(got) == 0 {
		t.Fatalf("%s %s: no response recorded", verb, path)
	}
	for _, ct := range got {
		if ct != want {
			t.Fatalf("%s %s answered in %q, want %q", verb, path, ct, want)
		}
	}
}

// TestProtobufClientCRUD drives every verb through a client configured for
// protobuf, as our controllers are, and checks the server answered in it.
func TestProtobufClientCRUD(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	_, client, rec := recordingClient(t, s, protobufType, protobufType+",application/json")
	cms := client.CoreV1().ConfigMaps("test")

	created, err := cms.Create(ctx, configMap("pb", "1"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if created.Data["k"] != "1" || created.ResourceVersion == "" || created.UID == "" {
		t.Fatalf("created %+v", created)
	}
	got, err := cms.Get(ctx, "pb", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Data["k"] != "1" || got.ResourceVersion != created.ResourceVersion {
		t.Fatalf("got %+v, want the created object", got)
	}
	got.Data["k"] = "2"
	updated, err := cms.Update(ctx, got, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if updated.Data["k"] != "2" || updated.ResourceVersion == got.ResourceVersion {
		t.Fatalf("updated %+v", updated)
	}
	patched, err := cms.Patch(ctx, "pb", types.MergePatchType, []byte(`{"data":{"k":"3"}}`), metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if patched.Data["k"] != "3" {
		t.Fatalf("patched %+v", patched)
	}
	if _, err := cms.Create(ctx, configMap("other", "x"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	list, err := cms.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 || list.Items[0].Name != "other" || list.Items[1].Name != "pb" || list.Items[1].Data["k"] != "3" || list.ResourceVersion == "" {
		t.Fatalf("list %+v", list)
	}
	// Pagination survives the protobuf list (continue token in its ListMeta).
	page, err := cms.List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 1 || page.Continue == "" {
		t.Fatalf("first page %+v, want one item and a continue token", page)
	}
	// Errors come back as Status the client understands.
	if _, err := cms.Get(ctx, "missing", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get missing: %v, want NotFound", err)
	}
	stale := updated.DeepCopy()
	stale.Data["k"] = "stale"
	if _, err := cms.Update(ctx, stale, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("stale update: %v, want Conflict", err)
	}
	if err := cms.Delete(ctx, "pb", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Get(ctx, "pb", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get after delete: %v, want NotFound", err)
	}

	base := "/api/v1/namespaces/test/configmaps"
	wantTypes(t, rec, "POST", base, protobufType)
	wantTypes(t, rec, "GET", base, protobufType)
	wantTypes(t, rec, "GET", base+"/pb", protobufType)
	wantTypes(t, rec, "GET", base+"/missing", protobufType)
	wantTypes(t, rec, "PUT", base+"/pb", protobufType)
	wantTypes(t, rec, "PATCH", base+"/pb", protobufType)
	wantTypes(t, rec, "DELETE", base+"/pb", protobufType)
}

// TestProtobufInformerSeesChangesInOrder runs a pod informer over protobuf
// watches and checks it sees every add, update and delete in order.
func TestProtobufInformerSeesChangesInOrder(t *testing.T) {
	s := startServer(t)
	_, client, rec := recordingClient(t, s, protobufType, protobufType+",application/json")
	// Writes go through the default test client; only the informer reads
	// protobuf, so what it sees was decoded from protobuf watch events.
	checkInformerOrder(t, s, client, 10)
	wantTypes(t, rec, "WATCH", "/api/v1/namespaces/test/pods", protobufWatchType)
	wantTypes(t, rec, "GET", "/api/v1/namespaces/test/pods", protobufType)
}

// TestProtobufWatchInitialEventsAndBookmark checks a watch that sends the
// current state first ends it with a bookmark the client decodes.
func TestProtobufWatchInitialEventsAndBookmark(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	_, client, rec := recordingClient(t, s, protobufType, protobufType+",application/json")
	for _, name := range []string{"a", "b"} {
		if _, err := s.client.CoreV1().ConfigMaps("test").Create(ctx, configMap(name, name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	yes := true
	w, err := client.CoreV1().ConfigMaps("test").Watch(ctx, metav1.ListOptions{
		SendInitialEvents: &yes, AllowWatchBookmarks: true, ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var got []string
	for len(got) < 3 {
		select {
		case ev := <-w.ResultChan():
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if !ok {
				t.Fatalf("event %s with %T, want a ConfigMap", ev.Type, ev.Object)
			}
			entry := string(ev.Type) + " " + cm.Name
			if ev.Type == watch.Bookmark {
				entry += cm.Annotations[metav1.InitialEventsAnnotationKey]
				if cm.ResourceVersion == "" {
					t.Fatal("bookmark without resourceVersion")
				}
			}
			got = append(got, entry)
		case <-time.After(10 * time.Second):
			t.Fatalf("events so far %v, want 2 ADDED and a BOOKMARK", got)
		}
	}
	if want := "[ADDED a ADDED b BOOKMARK true]"; fmt.Sprint(got) != want {
		t.Fatalf("events %v, want %s", got, want)
	}
	wantTypes(t, rec, "WATCH", "/api/v1/namespaces/test/configmaps", protobufWatchType)
}

// TestProtobufWatchFromCompactedVersionIsGone checks the 410 reaches a
// protobuf watcher as an ERROR event with a Status.
func TestProtobufWatchFromCompactedVersionIsGone(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	_, client, rec := recordingClient(t, s, protobufType, protobufType+",application/json")
	cms := client.CoreV1().ConfigMaps("test")
	first, err := cms.Create(ctx, configMap("c0", "0"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 3; i++ {
		if _, err := cms.Create(ctx, configMap(fmt.Sprintf("c%d", i), "x"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.api.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: first.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	ev, ok := <-w.ResultChan()
	w.Stop()
	if !ok || ev.Type != watch.Error {
		t.Fatalf("watch from compacted version: got %v %v, want an ERROR event", ev.Type, ok)
	}
	st, _ := ev.Object.(*metav1.Status)
	if st == nil || st.Code != http.StatusGone || !apierrors.IsResourceExpired(apierrors.FromObject(st)) {
		t.Fatalf("watch from compacted version: got %#v, want a 410 Expired Status", ev.Object)
	}
	wantTypes(t, rec, "WATCH", "/api/v1/namespaces/test/configmaps", protobufWatchType)
}

// TestJSONClientsStayJSON checks that clients that ask for JSON (kubectl,
// the dynamic client the garbage collector uses) still get it, and that the
// protobuf answer really is apimachinery's envelope.
func TestJSONClientsStayJSON(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	_, client, rec := recordingClient(t, s, "application/json", "")
	cms := client.CoreV1().ConfigMaps("test")
	if _, err := cms.Create(ctx, configMap("j", "1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Get(ctx, "j", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ev := <-w.ResultChan(); ev.Type != watch.Added {
		t.Fatalf("first event %v, want ADDED", ev.Type)
	}
	w.Stop()
	base := "/api/v1/namespaces/test/configmaps"
	for _, v := range []string{"POST " + base, "GET " + base, "GET " + base + "/j", "WATCH " + base} {
		verb, path, _ := strings.Cut(v, " ")
		wantTypes(t, rec, verb, path, "application/json")
	}

	// The dynamic client forces JSON even from a protobuf config.
	pbCfg, _, _ := recordingClient(t, s, protobufType, protobufType+",application/json")
	dynRec := &contentTypes{seen: map[string][]string{}}
	pbCfg.WrapTransport = dynRec.wrap
	dyn, err := dynamic.NewForConfig(pbCfg)
	if err != nil {
		t.Fatal(err)
	}
	u, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace("test").Get(ctx, "j", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, _, _ := unstructured.NestedString(u.Object, "data", "k"); v != "1" {
		t.Fatalf("dynamic get: %v", u.Object)
	}
	wantTypes(t, dynRec, "GET", base+"/j", "application/json")

	// Metadata-only and table requests are not plain protobuf: JSON.
	for _, accept := range []string{
		"application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json",
		"application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
		"application/json, */*",
	} {
		ct, _ := rawGet(t, s.url+base+"/j", accept)
		if ct != "application/json" {
			t.Fatalf("Accept %q answered in %q, want JSON", accept, ct)
		}
	}
	// The protobuf answer starts with apimachinery's magic number.
	ct, body := rawGet(t, s.url+base+"/j", protobufType+", */*")
	if ct != protobufType || !bytes.HasPrefix(body, []byte("k8s\x00")) {
		t.Fatalf("protobuf get: %q, body %q", ct, body)
	}
}

func rawGet(t *testing.T, url, accept string) (string, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", accept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return resp.Header.Get("Content-Type"), body
}

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestDeletePropagationOnHollowNodes deletes a Deployment with each of
// kubectl's --cascade policies and checks what upstream does: background
// removes the Deployment at once and its ReplicaSet and pods after it;
// foreground keeps the Deployment (with the foregroundDeletion finalizer)
// until its dependents are gone; orphan leaves the ReplicaSet and pods,
// without an owner, where they were.
func TestDeletePropagationOnHollowNodes(t *testing.T) {
	s := startServer(t)
	startSim(t, s, 2)
	c := clients(t)[0]

	deploy := func(name string) {
		t.Helper()
		s.must(t, c, "create", "deployment", name, "--image=example.com/app:1", "--replicas=2")
		s.must(t, c, "rollout", "status", "deployment/"+name, "--timeout=60s")
	}
	left := func(name string) string {
		t.Helper()
		return strings.TrimSpace(s.must(t, c, "get", "replicasets,pods", "-l", "app="+name, "-o", "name"))
	}
	gone := func(what string, f func() string) {
		t.Helper()
		eventually(t, 30*time.Second, func() error {
			if out := f(); out != "" {
				return fmt.Errorf("%s still there: %s", what, out)
			}
			return nil
		})
	}

	// Background (kubectl's default).
	deploy("bg")
	s.must(t, c, "delete", "deployment", "bg", "--cascade=background")
	gone("replica sets and pods of bg", func() string { return left("bg") })

	// Foreground: --wait=false so that the Deployment can be seen while its
	// dependents are deleted first.
	deploy("fg")
	s.must(t, c, "delete", "deployment", "fg", "--cascade=foreground", "--wait=false")
	gone("deployment fg", func() string {
		r := s.kubectl(c, "", nil, "get", "deployment", "fg", "-o", "jsonpath={.metadata.finalizers}")
		if r.err != nil && strings.Contains(r.stderr, "NotFound") {
			return ""
		}
		if r.err == nil && !strings.Contains(r.stdout, "foregroundDeletion") {
			t.Errorf("deployment fg being deleted in the foreground has finalizers %q", r.stdout)
		}
		return "deployment fg " + r.stdout
	})
	if out := left("fg"); out != "" {
		t.Errorf("foreground deletion left dependents behind: %s", out)
	}

	// Orphan: the ReplicaSet and its pods stay, no longer owned.
	deploy("orph")
	s.must(t, c, "delete", "deployment", "orph", "--cascade=orphan")
	if r := s.kubectl(c, "", nil, "get", "deployment", "orph"); r.err == nil {
		t.Errorf("deployment orph still exists after delete: %s", r)
	}
	// The garbage collector removes the owner references: wait for it.
	eventually(t, 30*time.Second, func() error {
		refs := s.must(t, c, "get", "replicasets", "-l", "app=orph", "-o", "jsonpath={.items[*].metadata.ownerReferences}")
		if strings.TrimSpace(refs) != "" {
			return fmt.Errorf("orphaned replica set still owned: %s", refs)
		}
		return nil
	})
	pods := s.must(t, c, "get", "pods", "-l", "app=orph", "--no-headers")
	if n := strings.Count(pods, " Running "); n != 2 {
		t.Errorf("orphaned pods: want 2 Running, got:\n%s", pods)
	}
	// Orphans stay orphans: nothing deletes them a moment later.
	time.Sleep(time.Second)
	if n := strings.Count(s.must(t, c, "get", "pods", "-l", "app=orph", "--no-headers"), " Running "); n != 2 {
		t.Errorf("orphaned pods went away")
	}
}

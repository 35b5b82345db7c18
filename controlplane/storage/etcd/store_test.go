package etcd

import (
	"context"
	"testing"

	"github.com/navarch/navarch/controlplane/storage/storagetest"
)

func TestEmbeddedConformance(t *testing.T) {
	e, err := StartEmbedded(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	storagetest.Run(t, NewStore(e.Client), "/test")
}

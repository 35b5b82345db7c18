package images

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestImageService drives the CRI ImageService over a store: a pull with
// credentials, status, list (all and filtered), fs info and removal.
func TestImageService(t *testing.T) {
	srv := httptest.NewServer(basicAuth("alice", "s3cret", registry.New(registry.Logger(log.New(io.Discard, "", 0)))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img := image(t, "/app", layer(t, entry{name: "app", body: "hello"}))
	ref := host + "/cri/app:1"
	pushTo(t, ref, img, &authn.Basic{Username: "alice", Password: "s3cret"})
	want := imageID(t, img)

	svc := NewImageService(open(t), []string{host})
	ctx := context.Background()
	spec := &runtimeapi.ImageSpec{Image: ref}

	st, err := svc.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: spec})
	if err != nil || st.Image != nil {
		t.Fatalf("status before pull = %v, %v; want no image and no error", st, err)
	}
	if _, err := svc.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec}); err == nil {
		t.Fatal("pull without credentials succeeded")
	}
	pulled, err := svc.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec, Auth: &runtimeapi.AuthConfig{Username: "alice", Password: "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	if pulled.ImageRef != want {
		t.Fatalf("pull = %s, want %s", pulled.ImageRef, want)
	}
	st, err = svc.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: spec})
	if err != nil || st.Image == nil {
		t.Fatalf("status after pull = %v, %v", st, err)
	}
	if st.Image.Id != want || len(st.Image.RepoTags) != 1 || st.Image.RepoTags[0] != ref || len(st.Image.RepoDigests) != 1 || st.Image.Size == 0 {
		t.Errorf("status = %+v", st.Image)
	}
	// The id names the image as well as the reference does.
	if st, err := svc.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: want}}); err != nil || st.Image == nil || st.Image.Id != want {
		t.Errorf("status by id = %v, %v", st, err)
	}
	list, err := svc.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil || len(list.Images) != 1 || list.Images[0].Id != want {
		t.Fatalf("list = %v, %v", list, err)
	}
	list, err = svc.ListImages(ctx, &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: host + "/cri/other:1"}}})
	if err != nil || len(list.Images) != 0 {
		t.Fatalf("list filtered by an absent image = %v, %v", list, err)
	}
	fs, err := svc.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil || len(fs.ImageFilesystems) != 1 || fs.ImageFilesystems[0].UsedBytes.GetValue() == 0 || fs.ImageFilesystems[0].FsId.GetMountpoint() == "" {
		t.Fatalf("fs info = %v, %v", fs, err)
	}
	if _, err := svc.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: spec}); err != nil {
		t.Fatal(err)
	}
	if st, err := svc.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: spec}); err != nil || st.Image != nil {
		t.Errorf("status after remove = %v, %v", st, err)
	}
	// Removing what is gone succeeds, as the CRI asks.
	if _, err := svc.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: spec}); err != nil {
		t.Errorf("second remove: %v", err)
	}
}
